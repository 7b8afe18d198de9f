"""Webhook delivery in a process of its own (`consent webhook-sender`, and CONSENT_WEBHOOK_SENDER=process): the
dispatcher that follows the log into the ledger, and the sender that POSTs from it.

Inline, both share the HTTP server's event loop: with a webhook hearing every write they take CPU from the
writes themselves. Apart, the kernel schedules them beside the server, which then only serves requests (the
webhook routes, replays included, write to the ledger themselves).

Without requests to serve, this process keeps no live catalog: it reads it at start and again before routing
a batch of events that holds a catalog event (the catalog's tables are written in that event's transaction).
Its sender is woken by its dispatcher, and by the NOTIFY that every retry and re-enabling sends
(consent/adapters/webhook_ledger.py); it looks at the ledger every second anyway (retries falling due).
Several may run, on any replicas: the dispatcher's lock picks one leader, SKIP LOCKED gives each delivery to
one sender.

`consent webhook-sender` reads its settings like every command, CONSENT_MASTER_KEY (the webhooks' secrets) and
CONSENT_PSEUDONYM_KEY (pairwise partners' pseudonyms) included. With `--report` it is a child of `consent serve`
(consent/adapters/child_process.py): those keys come as one JSON line on standard input, not in its environment.
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
from consent.adapters.database import SENDER_CONNECTIONS, SENDER_HELD, Database, database_of
from consent.adapters.master_key import master_keys
from consent.adapters.memory_bus import InProcessBus
from consent.adapters.sql_reads import load_catalog
from consent.adapters.sql_webhooks import SqlWebhooks
from consent.adapters.webhook_dispatch import Router, WebhookDispatcher
from consent.adapters.webhook_ledger import SENDERS_CHANNEL, DeliveryLedger
from consent.adapters.webhook_sender import sender_of
from consent.app.background import BackgroundLoop
from consent.app.ports import RecordedEvent, SystemClock
from consent.app.webhooks import WebhookService
from consent.app.writing import Publisher
from consent.config import Settings
from consent.domain.catalog import Catalog
from consent.domain.streams import CATALOG_STREAMS, stream_kind

log = logging.getLogger("consent.webhooks")

CHECK_EVERY = 5.0  # seconds between checks that the listening connection is alive


async def run_webhook_sender(settings: Settings, report: bool = False) -> int:
    if settings.embedded:
        print("consent webhook-sender: needs CONSENT_DATABASE_URL on PostgreSQL", file=sys.stderr)
        return 2
    if report:
        settings = msgspec.structs.replace(settings, **_keys_from(sys.stdin.readline()))
    database = database_of(settings, apart=SENDER_CONNECTIONS, held=SENDER_HELD)
    keys = master_keys(settings)
    catalog = CatalogCopy(database)
    endpoints, ledger = SqlWebhooks(database), DeliveryLedger(database)
    # A 410 disables the webhook, recorded in its stream like any change; nobody in this process listens.
    gone = WebhookService(_EndpointsOnly(endpoints), catalog, SystemClock(), keys,  # type: ignore[arg-type]
                          Publisher(InProcessBus()), settings.credential_overlap)
    sender = sender_of(settings, ledger, keys, gone.disable_gone)
    pseudonym_key = settings.pseudonym_key.encode() if settings.pseudonym_key is not None else None
    dispatcher = WebhookDispatcher(database, ledger, Router(catalog, settings.event_source, pseudonym_key),
                                   endpoints, sender.wake, catalog.follow)
    listener = Listener(database, sender.wake)
    parts = (sender, listener, dispatcher)
    await catalog.load()
    for part in parts:
        await part.start()
    try:
        await report_until_stopped(lambda: {"listening": listener.listening, "in_flight": sender.in_flight,
                                            "leader": dispatcher.is_leader, "position": dispatcher.position,
                                            "attempts": sender.attempts},
                                   report, "webhook sender")
    finally:
        for part in reversed(parts):
            await part.stop()
        await database.dispose()
    return 0


def _keys_from(line: str) -> dict[str, Any]:
    given = json.loads(line) if line.strip() else {}
    return {"master_key": given.get("master_key"), "master_keys_old": tuple(given.get("master_keys_old", ())),
            "pseudonym_key": given.get("pseudonym_key")}


class CatalogCopy:
    """The catalog for routing, read from its tables: at start, and before a batch that changes it."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._catalog = Catalog()

    def __call__(self) -> Catalog:
        return self._catalog

    async def load(self) -> None:
        async with self._database.reading() as conn:
            self._catalog, _ = await load_catalog(conn)

    async def follow(self, batch: list[RecordedEvent]) -> None:
        if any(stream_kind(recorded.stream_id) in CATALOG_STREAMS for recorded in batch):
            await self.load()


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
        "CONSENT_CREDENTIAL_OVERLAP": str(settings.credential_overlap), "CONSENT_EVENT_SOURCE": settings.event_source})


class WebhookSenderChild(ChildProcess):
    """Supervises a `consent webhook-sender --report` child."""

    task_name = "consent-webhook-sender-child"
    command = "webhook-sender"

    def __init__(self, settings: Settings) -> None:
        keys = {"master_key": settings.master_key, "master_keys_old": list(settings.master_keys_old),
                "pseudonym_key": settings.pseudonym_key}
        super().__init__(sender_env(settings), json.dumps(keys).encode())
        self.listening = self.is_leader = False
        self.in_flight = self.position = 0
        self._attempts: dict[str, int] = {}  # the running child's
        self._attempts_before: dict[str, int] = {}  # its predecessors': a counter never goes back

    @property
    def attempts(self) -> dict[str, int]:
        return {status: self._attempts_before.get(status, 0) + self._attempts.get(status, 0)
                for status in self._attempts_before.keys() | self._attempts.keys()}

    def wake(self) -> None:
        """Nothing to do: the child's dispatcher wakes its sender, NOTIFY does the rest."""

    def reported(self, state: dict[str, Any]) -> None:
        self.listening, self.in_flight = bool(state["listening"]), int(state["in_flight"])
        self.is_leader, self.position = bool(state["leader"]), int(state["position"])
        self._attempts = {str(status): int(count) for status, count in state["attempts"].items()}

    def exited(self) -> None:
        self.listening = self.is_leader = False
        self.in_flight = 0
        self._attempts_before, self._attempts = self.attempts, {}
