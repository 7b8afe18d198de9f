"""A partner asks before it uses a user's data, with the consent-client SDK (clients/python).

Run: CONSENT_URL=http://127.0.0.1:8000 CONSENT_CLIENT_ID=... CONSENT_CLIENT_SECRET=... \
     python examples/partner_decision.py user-42 marketing profile.email orders.history
Exit status 0 when every scope is permitted, 1 when some or all are denied, 2 on an error.
"""

from __future__ import annotations

import os
import sys

from consent_client import ConsentError, PartnerClient, ProblemError


def check(client: PartnerClient, subject_id: str, purpose: str, scopes: list[str]) -> int:
    try:
        decision = client.decide(subject_id, purpose, scopes)
    except ProblemError as problem:
        # Branch on the stable code; the detail is for the log.
        print(f"refused: {problem.code} ({problem.status}): {problem.detail}", file=sys.stderr)
        return 2
    except ConsentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for scope in decision.permitted:
        print(f"{scope}: permitted until {decision.retain_until:%Y-%m-%d %H:%M}Z")
    for denial in decision.denied:
        print(f"{denial.scope}: denied ({denial.reason})")
    # `position` is a consistency token: pass it as min_position to a later question (another replica
    # may answer it) to read at least this fresh.
    print(f"decision: {decision.decision} (as of log position {decision.position})")
    return 0 if decision.allowed else 1


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    subject_id, purpose, *scopes = argv
    with PartnerClient(os.environ.get("CONSENT_URL", "http://127.0.0.1:8000"), os.environ["CONSENT_CLIENT_ID"],
                       os.environ["CONSENT_CLIENT_SECRET"]) as client:
        return check(client, subject_id, purpose, scopes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
