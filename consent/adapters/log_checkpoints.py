"""Checkpoints over the log's global sequence: deleted, inserted or truncated rows become detectable.

Each checkpoint hashes (position, event hash) of every event after the previous checkpoint up
to `up_to_position`, chained to the previous checkpoint's hash (consent.domain.hash_chain).
A checkpoint may only cover positions that can no longer be filled in:

- PostgreSQL: positions come from an identity column, so a transaction can commit a lower
  position after a higher one is visible (see consent.adapters.nats_relay). A tick notes the
  highest visible position and `pg_snapshot_xmax` (the first transaction id not yet started);
  a later tick checkpoints up to that position once `pg_snapshot_xmin` has passed that xmax,
  i.e. once every transaction that could hold a lower position has committed or aborted.
  A transaction takes its position and its id in the same row projection (the identity and
  the `pg_current_xact_id()` default), and ticks are seconds apart, so none slips between.
- SQLite has one writer at a time: every visible position is final.

One process writes at a time (a transaction-scoped advisory lock on PostgreSQL; SQLite's write
lock), so checkpoints form a single chain.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.tables import event_checkpoints, events
from consent.app.background import BackgroundLoop
from consent.domain.hash_chain import GENESIS, CheckpointDigest

log = logging.getLogger("consent.checkpoints")

LOCK_KEY = 0x636B7074  # "ckpt"; the relay's lock is another key
MAX_EVENTS = 50_000  # per checkpoint, so that one tick stays short while a backlog is caught up
PAGE = 2_000  # rows fetched (and hashed) between two turns of the event loop

_HORIZON = sa.text("""
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
           pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
           (SELECT coalesce(max(position), 0) FROM events) AS head""")


class Checkpoint(Struct):
    up_to_position: int
    event_count: int
    hash: bytes


class _Candidate(Struct):
    head: int
    xmax: int


async def latest_checkpoint(conn: AsyncConnection) -> Checkpoint | None:
    row = (await conn.execute(sa.select(event_checkpoints.c.up_to_position, event_checkpoints.c.event_count,
                                        event_checkpoints.c.hash)
                              .order_by(event_checkpoints.c.up_to_position.desc()).limit(1))).first()
    return Checkpoint(row.up_to_position, row.event_count, row.hash) if row else None


async def write_checkpoint(conn: AsyncConnection, up_to: int) -> Checkpoint | None:
    """Checkpoint the events after the latest checkpoint up to `up_to` (at most MAX_EVENTS of them).

    The caller guarantees that no position up to `up_to` can still appear, and commits.
    """
    previous = await latest_checkpoint(conn)
    after, previous_hash = (previous.up_to_position, previous.hash) if previous else (0, GENESIS)
    if up_to <= after:
        return None
    digest = CheckpointDigest(previous_hash)
    last = after
    # In pages, each fetched with an await: a backlog's 50,000 rows read and hashed at once held the
    # event loop for a tenth of a second or more, and every request waited (decisions' p99 with it).
    query = (sa.select(events.c.position, events.c.hash)
             .where(events.c.position > after, events.c.position <= up_to)
             .order_by(events.c.position).limit(MAX_EVENTS))
    if conn.dialect.name == "postgresql":
        result = await conn.stream(query.execution_options(yield_per=PAGE))
        async for page in result.partitions(PAGE):
            for position, hash_ in page:
                digest.add(position, hash_)
            last = page[-1][0]
    else:
        for position, hash_ in (await conn.execute(query)).all():
            digest.add(position, hash_)
            last = position
    if digest.count == MAX_EVENTS:
        up_to = last
    checkpoint = Checkpoint(up_to, digest.count, digest.hash())
    await conn.execute(sa.insert(event_checkpoints).values(
        up_to_position=checkpoint.up_to_position, event_count=checkpoint.event_count, hash=checkpoint.hash,
        created_at=datetime.now(UTC)))
    return checkpoint


class Checkpointer(BackgroundLoop):
    """Writes a checkpoint every `interval` seconds over the positions that became final."""

    task_name = "consent-checkpoints"

    def __init__(self, database: Database, interval: float = 10.0) -> None:
        self._database = database
        self._interval = interval
        self._candidate: _Candidate | None = None

    async def checkpoint_once(self) -> Checkpoint | None:
        if self._database.is_sqlite:
            await self._database.acquire_writer()
            try:
                async with self._database.engine.connect() as conn:
                    head = (await conn.execute(
                        sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0)))).scalar_one()
                    written = await write_checkpoint(conn, head)
                    await conn.commit()
                    return written
            finally:
                self._database.release_writer()
        async with self._database.engine.connect() as conn:
            if not (await conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(LOCK_KEY)))).scalar_one():
                return None  # another process is the writer this time
            # Read before this transaction writes: it has no transaction id of its own yet.
            now = (await conn.execute(_HORIZON)).one()
            written = None
            if self._candidate is not None and now.xmin >= self._candidate.xmax:
                written = await write_checkpoint(conn, self._candidate.head)
                if written is None or written.up_to_position >= self._candidate.head:
                    self._candidate = None  # else a capped checkpoint: the rest is final too, next call
            if self._candidate is None:
                self._candidate = _Candidate(head=now.head, xmax=now.xmax)
            await conn.commit()
            return written

    async def _run(self) -> None:
        while True:
            try:
                while (written := await self.checkpoint_once()) is not None and written.event_count >= MAX_EVENTS:
                    pass  # a backlog: keep going
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the next tick tries again
                log.warning("checkpoint failed (%s)", type(error).__name__)
            await asyncio.sleep(self._interval)
