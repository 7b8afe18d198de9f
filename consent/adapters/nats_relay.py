"""The outbox relay: publishes committed events to JetStream, in order, exactly once downstream.

Events are committed to PostgreSQL first (the log is the outbox). One process at a
time relays, chosen by a PostgreSQL advisory lock held on a dedicated connection; when
that process dies, its connection closes, the lock is released and another takes over.

No gaps under concurrency: positions come from an identity column, so a transaction
can commit a lower position after a higher one is already visible. Reading by position
would skip it. Instead every event carries its writing transaction's id (xid8), and the
relay reads only below the oldest transaction still running,
`pg_snapshot_xmin(pg_current_snapshot())`: everything below that horizon has committed
or aborted, so nothing can appear there later. The cursor is (transaction id, position).
A gap is never skipped for being old: it is waited for, however long its transaction runs.
SQLite has one writer at a time, so there the cursor is the position alone.

Each message's `Nats-Msg-Id` is the event id, so a batch republished after a crash
(published, checkpoint not yet saved) is dropped by the server's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from nats.js import JetStreamContext

from consent.adapters.cloudevents import encode, is_published, nats_subject
from consent.adapters.database import Database
from consent.adapters.log_tail import load_cursor, read_after, save_cursor
from consent.adapters.nats_stream import StreamTarget, connect, ensure_stream
from consent.app.background import BackgroundLoop
from consent.app.ports import RecordedEvent
from consent.domain.events import event_type

log = logging.getLogger("consent.relay")

LOCK_KEY = 0x636F6E73656E74  # "consent"
BATCH = 500
CHECKPOINT_EVERY = 0.25  # seconds
PING_EVERY = 1.0  # seconds between checks that the lock connection (and so the leadership) is alive

class Relay(BackgroundLoop):
    task_name = "consent-relay"

    def __init__(self, database: Database, target: StreamTarget, source: str, name: str = "nats") -> None:
        self._database = database
        self._target = target
        self._source = source
        self._stream = target.name
        self._prefix = target.subject_prefix
        self._name = name
        self._wake = asyncio.Event()
        self.is_leader = False
        self.published_position = 0
        self.connected = False

    def wake(self) -> None:
        """Called after a local commit, so that publish lag is not a polling interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the relay must outlive NATS and database outages
                # The type only: database messages can quote row values.
                log.warning("relay interrupted (%s); retrying", type(error).__name__)
            self.is_leader = False
            self.connected = False
            await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        nc = await connect(self._target, "consent-relay")
        try:
            js = nc.jetstream(timeout=5.0)
            await ensure_stream(js, self._target)
            self.connected = True
            async with self._database.engine.connect() as lock_conn:
                try:
                    if not self._database.is_sqlite:
                        while not await self._try_lock(lock_conn):
                            await asyncio.sleep(1.0)
                        raw = (await lock_conn.get_raw_connection()).driver_connection
                        await raw.add_listener("consent_events", lambda *_: self._wake.set())
                    self.is_leader = True
                    log.info("relaying events to NATS stream %s", self._stream)
                    await self._relay(js, lock_conn)
                finally:
                    # The advisory lock and the listener belong to the session: back in the pool, the
                    # connection would keep them, and no relay (this one included) could lead again.
                    if not self._database.is_sqlite:
                        await lock_conn.invalidate()
        finally:
            await nc.close()

    async def _try_lock(self, conn) -> bool:
        got = (await conn.execute(sa.select(sa.func.pg_try_advisory_lock(LOCK_KEY)))).scalar_one()
        await conn.commit()
        return bool(got)

    async def _relay(self, js: JetStreamContext, lock_conn) -> None:
        transaction_id, position = await self._load_checkpoint()
        loop = asyncio.get_running_loop()
        saved, saved_at = (transaction_id, position), float("-inf")
        pinged_at = loop.time()
        while True:
            self._wake.clear()
            batch = await self._pending(transaction_id, position)
            if batch:
                await self._publish(js, [r for _, r in batch])
                transaction_id, position = batch[-1][0], batch[-1][1].position
                self.published_position = position
                # The checkpoint is a commit of its own: under load, one every CHECKPOINT_EVERY seconds.
                # Whatever was published after it is published again after a crash, and dropped by
                # the server's duplicate window (DUPLICATE_WINDOW, far longer).
                if loop.time() - saved_at >= CHECKPOINT_EVERY:
                    await self._save_checkpoint(transaction_id, position)
                    saved, saved_at = (transaction_id, position), loop.time()
                if len(batch) == BATCH:
                    continue
            elif (transaction_id, position) != saved:
                await self._save_checkpoint(transaction_id, position)  # idle now: catch the checkpoint up
                saved, saved_at = (transaction_id, position), loop.time()
            # Woken by a local commit or a NOTIFY. The lock connection is checked about once a
            # second, not on every wake: under load that round trip sat between commit and publish.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=PING_EVERY)
            if not self._database.is_sqlite and loop.time() - pinged_at >= PING_EVERY:
                await lock_conn.execute(sa.text("SELECT 1"))
                await lock_conn.commit()
                pinged_at = loop.time()

    async def _pending(self, transaction_id: int, position: int) -> list[tuple[int, RecordedEvent]]:
        return await read_after(self._database, transaction_id, position, BATCH)

    async def _publish(self, js: JetStreamContext, batch: list[RecordedEvent]) -> None:
        # Pipelined on one connection, which keeps their order; every ack is awaited
        # before the checkpoint moves.
        acks = [
            await js.publish_async(nats_subject(r, self._prefix), encode(r, self._source),
                                   headers={"Nats-Msg-Id": str(r.event_id)})
            for r in batch if is_published(event_type(r.event))
        ]
        await asyncio.wait_for(asyncio.gather(*acks), timeout=10.0)

    async def _load_checkpoint(self) -> tuple[int, int]:
        async with self._database.reading() as conn:
            transaction_id, position = await load_cursor(conn, self._name)
        self.published_position = position
        return transaction_id, position

    async def _save_checkpoint(self, transaction_id: int, position: int) -> None:
        async with self._database.engine.begin() as conn:
            if not self._database.is_sqlite:
                # No wait for the WAL flush: a checkpoint lost in a crash only means events published
                # again, which the duplicate window drops; the flush sat between two publishes.
                await conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            await conn.execute(save_cursor(self._database, self._name, transaction_id, position))
