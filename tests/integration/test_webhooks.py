"""Partners' webhooks (issue 13) on both databases, with a real HTTP receiver on loopback: signed deliveries
verified by the client SDK and by the reference `standardwebhooks` library, retries, a receiver down for a
while, order per subject, pairwise pseudonyms, secret rotation, 410, SSRF refusals, who may do what."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
import standardwebhooks
from consent_client.webhooks import WebhookVerifier
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN
from tests.integration.test_decisions_api import setup_catalog
from tests.integration.webhook_receiver import Receiver, eventually

FAST_RETRIES = ("0.2", "0.2", "0.2", "0.2", "0.2", "0.2", "0.2", "0.2")


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def webhook_settings(settings, receiver: Receiver, **changes):
    return msgspec.structs.replace(settings, webhook_allow_http=True, webhook_allowed_hosts=(receiver.allowed,),
                                   webhook_retry_schedule=FAST_RETRIES, **changes)


@pytest.fixture
async def hooked(settings, receiver):
    async with AsyncTestClient(create_app(webhook_settings(settings, receiver))) as client:
        await setup_catalog(client)
        yield client


async def register(client, url: str, partner: str = "acme", headers=ADMIN, **body) -> dict:
    answer = await client.post(f"/v1/partners/{partner}/webhooks", headers=headers, json={"url": url, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def change(client, subject: str, action: str, partner: str | None = "acme") -> dict:
    answer = await client.post(f"/v1/subjects/{subject}/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "partner": partner, "action": action}]})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def ledger(client, webhook: dict, partner: str = "acme", **query) -> list[dict]:
    answer = await client.get(f"/v1/partners/{partner}/webhooks/{webhook['id']}/deliveries", headers=ADMIN,
                              params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


async def until(client, condition, webhook: dict, timeout: float = 15.0) -> list[dict]:
    """The webhook's ledger once `condition` holds of it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition(entries := await ledger(client, webhook)):
        assert asyncio.get_running_loop().time() < deadline, entries
        await asyncio.sleep(0.05)
    return entries


def event_of(received) -> dict:
    return json.loads(received.body)


async def test_a_delivery_is_signed_and_verifies_with_the_sdk_and_the_reference_library(hooked, receiver):
    webhook = await register(hooked, receiver.url, description="delete our copy")
    assert webhook["secret"].startswith("whsec_") and webhook["enabled"] and webhook["events"] is None
    await change(hooked, "u-1", "grant")
    await change(hooked, "u-1", "withdraw")
    await eventually(lambda: len(receiver.ok()) == 2, what="two deliveries")

    types = []
    for received in receiver.ok():
        assert received.headers["content-type"] == "application/cloudevents+json"
        event = WebhookVerifier(webhook["secret"]).verify(received.body, received.headers)
        standardwebhooks.Webhook(webhook["secret"]).verify(received.body.decode(), received.headers)
        assert received.headers["webhook-id"] == event.id
        types.append(event.type)
        assert event_of(received)["subject"] == "u-1"
    assert types == ["io.consent.v1.subject.granted", "io.consent.v1.subject.withdrawn"]
    entries = await until(hooked, lambda entries: all(e["status"] == "delivered" for e in entries), webhook)
    assert [(e["type"], e["status"]) for e in entries] == [("subject.granted", "delivered"),
                                                           ("subject.withdrawn", "delivered")]
    assert entries[0]["attempts"][0]["status"] == 200 and entries[0]["next_attempt_at"] is None
    # Listing and reading never show the secret again.
    assert "secret" not in (await hooked.get("/v1/partners/acme/webhooks", headers=ADMIN)).json()[0]
    assert "secret" not in (await hooked.get(f"/v1/partners/acme/webhooks/{webhook['id']}", headers=ADMIN)).json()


async def test_retries_after_500s_then_success_under_the_same_webhook_id(hooked, receiver):
    webhook = await register(hooked, receiver.url)
    receiver.answers = [500, 503, 429]
    await change(hooked, "u-1", "grant")
    await eventually(lambda: len(receiver.ok()) == 1, what="the delivery after three refusals")
    assert [r.answered for r in receiver.received] == [500, 503, 429, 200]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    (entry,) = await until(hooked, lambda entries: entries[0]["status"] == "delivered", webhook)
    assert [a["status"] for a in entry["attempts"]] == [500, 503, 429, 200]
    metrics = (await hooked.get("/metrics", headers=ADMIN)).text
    assert 'consent_webhook_attempts_total{status="failed"} 3.0' in metrics
    assert 'consent_webhook_attempts_total{status="delivered"} 1.0' in metrics


async def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_up(hooked, receiver):
    webhook = await register(hooked, receiver.url)
    receiver.stop()
    for subject in ("u-1", "u-2", "u-3"):
        await change(hooked, subject, "grant")
    await change(hooked, "u-1", "withdraw")
    # Refused connections are recorded and retried; u-1's second event waits behind its first.
    await until(hooked, lambda entries: [e["status"] for e in entries] == ["failed", "failed", "failed", "pending"],
                webhook)
    receiver.start()
    await eventually(lambda: len(receiver.ok()) == 4, what="all four events")
    entries = await ledger(hooked, webhook)
    assert all(e["status"] == "delivered" for e in entries)
    assert {r.headers["webhook-id"] for r in receiver.ok()} == {e["event_id"] for e in entries}
    assert all(any("error" in a for a in e["attempts"]) for e in entries[:3])  # each was refused before


async def test_one_subject_in_order_while_others_go_on(hooked, receiver):
    await register(hooked, receiver.url)
    # The first event of u-1 is refused three times; u-2's do not wait for it.
    refusals = {"left": 3}

    def refuse_first_of_u1(body: bytes) -> int | None:
        event = json.loads(body)
        if event["subject"] == "u-1" and event["data"]["stream_version"] == 1 and refusals["left"]:
            refusals["left"] -= 1
            return 500
        return None

    receiver.answer_for = refuse_first_of_u1
    for action in ("grant", "withdraw", "grant", "withdraw"):
        await change(hooked, "u-1", action)
    await change(hooked, "u-2", "grant")
    await eventually(lambda: len(receiver.ok()) == 5, what="five deliveries")
    u1 = [event_of(r)["data"]["stream_version"] for r in receiver.ok() if event_of(r)["subject"] == "u-1"]
    assert u1 == [1, 2, 3, 4]
    first_u2 = next(i for i, r in enumerate(receiver.received) if event_of(r)["subject"] == "u-2")
    first_u1_ok = next(i for i, r in enumerate(receiver.received) if event_of(r)["subject"] == "u-1"
                       and r.answered == 200)
    assert first_u2 < first_u1_ok


async def test_filters_first_party_events_and_catalog_notices(hooked, receiver):
    await register(hooked, receiver.url, events=["subject.granted", "io.consent.v1.partner.suspended",
                                                 "purpose.revised"])
    await change(hooked, "u-1", "grant", partner=None)  # first-party, a purpose in acme's data uses
    await change(hooked, "u-1", "withdraw", partner=None)  # not asked for
    await change(hooked, "u-2", "grant", partner="globex")  # another partner's
    assert (await hooked.post("/v1/partners/acme/suspend", headers=ADMIN)).status_code == 200
    revised = await hooked.put("/v1/purposes/marketing", headers=ADMIN, json={
        "title": "Marketing", "description": "Offers, now by SMS too", "legal_basis": "consent",
        "retention": "P30D", "material_change": True})
    assert revised.status_code == 200
    await eventually(lambda: len(receiver.ok()) == 3, what="three deliveries")
    events = [event_of(r) for r in receiver.ok()]
    assert [e["type"] for e in events] == ["io.consent.v1.subject.granted", "io.consent.v1.partner.suspended",
                                           "io.consent.v1.purpose.revised"]
    assert events[0]["data"]["partner"] is None and events[2]["data"]["material"] is True


async def test_a_pairwise_partner_only_ever_sees_its_pseudonyms(hooked, receiver):
    assert (await hooked.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "acme", "status": "active", "data_uses": {"marketing": ["profile", "orders"]},
        "identifiers": "pairwise"})).status_code == 200
    await register(hooked, receiver.url)
    await change(hooked, "u-secret-1", "grant", partner="acme")
    await change(hooked, "u-secret-1", "grant", partner=None)
    assert (await hooked.post("/v1/subjects/u-secret-1/erase", headers=ADMIN)).status_code == 200
    await eventually(lambda: len(receiver.ok()) == 3, what="three deliveries")
    pseudonym = (await hooked.get("/v1/subjects/u-secret-1/pseudonyms/acme", headers=ADMIN)).json()["pseudonym"]
    for received in receiver.ok():
        assert b"u-secret-1" not in received.body
        event = event_of(received)
        assert event["subject"] == pseudonym and event["pseudonymous"] is True
    assert [event_of(r)["type"] for r in receiver.ok()][-1] == "io.consent.v1.subject.erased"


async def test_a_rotated_secret_signs_beside_the_new_one(hooked, receiver):
    webhook = await register(hooked, receiver.url)
    rotated = await hooked.post(f"/v1/partners/acme/webhooks/{webhook['id']}/rotate-secret", headers=ADMIN)
    assert rotated.status_code == 201, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != webhook["secret"] and rotated.json()["previous_secret_valid_until"]
    await change(hooked, "u-1", "grant")
    await eventually(lambda: len(receiver.ok()) == 1, what="a delivery")
    received = receiver.ok()[0]
    assert len(received.headers["webhook-signature"].split()) == 2
    for secret in (webhook["secret"], new_secret):
        WebhookVerifier(secret).verify(received.body, received.headers)
        standardwebhooks.Webhook(secret).verify(received.body.decode(), received.headers)


async def test_410_disables_the_webhook_and_retry_and_replay_deliver_again(hooked, receiver):
    webhook = await register(hooked, receiver.url)
    receiver.answers = [410]
    first = await change(hooked, "u-1", "grant")
    path = f"/v1/partners/acme/webhooks/{webhook['id']}"

    await until(hooked, lambda entries: entries and entries[0]["attempts"], webhook)
    for _ in range(100):
        if not (await hooked.get(path, headers=ADMIN)).json()["enabled"]:
            break
        await asyncio.sleep(0.05)
    assert not (await hooked.get(path, headers=ADMIN)).json()["enabled"]
    enabled = await hooked.patch(path, headers=ADMIN, json={"enabled": True})
    assert enabled.status_code == 200 and enabled.json()["enabled"]
    await eventually(lambda: len(receiver.ok()) == 1, what="the delivery once enabled again")
    (entry,) = await ledger(hooked, webhook)
    retried = await hooked.post(f"{path}/deliveries/{entry['id']}/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    await eventually(lambda: len(receiver.ok()) == 2, what="the retried delivery")
    replayed = await hooked.post(f"{path}/replay", headers=ADMIN, json={"after_position": first["position"] - 1})
    assert replayed.status_code == 200 and replayed.json()["enqueued"] == 1, replayed.text
    await eventually(lambda: len(receiver.ok()) == 3, what="the replayed delivery")
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    audit = (await hooked.get("/v1/audit", headers=ADMIN)).json()["events"]
    kinds = [e["type"] for e in audit if e["stream_id"] == f"webhook:{webhook['id']}"]
    assert kinds == ["webhook.registered", "webhook.updated", "webhook.requeued", "webhook.requeued"]
    assert webhook["secret"] not in json.dumps(audit)
    missing = await hooked.post(f"{path}/deliveries/999999/retry", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1/hooks",  # plain http, not allowed here
    "https://127.0.0.1/hooks", "https://10.1.2.3/hooks", "https://192.168.0.1/hooks", "https://169.254.169.254/x",
    "https://[::1]/hooks", "https://0.0.0.0/hooks", "https://224.0.0.1/hooks", "https://[::ffff:127.0.0.1]/x",
    "https://localhost/hooks", "https://user:pw@example.com/hooks", "ftp://example.com/hooks", "not a url",
])
async def test_ssrf_refusals(client, url):
    await setup_catalog(client)
    answer = await client.post("/v1/partners/acme/webhooks", headers=ADMIN, json={"url": url})
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "webhook_url_forbidden"
    assert answer.headers["content-type"].startswith("application/problem+json")


async def partner_token(client, partner: str, scopes: list[str]) -> dict[str, str]:
    credential = (await client.post(f"/v1/partners/{partner}/credentials", headers=ADMIN,
                                    json={"scopes": scopes})).json()
    issued = await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": credential["client_id"],
        "client_secret": credential["client_secret"]})
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}


async def test_a_partner_manages_its_own_webhooks_only(hooked, receiver):
    acme = await partner_token(hooked, "acme", ["webhooks:manage"])
    globex = await partner_token(hooked, "globex", ["webhooks:manage", "catalog:read"])
    reader = await partner_token(hooked, "acme", ["catalog:read"])
    mine = await register(hooked, receiver.url, headers=acme)
    theirs = await register(hooked, receiver.url, partner="globex", headers=globex)
    assert (await hooked.get("/v1/partners/acme/webhooks", headers=acme)).json()[0]["id"] == mine["id"]
    for method, path in (("GET", "/v1/partners/globex/webhooks"),
                         ("GET", f"/v1/partners/globex/webhooks/{theirs['id']}"),
                         ("DELETE", f"/v1/partners/globex/webhooks/{theirs['id']}"),
                         ("POST", f"/v1/partners/globex/webhooks/{theirs['id']}/rotate-secret")):
        refused = await hooked.request(method, path, headers=acme)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", (method, path)
    # Its own path, another partner's webhook: no such webhook there.
    assert (await hooked.get(f"/v1/partners/acme/webhooks/{theirs['id']}", headers=acme)).status_code == 404
    lacking = await hooked.get("/v1/partners/acme/webhooks", headers=reader)
    assert lacking.status_code == 403 and lacking.json()["code"] == "insufficient_scope"
    # A credential gets the opt-in scope only by asking: the default ones do not carry it.
    default = (await hooked.post("/v1/partners/acme/credentials", headers=ADMIN)).json()
    assert "webhooks:manage" not in default["scopes"]
    assert (await hooked.delete(f"/v1/partners/acme/webhooks/{mine['id']}", headers=acme)).status_code == 204
    audit = (await hooked.get("/v1/audit", headers=ADMIN)).json()["events"]
    actors = [(e["type"], e["actor"]) for e in audit if e["type"].startswith("webhook.")]
    assert actors == [("webhook.registered", "partner:acme"), ("webhook.registered", "partner:globex"),
                      ("webhook.deleted", "partner:acme")]
