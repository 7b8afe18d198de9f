"""A webhook's URL is checked again before every attempt, not only when it is registered: a sender whose
settings no longer allow the address refuses it (`url_forbidden`, retried later) and the receiver hears
nothing; once a sender allows it again, the same delivery goes. Real processes on PostgreSQL: `consent serve`
without a sender, `consent webhook-sender` apart."""

from __future__ import annotations

import os
from datetime import datetime

import httpx
from consent_client.webhooks import WebhookVerifier

from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS_ENV, empty_tables
from tests.integration.test_events_faults import free_port, ready, wait_until
from tests.integration.test_webhook_sender_process import catalog_and_webhook, start, stop
from tests.integration.webhook_receiver import Receiver

RETRY_SCHEDULE = "3,3,3,3,3,3,3,3"  # room to stop the refusing sender before the delivery's next attempt


def environment(database_url: str, allowed_hosts: str) -> dict[str, str]:
    # http:// stays allowed throughout: what changes is whether the loopback address may be reached.
    return {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": database_url, "CONSENT_ADMIN_KEYS": ADMIN_KEY,
            "CONSENT_WEBHOOK_SENDER": "off", "CONSENT_WEBHOOK_ALLOW_HTTP": "1",
            "CONSENT_WEBHOOK_ALLOWED_HOSTS": allowed_hosts, "CONSENT_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE}


async def test_a_sender_refuses_an_address_its_settings_forbid_even_though_registration_allowed_it(
        postgresql_url, tmp_path):
    await empty_tables(postgresql_url)
    receiver = Receiver().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    allowing = environment(postgresql_url, receiver.allowed)
    forbidding = environment(postgresql_url, "")
    server = start(["serve", "--host", "127.0.0.1", "--port", str(port)], allowing, tmp_path / "serve.log")
    sender = None
    try:
        await wait_until(lambda: ready(base), timeout=30, what="the service")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            webhook = await catalog_and_webhook(http, receiver)  # the server's settings allow the address
            granted = await http.post("/v1/subjects/u-1/consents", json={
                "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}]})
            assert granted.status_code == 200, granted.text
            event_id = granted.json()["receipts"][0]["event_id"]
            deliveries = f"/v1/partners/acme/webhooks/{webhook['id']}/deliveries"

            async def the_delivery() -> dict | None:
                found = (await http.get(deliveries)).json()["deliveries"]
                return found[0] if found else None

            async def attempted() -> bool:
                delivery = await the_delivery()
                return delivery is not None and delivery["attempts"] != []

            sender = start(["webhook-sender"], forbidding, tmp_path / "refusing-sender.log")
            await wait_until(attempted, timeout=20, what="an attempt by the sender that forbids the address")
            stop(sender)
            assert sender.returncode == 0
            refused = await the_delivery()
            assert refused["event_id"] == event_id and refused["status"] == "failed", refused
            assert {attempt.get("error") for attempt in refused["attempts"]} == {"url_forbidden"}, refused
            assert refused["next_attempt_at"] is not None
            last_attempt = datetime.fromisoformat(refused["attempts"][-1]["at"])
            assert datetime.fromisoformat(refused["next_attempt_at"]) > last_attempt  # to be tried again
            assert receiver.received == []  # refused before any connection

            sender = start(["webhook-sender"], allowing, tmp_path / "allowing-sender.log")

            async def delivered() -> bool:
                return (await the_delivery())["status"] == "delivered"
            await wait_until(delivered, timeout=20, what="the same delivery, by a sender that allows the address")
            done = await the_delivery()
            assert [attempt.get("error") for attempt in done["attempts"][:-1]] == [
                "url_forbidden"] * (len(done["attempts"]) - 1)
            assert done["attempts"][-1]["status"] == 200 and done["next_attempt_at"] is None
            (request,) = receiver.received
            assert request.headers["webhook-id"] == event_id
            WebhookVerifier(webhook["secret"]).verify(request.body, request.headers)
    finally:
        if sender is not None and sender.poll() is None:
            stop(sender)
        stop(server)
        receiver.stop()
