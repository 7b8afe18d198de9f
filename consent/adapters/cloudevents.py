"""Events as CloudEvents 1.0, structured JSON mode of the NATS protocol binding (docs/api.md, "Events")."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from consent.app.ports import RecordedEvent
from consent.domain.events import PERSONAL_FIELDS, event_data, event_type
from consent.domain.streams import parse_stream_id

TYPE_PREFIX = "io.consent.v1."
# Governance reads (`audit.*`) are for GET /v1/audit, not for subscribers, and so is the configuration of
# webhooks (`webhook.*`, a partner's own business): they stay in the log.
UNPUBLISHED = ("audit.", "webhook.")


def is_published(event_type: str) -> bool:
    return not event_type.startswith(UNPUBLISHED)
# Never published: personal data (kept in the log only, encrypted), and names.
PRIVATE_FIELDS = (*sorted(PERSONAL_FIELDS), "name")
# CloudEvents extension attribute, true when `subject` is a pairwise partner's pseudonym.
PSEUDONYMOUS = "pseudonymous"
_encode = msgspec.json.Encoder().encode


# Characters an id keeps in a NATS subject token; every other one is percent-encoded.
_NOT_TOKEN_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def subject_token(value: str) -> str:
    """One NATS subject token for an id, whatever characters it holds: each character outside
    `A-Z a-z 0-9 _ -` becomes `%XX` per UTF-8 byte (`profile.email` -> `profile%2Eemail`).

    A NATS token cannot hold `.` (the separator), whitespace, or `*`/`>` (wildcards); a dotted scope id
    written as is became several tokens, which `....scope.defined.*` did not match. `%` is escaped too,
    so the form is reversible by any URL decoder (`urllib.parse.unquote`), and `_` alone (no purpose,
    no partner) is never an id: ids start with a letter or digit."""
    return _NOT_TOKEN_SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def nats_subject(recorded: RecordedEvent, prefix: str = "consent.v1") -> str:
    """`consent.v1.subject.granted.<purpose or _>.<partner or _>`, `consent.v1.purpose.defined.<id>`, ...:
    every id one token (see `subject_token`)."""
    aggregate, kind = event_type(recorded.event).split(".", 1)
    if aggregate == "subject":
        purpose = getattr(recorded.event, "purpose", None)
        partner = getattr(recorded.event, "partner", None)
        return (f"{prefix}.subject.{kind}.{subject_token(purpose) if purpose else '_'}"
                f".{subject_token(partner) if partner else '_'}")
    return f"{prefix}.{aggregate}.{kind}.{subject_token(parse_stream_id(recorded.stream_id).id)}"


def cloudevent(recorded: RecordedEvent, source: str) -> dict[str, Any]:
    data = event_data(recorded.event)
    for field in PRIVATE_FIELDS:
        data.pop(field, None)
    data["position"] = recorded.position
    data["stream_version"] = recorded.stream_version
    cloud = {
        "specversion": "1.0",
        "id": str(recorded.event_id),
        "source": source,
        "type": TYPE_PREFIX + event_type(recorded.event),
        "time": recorded.event.occurred_at,
        "subject": parse_stream_id(recorded.stream_id).id,
        "datacontenttype": "application/json",
        "data": data,
    }
    if recorded.pseudonym is not None:
        # A pairwise partner's event: that partner's pseudonym, never the subject id (no field of
        # a subject event's data holds the subject id). The extension tells consumers, and the
        # replica feed, that `subject` is a pseudonym.
        cloud["subject"] = recorded.pseudonym
        cloud[PSEUDONYMOUS] = True
    return cloud


def encode(recorded: RecordedEvent, source: str) -> bytes:
    return _encode(cloudevent(recorded, source))
