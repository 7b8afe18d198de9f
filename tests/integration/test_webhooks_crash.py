"""At least once, never lost (issue 13): a `consent serve` on PostgreSQL + NATS is killed (SIGKILL) while its
deliveries are being retried; once restarted it delivers every one, under the same `webhook-id`. Its log lines
and the NATS stream never carry the webhook's secret."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
from consent_client.webhooks import WebhookVerifier

from consent.adapters.webhook_sender import LEASE
from tests.conftest import ADMIN, ADMIN_KEY, NATS_URL, SHARED_KEYS_ENV, empty_tables
from tests.integration.test_events_faults import free_port, ready, wait_until
from tests.integration.test_events_nats import MARKETING, stream_messages
from tests.integration.webhook_receiver import Receiver


def serve(env: dict[str, str], port: int, log_path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it after this returns
    return subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


async def test_a_delivery_survives_sigkill_mid_retry(postgresql_url, nats_names, tmp_path):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    receiver = Receiver().start()
    receiver.answer_for = lambda _body: 500  # failing until the service is killed
    port = free_port()
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": postgresql_url, "CONSENT_NATS_URL": NATS_URL,
           "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix,
           "CONSENT_WEBHOOK_ALLOW_HTTP": "1", "CONSENT_WEBHOOK_ALLOWED_HOSTS": receiver.allowed,
           "CONSENT_WEBHOOK_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1,1,1,1,1", "CONSENT_LOG_FORMAT": "json"}
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    server = serve(env, port, log_path)
    try:
        await wait_until(lambda: ready(base), timeout=30, what="the service")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            await http.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
            await http.put("/v1/purposes/marketing", json=MARKETING)
            await http.put("/v1/partners/acme", json={"name": "Acme", "status": "active",
                                                      "data_uses": {"marketing": ["orders"]}})
            webhook = (await http.post("/v1/partners/acme/webhooks", json={"url": receiver.url})).json()
            event_ids = set()
            for subject in ("u-1", "u-2", "u-3"):
                answer = await http.post(f"/v1/subjects/{subject}/consents", json={
                    "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}]})
                assert answer.status_code == 200, answer.text
            history = [(await http.get(f"/v1/subjects/{s}/history")).json() for s in ("u-1", "u-2", "u-3")]
            event_ids = {event["event_id"] for h in history for event in h["events"]}

        async def retried() -> bool:
            return len(receiver.received) >= 6  # every event refused at least twice
        await wait_until(retried, timeout=20, what="retries")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        receiver.answer_for = None  # healthy from now on

        server = serve(env, port, log_path)
        await wait_until(lambda: ready(base), timeout=30, what="the restarted service")

        async def all_delivered() -> bool:
            return {r.headers["webhook-id"] for r in receiver.ok()} == event_ids
        # An attempt the SIGKILL cut off is left alone until its lease runs out (the killed process might still
        # have been sending it): up to LEASE, then the restarted service claims it.
        await wait_until(all_delivered, timeout=LEASE.total_seconds() + 20, what="every event delivered after the "
                         "restart")
        for received in receiver.received:  # refused or not, every attempt carried the event id
            assert received.headers["webhook-id"] in event_ids
            WebhookVerifier(webhook["secret"]).verify(received.body, received.headers)
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            ledger = (await http.get(f"/v1/partners/acme/webhooks/{webhook['id']}/deliveries")).json()["deliveries"]
        assert sorted(e["status"] for e in ledger) == ["delivered"] * 3
        assert all(e["attempts"][-1]["status"] == 200 and e["attempts"][0]["status"] == 500 for e in ledger)
        messages = await stream_messages(stream, prefix, expected=6)
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.wait, 15)
        receiver.stop()
    secret = webhook["secret"]
    key = secret.removeprefix("whsec_")
    assert messages and not any(key in m.data.decode() or "webhook." in m.subject for m in messages)
    lines = log_path.read_text()
    assert lines and key not in lines and secret not in lines
    assert all(json.loads(line) for line in lines.splitlines() if line.startswith("{"))
