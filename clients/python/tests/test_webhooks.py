"""Webhook verification against the reference library, `standardwebhooks`, both ways; the body is a CloudEvent
made by the service's own encoder (consent/adapters/cloudevents.py), as its webhook sender will publish it."""

from __future__ import annotations

import base64
import os
import time
import uuid
from datetime import UTC, datetime

import pytest
import standardwebhooks
from consent_client import CloudEvent, InvalidEvent, WebhookVerificationError, WebhookVerifier, sign

from consent.adapters.cloudevents import encode
from consent.app.ports import RecordedEvent
from consent.domain.events import ConsentGranted, Evidence


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


SECRET, OLD_SECRET = new_secret(), new_secret()
OCCURRED = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def granted_body() -> bytes:
    event = ConsentGranted(occurred_at=OCCURRED, purpose="marketing", partner="acme", scopes=("profile.email",),
                           purpose_version=2, source="web", expires_at=datetime(2026, 6, 1, tzinfo=UTC),
                           evidence=Evidence(collection_point="signup", text_shown="Acme may email you"))
    recorded = RecordedEvent(event_id=uuid.uuid4(), stream_id="subject:user-42", stream_version=3, position=17,
                             event=event, recorded_at=OCCURRED)
    return encode(recorded, "/consent")


def reference_headers(secret: str, body: bytes, webhook_id: str = "msg_1", at: float | None = None) -> dict:
    """Headers as the reference library's sender makes them."""
    timestamp = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(webhook_id, timestamp, body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature}


def test_a_reference_signature_verifies_and_the_cloudevent_is_parsed():
    body = granted_body()
    event = WebhookVerifier(SECRET).verify(body, reference_headers(SECRET, body))

    assert isinstance(event, CloudEvent)
    assert (event.specversion, event.type, event.kind) == ("1.0", "io.consent.v1.subject.granted", "subject.granted")
    assert (event.source, event.subject, event.time) == ("/consent", "user-42", OCCURRED)
    assert (event.position, event.stream_version, event.pseudonymous) == (17, 3, False)
    assert "evidence" not in event.data  # personal data is never published
    change = event.consent_change()
    assert (change.purpose, change.partner, change.scopes, change.purpose_version) == (
        "marketing", "acme", ["profile.email"], 2)
    assert change.expires_at == datetime(2026, 6, 1, tzinfo=UTC) and change.source == "web"


def test_our_signature_verifies_with_the_reference_library():
    body = granted_body()
    headers = sign(SECRET, "msg_2", body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers)["data"]["purpose"] == "marketing"
    # And a tampered copy fails there too: we sign the bytes, not a re-serialisation.
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body.replace(b"acme", b"evil"), headers)


def test_a_wrong_secret_fails():
    body = granted_body()
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        WebhookVerifier(OLD_SECRET).verify(body, reference_headers(SECRET, body))


def test_a_tampered_body_or_id_or_timestamp_fails():
    body = granted_body()
    headers = reference_headers(SECRET, body)
    verifier = WebhookVerifier(SECRET)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b'"marketing"', b'"analytics"'), headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, {**headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)})


def test_timestamps_outside_the_tolerance_fail_either_way():
    body = granted_body()
    now = time.time()
    verifier = WebhookVerifier(SECRET)
    assert verifier.verify(body, reference_headers(SECRET, body, at=now - 290)).id
    assert verifier.verify(body, reference_headers(SECRET, body, at=now + 290)).id
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(body, reference_headers(SECRET, body, at=now - 310))
    with pytest.raises(WebhookVerificationError, match="future"):
        verifier.verify(body, reference_headers(SECRET, body, at=now + 310))
    # A tolerance of one's own; the clock is injectable for the same reason.
    with pytest.raises(WebhookVerificationError, match="too old"):
        WebhookVerifier(SECRET, tolerance=30).verify(body, reference_headers(SECRET, body, at=now - 60))
    assert WebhookVerifier(SECRET, clock=lambda: now - 600).verify(
        body, reference_headers(SECRET, body, at=now - 600)).id
    with pytest.raises(WebhookVerificationError, match="number"):
        verifier.verify(body, {**reference_headers(SECRET, body), "webhook-timestamp": "1e9"})


def test_during_rotation_either_signature_passes():
    body = granted_body()
    # The sender signs with the old and the new secret; a receiver holding either one accepts.
    both = sign([OLD_SECRET, SECRET], "msg_3", body)
    assert len(both["webhook-signature"].split(" ")) == 2
    assert WebhookVerifier(SECRET).verify(body, both).id
    assert WebhookVerifier(OLD_SECRET).verify(body, both).id
    assert standardwebhooks.Webhook(SECRET).verify(body, both)
    assert standardwebhooks.Webhook(OLD_SECRET).verify(body, both)
    with pytest.raises(WebhookVerificationError):
        WebhookVerifier(new_secret()).verify(body, both)

    # The reference sender's two signatures joined, as a sender that rotates would send them.
    old, new = reference_headers(OLD_SECRET, body), reference_headers(SECRET, body)
    joined = {**new, "webhook-signature": f"{old['webhook-signature']} {new['webhook-signature']}"}
    assert WebhookVerifier(SECRET).verify(body, joined).id
    # A receiver may hold both secrets too, while it moves from one to the other.
    assert WebhookVerifier([new_secret(), OLD_SECRET]).verify(body, old).id


def test_unknown_versions_and_malformed_entries_are_skipped_not_trusted():
    body = granted_body()
    good = reference_headers(SECRET, body)
    valid = good["webhook-signature"].removeprefix("v1,")
    verifier = WebhookVerifier(SECRET)
    assert verifier.verify(body, {**good, "webhook-signature": f"v1a,{valid} v1,%%% v1,{valid}"}).id
    with pytest.raises(WebhookVerificationError):  # the right bytes under another scheme's name
        verifier.verify(body, {**good, "webhook-signature": f"v1a,{valid} v2,{valid}"})


def test_missing_headers_fail_and_header_names_are_case_insensitive():
    body = granted_body()
    headers = reference_headers(SECRET, body)
    verifier = WebhookVerifier(SECRET)
    for name in headers:
        with pytest.raises(WebhookVerificationError, match=f"missing {name}"):
            verifier.verify(body, {k: v for k, v in headers.items() if k != name})
    assert verifier.verify(body, {k.title(): v for k, v in headers.items()}).id


def test_an_authentic_body_that_is_no_cloudevent_is_refused():
    body = b'{"hello": "world"}'
    with pytest.raises(InvalidEvent):
        WebhookVerifier(SECRET).verify(body, sign(SECRET, "msg_4", body))


def test_secrets_are_checked_when_the_verifier_is_made():
    unpadded = SECRET.rstrip("=")
    body = granted_body()
    assert WebhookVerifier(unpadded).verify(body, reference_headers(SECRET, body)).id
    for bad in ("whsec_", "whsec_not base64!", []):
        with pytest.raises(ValueError):
            WebhookVerifier(bad)
