"""The webhook dispatcher: follows the log after its cursor and writes a delivery for each webhook an event
reaches (consent/domain/webhook_audience.py), with the cursor, in one transaction: a delivery is durable
before it is attempted, and a crash between two batches neither loses nor repeats one.

One process dispatches at a time, chosen by a PostgreSQL advisory lock held on a dedicated connection, and
woken by the NOTIFY of every commit (like the NATS relay, consent/adapters/nats_relay.py); on the embedded
SQLite default, by the in-process bus. The senders (consent/adapters/webhook_sender.py) do the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.cloudevents import encode
from consent.adapters.database import Database
from consent.adapters.log_tail import load_cursor, read_after, save_cursor
from consent.adapters.tables import events, pseudonyms
from consent.adapters.webhook_ledger import DeliveryLedger, enqueue, grants_before
from consent.app.background import BackgroundLoop
from consent.app.ports import RecordedEvent
from consent.domain.catalog import Catalog
from consent.domain.events import SubjectErased, event_type
from consent.domain.pseudonyms import pseudonym
from consent.domain.streams import PARTNER, SUBJECT_PREFIX, stream_of
from consent.domain.webhook_audience import audience, wants

log = logging.getLogger("consent.webhooks")

CURSOR = "webhooks"  # its row in relay_checkpoints
LOCK_KEY = 0x776562686F6F6B  # "webhook"
BATCH = 500
IDLE_CHECK = 1.0  # seconds between looks at the log without a wake-up, and between lock connection checks
# The embedded default has no NOTIFY, and the composition root's table of who hears commits (event_reach) does
# not list the dispatcher: with webhooks, it looks at the SQLite log this often (two indexed reads of a file).
SQLITE_POLL = 0.1
GATHER = 0.005  # seconds a wake-up waits for the rest of its burst of commits

_SAFE_HEAD_POSTGRES = sa.text("""
    SELECT transaction_id::text::bigint AS transaction_id, position FROM events
    WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY transaction_id DESC, position DESC LIMIT 1""")


class Router:
    """The deliveries a batch of events makes for the given webhooks, and the pseudonym mappings they need."""

    def __init__(self, catalog: Callable[[], Catalog], source: str, pseudonym_key: bytes | None) -> None:
        self._catalog = catalog
        self._source = source
        self._pseudonym_key = pseudonym_key

    async def route(self, conn: AsyncConnection, batch: Iterable[RecordedEvent], endpoints: Iterable[Any],
                    now: datetime, replay: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """A webhook hears what was committed from its registration on; a replay, anything it asks for."""
        by_partner: dict[str, list[Any]] = defaultdict(list)
        for endpoint in endpoints:
            by_partner[endpoint.partner_id].append(endpoint)
        deliveries: list[dict[str, Any]] = []
        mappings: list[dict[str, str]] = []
        if not by_partner:
            return deliveries, mappings
        catalog = self._catalog()
        for recorded in batch:
            granted = (await grants_before(conn, recorded.stream_id, recorded.position)
                       if isinstance(recorded.event, SubjectErased) else ())
            for partner_id in sorted(audience(recorded.event, catalog, granted) & by_partner.keys()):
                wanting = [e for e in by_partner[partner_id] if wants(e.events, recorded.event)
                           and (replay or recorded.recorded_at >= e.created_at)]
                body = self._body(recorded, catalog, partner_id, mappings) if wanting else None
                if body is None:
                    continue
                is_subject = recorded.stream_id.startswith(SUBJECT_PREFIX)
                for endpoint in wanting:
                    deliveries.append({
                        "webhook_id": endpoint.id, "event_id": recorded.event_id, "position": recorded.position,
                        "ordering_key": recorded.stream_id if is_subject else stream_of(PARTNER, partner_id),
                        "type": event_type(recorded.event), "body": body, "status": "pending", "attempts": [],
                        "next_attempt_at": now, "created_at": now})
        return deliveries, mappings

    def _body(self, recorded: RecordedEvent, catalog: Catalog, partner_id: str,
              mappings: list[dict[str, str]]) -> bytes | None:
        """The CloudEvent as this partner may see it: a pairwise partner only ever sees its own pseudonyms."""
        if not recorded.stream_id.startswith(SUBJECT_PREFIX):
            return encode(recorded, self._source)
        partner = catalog.partners[partner_id]
        if partner.identifiers != "pairwise":
            return encode(msgspec.structs.replace(recorded, pseudonym=None), self._source)
        if recorded.pseudonym is not None and getattr(recorded.event, "partner", None) == partner_id:
            return encode(recorded, self._source)
        if self._pseudonym_key is None:
            return None  # without the key no pseudonym can be made: the subject id must not go out instead
        subject_id = recorded.stream_id[len(SUBJECT_PREFIX):]
        alias = pseudonym(self._pseudonym_key, partner_id, subject_id)
        if not isinstance(recorded.event, SubjectErased):  # an erased subject's mappings are gone for good
            mappings.append({"partner_id": partner_id, "pseudonym": alias, "subject_id": subject_id})
        return encode(msgspec.structs.replace(recorded, pseudonym=alias), self._source)


class WebhookDispatcher(BackgroundLoop):
    task_name = "consent-webhook-dispatcher"

    def __init__(self, database: Database, ledger: DeliveryLedger, router: Router, endpoints,
                 on_enqueued: Callable[[], None],
                 before_routing: Callable[[list[RecordedEvent]], Awaitable[None]] | None = None) -> None:
        self._database = database
        self._before_routing = before_routing  # a process without a live catalog reads it again here
        self._ledger = ledger
        self._router = router
        self._endpoints = endpoints  # SqlWebhooks: the enabled endpoints, read every batch
        self._on_enqueued = on_enqueued
        self._wake = asyncio.Event()
        self._endpoints_changed = asyncio.Event()
        self.is_leader = False
        self.position = 0

    def wake(self) -> None:
        self._wake.set()

    def endpoints_changed(self) -> None:
        """A webhook was registered or enabled here: no need to wait for the next idle look."""
        self._endpoints_changed.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - it must outlive database outages
                log.warning("webhook dispatcher interrupted (%s); retrying", type(error).__name__)
            self.is_leader = False
            await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        async with self._database.engine.connect() as lock_conn:
            try:
                if not self._database.is_sqlite:
                    while not (await lock_conn.execute(sa.select(sa.func.pg_try_advisory_lock(LOCK_KEY)))).scalar():
                        await lock_conn.commit()
                        await asyncio.sleep(1.0)
                    await lock_conn.commit()
                    raw = (await lock_conn.get_raw_connection()).driver_connection
                    await raw.add_listener("consent_events", lambda *_: self._wake.set())
                self.is_leader = True
                await self._follow(lock_conn)
            finally:
                if not self._database.is_sqlite:  # the lock and the listener belong to the session
                    await lock_conn.invalidate()

    async def _follow(self, lock_conn: AsyncConnection) -> None:
        async with self._database.reading() as conn:
            cursor = await load_cursor(conn, CURSOR)
        self.position = cursor[1]
        loop = asyncio.get_running_loop()
        checked_at = loop.time()
        while True:
            self._wake.clear()
            self._endpoints_changed.clear()
            endpoints = await self._endpoints.enabled()
            moved = await (self._step(cursor, endpoints) if endpoints else self._skip(cursor))
            if moved != cursor:
                cursor, self.position = moved, moved[1]
                if endpoints:
                    continue
            if endpoints:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           timeout=SQLITE_POLL if self._database.is_sqlite else IDLE_CHECK)
                # Commits come in bursts: one step for the burst, not one a commit.
                await asyncio.sleep(GATHER)
            else:
                # Nobody to deliver to: a look a second, not a query a commit. A webhook registered meanwhile
                # hears what was committed from its registration on, whenever the cursor gets there.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._endpoints_changed.wait(), timeout=IDLE_CHECK)
            if not self._database.is_sqlite and loop.time() - checked_at >= IDLE_CHECK:
                await lock_conn.execute(sa.text("SELECT 1"))  # still leading: the lock's session is alive
                await lock_conn.commit()
                checked_at = loop.time()

    async def _skip(self, cursor: tuple[int, int]) -> tuple[int, int]:
        """No webhook to deliver to: the cursor skips to the log's safe head, unless one appeared meanwhile
        (events committed before its registration were not for it)."""
        head = await self._safe_head()
        if head <= cursor or await self._endpoints.enabled():
            return cursor
        async with self._ledger.transaction() as conn:
            await conn.execute(save_cursor(self._database, CURSOR, *head))
        return head

    async def _step(self, cursor: tuple[int, int], endpoints: list[Any]) -> tuple[int, int]:
        """One batch: its deliveries and the cursor after it, committed together. Returns the new cursor."""
        batch = await read_after(self._database, *cursor, BATCH)
        if not batch:
            return cursor
        after = (batch[-1][0], batch[-1][1].position)
        recorded = [r for _, r in batch]
        if self._before_routing is not None:
            await self._before_routing(recorded)
        async with self._ledger.transaction() as conn:
            deliveries, mappings = await self._router.route(conn, recorded, endpoints, datetime.now(UTC))
            await enqueue(conn, deliveries)
            if mappings:
                await conn.execute(self._database.upsert(pseudonyms).on_conflict_do_nothing(), mappings)
            await conn.execute(save_cursor(self._database, CURSOR, *after))
        if deliveries:
            self._on_enqueued()
        return after

    async def _safe_head(self) -> tuple[int, int]:
        async with self._database.reading() as conn:
            if self._database.is_sqlite:
                position = (await conn.execute(sa.select(sa.func.max(events.c.position)))).scalar()
                return 0, position or 0
            row = (await conn.execute(_SAFE_HEAD_POSTGRES)).first()
        return (row.transaction_id, row.position) if row else (0, 0)
