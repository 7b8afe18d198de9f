"""Webhook senders in a process of their own (`consent webhook-sender`, and CONSENT_WEBHOOK_SENDER=process).

Inline, a sender's claims, POSTs and settlements share the HTTP server's event loop: with a webhook hearing
every write they take CPU from the writes themselves. Apart, the kernel schedules them beside the server.

The dispatcher stays in `consent serve` (it routes events with the catalog this process keeps current); the
ledger is the hand-over. A sender apart LISTENs on the channel that every enqueue and retry NOTIFYs
(consent/adapters/webhook_ledger.py), and looks at the ledger every second anyway (retries falling due).
Several may run, on any replicas: SKIP LOCKED gives each delivery to one.

`consent webhook-sender` reads its settings like every command, CONSENT_MASTER_KEY included (it opens the
webhooks' secrets). With `--report` it is a child of `consent serve` (consent/adapters/child_process.py): its
master keys come as one JSON line on standard input, not in its environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import msgspec
import sqlalchemy as sa

from consent.adapters.child_process import ChildProcess, child_env, report_until_stopped
from consent.adapters.database import SENDER_CONNECTIONS, Database, database_of
from consent.adapters.master_key import master_keys
from consent.adapters.memory_bus import InProcessBus
from consent.adapters.sql_webhooks import SqlWebhooks
from consent.adapters.webhook_ledger import SENDERS_CHANNEL, DeliveryLedger
from consent.adapters.webhook_sender import sender_of
from consent.app.background import BackgroundLoop
from consent.app.ports import SystemClock
from consent.app.webhooks import WebhookService
from consent.app.writing import Publisher
from consent.config import Settings

log = logging.getLogger("consent.webhooks")

CHECK_EVERY = 5.0  # seconds between checks that the listening connection is alive


async def run_webhook_sender(settings: Settings, report: bool = False) -> int:
    if settings.embedded:
        print("consent webhook-sender: needs CONSENT_DATABASE_URL on PostgreSQL", file=sys.stderr)
        return 2
    if report:
        settings = msgspec.structs.replace(settings, **_keys_from(sys.stdin.readline()))
    database = database_of(settings, apart=SENDER_CONNECTIONS)
    keys = master_keys(settings)
    endpoints = SqlWebhooks(database)
    # A 410 disables the webhook, recorded in its stream like any change; nobody in this process listens.
    gone = WebhookService(_EndpointsOnly(endpoints), lambda: None, SystemClock(), keys,  # type: ignore[arg-type]
                          Publisher(InProcessBus()), settings.credential_overlap)
    sender = sender_of(settings, DeliveryLedger(database), keys, gone.disable_gone)
    listener = Listener(database, sender.wake)
    await sender.start()
    await listener.start()
    try:
        await report_until_stopped(lambda: {"listening": listener.listening, "in_flight": sender.in_flight},
                                   report, "webhook sender")
    finally:
        await listener.stop()
        await sender.stop()
        await database.dispose()
    return 0


def _keys_from(line: str) -> dict[str, Any]:
    given = json.loads(line) if line.strip() else {}
    return {"master_key": given.get("master_key"), "master_keys_old": tuple(given.get("master_keys_old", ()))}


class _EndpointsOnly:
    """The one use case a sender process runs, WebhookService.disable_gone, reaches only the endpoints."""

    def __init__(self, endpoints: SqlWebhooks) -> None:
        self.endpoints = endpoints


class Listener(BackgroundLoop):
    """Wakes the sender at every NOTIFY on SENDERS_CHANNEL; reconnects when its connection is lost."""

    task_name = "consent-webhook-listener"

    def __init__(self, database: Database, wake) -> None:
        self._database = database
        self._wake = wake
        self.listening = False

    async def _run(self) -> None:
        while True:
            try:
                async with self._database.engine.connect() as conn:
                    try:
                        raw = (await conn.get_raw_connection()).driver_connection
                        await raw.add_listener(SENDERS_CHANNEL, lambda *_: self._wake())
                        self.listening = True
                        self._wake()  # what was enqueued while nobody listened
                        while True:
                            await asyncio.sleep(CHECK_EVERY)
                            await conn.execute(sa.text("SELECT 1"))
                            await conn.commit()
                    finally:
                        self.listening = False
                        await conn.invalidate()  # the listener belongs to the session
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - it must outlive database outages
                log.warning("webhook listener interrupted (%s); listening again", type(error).__name__)
            await asyncio.sleep(1.0)


def sender_env(settings: Settings) -> dict[str, str]:
    return child_env(settings, {
        "CONSENT_WEBHOOK_RETRY_SCHEDULE": ",".join(settings.webhook_retry_schedule),
        "CONSENT_WEBHOOK_ALLOW_HTTP": "1" if settings.webhook_allow_http else "0",
        "CONSENT_WEBHOOK_ALLOWED_HOSTS": ",".join(settings.webhook_allowed_hosts),
        "CONSENT_CREDENTIAL_OVERLAP": str(settings.credential_overlap)})


class WebhookSenderChild(ChildProcess):
    """Supervises a `consent webhook-sender --report` child."""

    task_name = "consent-webhook-sender-child"
    command = "webhook-sender"

    def __init__(self, settings: Settings) -> None:
        keys = {"master_key": settings.master_key, "master_keys_old": list(settings.master_keys_old)}
        super().__init__(sender_env(settings), json.dumps(keys).encode())
        self.listening = False
        self.in_flight = 0

    def wake(self) -> None:
        """Nothing to do: the child is woken by the NOTIFY of every enqueue."""

    def reported(self, state: dict[str, Any]) -> None:
        self.listening, self.in_flight = bool(state["listening"]), int(state["in_flight"])

    def exited(self) -> None:
        self.listening, self.in_flight = False, 0
