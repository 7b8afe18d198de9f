"""No personal data where it does not belong (issue 7): canaries planted in a full flow must not surface.

A canary subject (known to its partner only by a pairwise pseudonym), a canary email, IP address, user agent
and note in the evidence, and the canary credentials and tokens themselves go through every feature; then every
log line, every NATS message and the metrics are searched. The subject id may appear on NATS only where the
contract addresses the subject itself (first-party events: here the erasure), never with the pairwise partner.
"""

from __future__ import annotations

import logging

import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.config import Settings
from consent.logs import ACCESS_LOGGER, JsonFormatter
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    MASTER_KEY,
    NATS_URL,
    SHARED_KEYS,
    USER_TOKEN_SECRET,
    empty_tables,
    recording,
    user_headers,
)
from tests.integration.test_events_nats import stream_messages
from tests.integration.webhook_receiver import Receiver, eventually

SUBJECT = "canary-subject-3b9e1f"
EMAIL, IP, AGENT, NOTE = "canary.person@example.org", "203.0.113.77", "CanaryAgent/9.1", "canary-note-51c2"
PSEUDONYM_KEY = "canary-test-pseudonym-key-0123456789abcdef"
# The test's own HTTP client logs the URLs it requests: the caller's log, not the service's
# (`consent serve` runs uvicorn without an access log, which would show subject ids in paths).
CALLER_LOGGERS = ("httpx", "httpcore")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CALLER_LOGGERS):
            return
        self.lines.append(logging.Formatter("%(name)s %(levelname)s %(message)s %(exc_text)s").format(record))
        self.lines.append(JsonFormatter().format(record))  # as `consent serve` writes it, request id and all


@pytest.fixture
def log_lines():
    with recording(_Lines()) as lines:
        yield lines


async def test_canaries_stay_out_of_logs_events_and_metrics(postgresql_url, nats_names, log_lines):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    receiver = Receiver().start()  # the pairwise partner's webhook (issue 13)
    settings = Settings(database_url=postgresql_url, nats_url=NATS_URL, admin_keys=(ADMIN_KEY,),
                        user_token_secret=USER_TOKEN_SECRET, nats_stream=stream, nats_subject_prefix=prefix,
                        webhook_allow_http=True, webhook_allowed_hosts=(receiver.allowed,),
                        **{**SHARED_KEYS, "pseudonym_key": PSEUDONYM_KEY})
    user = user_headers(SUBJECT)
    async with AsyncTestClient(create_app(settings)) as client:
        await client.put("/v1/scopes/orders", headers=ADMIN, json={"title": "O", "description": "",
                                                                   "sensitivity": "high"})
        await client.put("/v1/purposes/marketing", headers=ADMIN, json={
            "title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"})
        assert (await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "Acme", "status": "active", "data_uses": {"marketing": ["orders"]},
            "identifiers": "pairwise"})).status_code == 201
        webhook = (await client.post("/v1/partners/acme/webhooks", headers=ADMIN, json={"url": receiver.url})).json()
        rotated = (await client.post(f"/v1/partners/acme/webhooks/{webhook['id']}/rotate-secret",
                                     headers=ADMIN)).json()

        # The subject grants to the pairwise partner, with personal evidence.
        granted = await client.post(f"/v1/subjects/{SUBJECT}/consents", headers=user, json={
            "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}], "source": "web",
            "evidence": {"collection_point": "signup", "text_shown": f"Sent to {EMAIL}", "user_note": NOTE,
                         "ip_address": IP, "user_agent": AGENT}})
        assert granted.status_code == 200, granted.text
        pseudonym = (await client.get(f"/v1/subjects/{SUBJECT}/pseudonyms/acme", headers=user)).json()["pseudonym"]

        # The partner: credential, token, decisions and permissions by pseudonym, then revocation.
        credential = (await client.post("/v1/partners/acme/credentials", headers=ADMIN)).json()
        issued = (await client.post("/v1/oauth/token", data={
            "grant_type": "client_credentials", "client_id": credential["client_id"],
            "client_secret": credential["client_secret"]})).json()
        partner = {"Authorization": f"Bearer {issued['access_token']}"}
        question = {"subject_id": pseudonym, "purpose": "marketing", "scopes": ["orders"]}
        decided = await client.post("/v1/decisions", headers=partner, json=question)
        assert decided.json()["decision"] == "permit"
        assert SUBJECT not in decided.text
        batch = await client.post("/v1/decisions/batch", headers=partner, json={"items": [question]})
        assert SUBJECT not in batch.text
        assert SUBJECT not in (await client.get(f"/v1/subjects/{pseudonym}/permissions", headers=partner)).text
        await client.post("/v1/oauth/revoke", data={"client_id": credential["client_id"],
                                                   "client_secret": credential["client_secret"],
                                                   "token": issued["access_token"]})
        assert (await client.post("/v1/decisions", headers=partner, json=question)).status_code == 401

        # The subject and an admin read, export and audit; a bad request that quotes the canaries; the erasure.
        history = (await client.get(f"/v1/subjects/{SUBJECT}/history", headers=user)).text
        assert EMAIL in history and IP in history  # the subject sees its own evidence
        assert (await client.get(f"/v1/subjects/{SUBJECT}/history", headers=ADMIN)).status_code == 200
        assert (await client.get(f"/v1/subjects/{SUBJECT}/export", headers=user)).status_code == 200
        assert (await client.get("/v1/audit", headers=ADMIN)).status_code == 200
        # The subject's privacy center: link, page, a save, a receipt, the export (its code and cookie are secrets).
        link = (await client.post(f"/v1/subjects/{SUBJECT}/privacy-center/sessions", headers=user)).json()["url"]
        entered = await client.get(link, follow_redirects=False)
        session_token = entered.cookies["consent_privacy_center"]
        page = await client.get("/privacy-center")
        assert page.status_code == 200 and SUBJECT not in page.text
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        saved = await client.post("/privacy-center", data={"csrf": csrf, "shown": "marketing:acme"},  # switched off
                                  follow_redirects=False)
        assert saved.status_code == 303
        event_id = (await client.get("/privacy-center")).text.split('data-event-id="')[1].split('"')[0]
        assert (await client.get(f"/privacy-center/receipts/{event_id}")).status_code == 200
        assert (await client.get("/privacy-center/export")).status_code == 200
        client.cookies.clear()
        refused = await client.post(f"/v1/subjects/{SUBJECT}/consents", headers=user, json={
            "changes": [{"purpose": EMAIL, "action": "grant"}], "evidence": {"ip_address": IP}})
        assert refused.status_code == 422
        assert (await client.post(f"/v1/subjects/{SUBJECT}/erase", headers=user)).status_code == 200
        after = (await client.get(f"/v1/subjects/{SUBJECT}/history", headers=user)).text
        assert EMAIL not in after and IP not in after and "[erased]" in after

        metrics = (await client.get("/metrics")).text
        messages = await stream_messages(stream, prefix, expected=6)
        await eventually(lambda: any(b"subject.erased" in r.body for r in receiver.ok()), what="the erasure")
        receiver.stop()

    secrets = (credential["client_secret"], issued["access_token"], user["Authorization"].split()[1],
               ADMIN_KEY, MASTER_KEY, PSEUDONYM_KEY, link.rsplit("/", 1)[1], session_token,
               webhook["secret"].removeprefix("whsec_"), rotated["secret"].removeprefix("whsec_"))
    personal = (SUBJECT, EMAIL, IP, AGENT, NOTE)

    # The pseudonym was a path parameter (its permissions): no log line names it either.
    leaking = [line for line in log_lines if any(canary in line for canary in (*personal, *secrets, pseudonym))]
    assert log_lines and not leaking, leaking[:3]
    access = " ".join(line for line in log_lines if line.startswith(ACCESS_LOGGER))
    assert "/v1/subjects/{subject_id}/permissions" in access and "/v1/subjects/{subject_id}/erase" in access
    assert "/privacy-center/enter/{code}" in access and "/privacy-center/receipts/{event_id}" in access
    assert not any(canary in metrics for canary in (*personal, *secrets, pseudonym))
    assert 'consent_partner_decisions_total{outcome="permit",partner="acme"} 2.0' in metrics  # the batch's too
    assert 'route="/v1/subjects/{subject_id}/history"' in metrics

    by_type = {message.subject.removeprefix(prefix + "."): message.data.decode() for message in messages}
    assert set(by_type) >= {"subject.granted.marketing.acme", "subject.withdrawn.marketing.acme", "subject.erased._._"}
    for subject, payload in by_type.items():
        assert not any(canary in payload for canary in (EMAIL, IP, AGENT, NOTE, *secrets)), subject
        # The subject's own id only where the contract addresses the subject itself, never with the partner.
        assert (SUBJECT in payload) == (subject == "subject.erased._._"), subject
    assert pseudonym in by_type["subject.granted.marketing.acme"]
    # The pairwise partner's webhook: its pseudonym only, nothing personal, no secret (the signature is an HMAC).
    bodies = [r.body.decode() for r in receiver.ok()]
    assert bodies and all(pseudonym in body for body in bodies if "io.consent.v1.subject." in body)
    assert not any(canary in body for body in bodies for canary in (*personal, *secrets))
