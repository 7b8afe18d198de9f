"""Webhook senders apart from the HTTP server (issue 13): CONSENT_WEBHOOK_SENDER=process (a child that
`consent serve` supervises) and off (`consent webhook-sender` run apart), on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from consent_client.webhooks import WebhookVerifier
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import events
from consent.config import Settings, SettingsError
from consent.domain.pseudonyms import pseudonym
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS_ENV, empty_tables
from tests.integration.test_events_faults import free_port, ready, wait_until
from tests.integration.test_events_nats import MARKETING
from tests.integration.webhook_receiver import Receiver


def environment(database_url: str, receiver: Receiver, sender: str) -> dict[str, str]:
    return {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": database_url, "CONSENT_ADMIN_KEYS": ADMIN_KEY,
            "CONSENT_WEBHOOK_ALLOW_HTTP": "1", "CONSENT_WEBHOOK_ALLOWED_HOSTS": receiver.allowed,
            "CONSENT_WEBHOOK_RETRY_SCHEDULE": "1,1,1", "CONSENT_WEBHOOK_SENDER": sender,
            "CONSENT_LOG_FORMAT": "json"}


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "consent.cli", *command], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


URL_TOKEN = "canary-url-token-7f3e0c"  # a partner's own token in its webhook's query: never in a log line


async def catalog_and_webhook(http: httpx.AsyncClient, receiver: Receiver, identifiers: str = "public") -> dict:
    for path, body in (("/v1/scopes/orders", {"title": "O", "description": "", "sensitivity": "low"}),
                       ("/v1/purposes/marketing", MARKETING),
                       ("/v1/partners/acme", {"name": "Acme", "status": "active", "identifiers": identifiers,
                                              "data_uses": {"marketing": ["orders"]}})):
        assert (await http.put(path, json=body)).status_code == 201
    answer = await http.post("/v1/partners/acme/webhooks", json={"url": f"{receiver.url}?token={URL_TOKEN}"})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def grant(http: httpx.AsyncClient, subject: str) -> str:
    answer = await http.post(f"/v1/subjects/{subject}/consents", json={
        "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["receipts"][0]["event_id"]


def delivered(receiver: Receiver) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.ok()}


async def test_a_child_process_delivers_signed_restarts_after_sigkill_and_disables_on_410(postgresql_url, tmp_path):
    await empty_tables(postgresql_url)
    receiver = Receiver().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    server = start(["serve", "--host", "127.0.0.1", "--port", str(port)],
                   environment(postgresql_url, receiver, "process"), log_path)
    try:
        await wait_until(lambda: ready(base), timeout=30, what="the service")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            webhook = await catalog_and_webhook(http, receiver, identifiers="pairwise")
            first = {await grant(http, f"u-{n}") for n in range(3)}
            await wait_until(lambda: _async(delivered(receiver) == first), timeout=15, what="the first deliveries")
            for received in receiver.received:  # signed with the secret the child opened with the master key
                WebhookVerifier(webhook["secret"]).verify(received.body, received.headers)
            # Routed by the child, with the pseudonym key it was handed: the partner sees its pseudonyms only.
            key = SHARED_KEYS_ENV["CONSENT_PSEUDONYM_KEY"].encode()
            bodies = [json.loads(r.body) for r in receiver.received]
            assert sorted(b["subject"] for b in bodies) == sorted(
                pseudonym(key, "acme", f"u-{n}") for n in range(3))

            async def child_state() -> dict:
                return (await http.get("/health/ready")).json()["webhook_sender"]

            async def child_reported() -> bool:  # its state lines come every half second
                state = await child_state()
                return state["listening"] and state["dispatcher_leader"] and state["dispatched_position"] > 0
            await wait_until(child_reported, timeout=5, what="the child's report")
            child = await child_state()
            assert child["mode"] == "process" and child["starts"] == 1 and child["pid"] not in (None, server.pid)
            environ = Path(f"/proc/{child['pid']}/environ").read_bytes().split(b"\0")
            assert not [v for v in environ if v.startswith((b"CONSENT_MASTER_KEY", b"CONSENT_ADMIN_KEYS"))]

            await wait_until(lambda: attempts_counted(http, delivered=3), timeout=5, what="the child's count")
            os.kill(child["pid"], signal.SIGKILL)
            second = {await grant(http, f"v-{n}") for n in range(3)}  # while the child is dead or restarting
            await wait_until(lambda: _async(delivered(receiver) == first | second), timeout=20,
                             what="deliveries after the child's restart")
            restarted = (await http.get("/health/ready")).json()["webhook_sender"]
            assert restarted["starts"] == 2 and restarted["pid"] != child["pid"]

            receiver.answers = [410]
            gone = await grant(http, "w-1")
            await wait_until(lambda: _async(any(r.answered == 410 for r in receiver.received)), timeout=15,
                             what="the 410")

            async def disabled() -> bool:
                return (await http.get(f"/v1/partners/acme/webhooks/{webhook['id']}")).json()["enabled"] is False
            await wait_until(disabled, timeout=10, what="the webhook disabled by the child")
            # Counted across both children: the parent's counter does not go back when one dies.
            await wait_until(lambda: attempts_counted(http, delivered=6, failed=1), timeout=5, what="the count")
            assert await stream_types(postgresql_url, f"webhook:{webhook['id']}") == [
                ("webhook.registered", "admin:"), ("webhook.disabled", "system")]
            assert gone not in delivered(receiver)
    finally:
        stop(server)
        receiver.stop()
    lines = log_path.read_text()  # the server's and its child's
    assert '"logger":"consent.children"' in lines  # the SIGKILLed child, noted in the server's JSON format
    for secret in ("whsec_", SHARED_KEYS_ENV["CONSENT_MASTER_KEY"], URL_TOKEN):
        assert secret not in lines


async def test_senders_apart_deliver_only_while_one_runs(postgresql_url, tmp_path):
    await empty_tables(postgresql_url)
    receiver = Receiver().start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(postgresql_url, receiver, "off")
    server = start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "serve.log")
    sender = None
    try:
        await wait_until(lambda: ready(base), timeout=30, what="the service")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            webhook = await catalog_and_webhook(http, receiver)
            waiting = {await grant(http, f"u-{n}") for n in range(2)}
            await asyncio.sleep(1.5)  # the server neither dispatches nor sends: the ledger stays empty
            path = f"/v1/partners/acme/webhooks/{webhook['id']}/deliveries"
            assert (await http.get(path)).json()["deliveries"] == [] and receiver.received == []

            sender = start(["webhook-sender"], env, tmp_path / "sender.log")
            await wait_until(lambda: _async(delivered(receiver) == waiting), timeout=20,
                             what="the waiting deliveries sent by `consent webhook-sender`")
            later = await grant(http, "u-9")
            await wait_until(lambda: _async(later in delivered(receiver)), timeout=5, what="a later delivery")
    finally:
        if sender is not None:
            stop(sender)
        stop(server)
        receiver.stop()
    assert sender is not None and sender.returncode == 0


def test_senders_apart_need_postgresql():
    with pytest.raises(SettingsError, match="CONSENT_WEBHOOK_SENDER"):
        Settings(webhook_sender="process")


async def attempts_counted(http: httpx.AsyncClient, **expected: int) -> bool:
    metrics = (await http.get("/metrics")).text
    return all(f'consent_webhook_attempts_total{{status="{status}"}} {count}.0' in metrics
               for status, count in expected.items())


async def stream_types(database_url: str, stream_id: str) -> list[tuple[str, str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(events.c.type, events.c.metadata["actor"].as_string()).where(
                events.c.stream_id == stream_id).order_by(events.c.position))
            return [(kind, actor if actor == "system" else actor.split(":")[0] + ":") for kind, actor in rows]
    finally:
        await engine.dispose()


async def _async(value: object) -> object:
    return value
