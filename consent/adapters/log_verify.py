"""`consent audit verify`: walk the log in position order and report the first broken link.

Every event's hash is recomputed from the row as stored and chained to the previous event
of its stream; every checkpoint is recomputed over (position, event hash) of its range. The
walk reads one snapshot (REPEATABLE READ on PostgreSQL, a read transaction on SQLite), so
that writes committing meanwhile cannot appear half-seen, in keyset-paginated batches:
memory holds one batch and the (version, hash) of each stream's last event.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable

import sqlalchemy as sa
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.tables import event_checkpoints, events
from consent.domain.hash_chain import GENESIS, CheckpointDigest, event_hash

BATCH = 10_000

Progress = Callable[[int], None]


class BrokenLink(Struct):
    position: int
    problem: str
    event_id: uuid.UUID | None = None
    stream_id: str | None = None
    stream_version: int | None = None


class VerifyReport(Struct):
    events: int
    streams: int
    checkpoints: int
    seconds: float
    broken: BrokenLink | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class _CheckpointWalk:
    """The checkpoints in order, each recomputed from the events the walk feeds it."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._pages = _checkpoints(conn)
        self.current = None
        self.verified = 0
        self._start = 0
        self._digest = CheckpointDigest(GENESIS)

    async def next(self) -> None:
        self.current = await anext(self._pages, None)

    def add(self, position: int, hash_: bytes) -> None:
        if self.current is not None:
            self._digest.add(position, hash_)

    async def close_before(self, position: int | None) -> BrokenLink | None:
        """Check every checkpoint that ends before `position` (None: the end of the log)."""
        while self.current is not None and (position is None or position > self.current.up_to_position):
            cp = self.current
            if self._digest.count != cp.event_count or self._digest.hash() != cp.hash:
                return BrokenLink(position=cp.up_to_position, problem=(
                    f"checkpoint up to position {cp.up_to_position} covers {cp.event_count} events after "
                    f"position {self._start}, the log holds {self._digest.count} there"
                    + (", its tail truncated" if position is None and self._digest.count < cp.event_count else "")
                    + ": an event was deleted, inserted or moved, or the checkpoint altered"))
            self.verified += 1
            self._start = cp.up_to_position
            self._digest = CheckpointDigest(cp.hash)
            await self.next()
        return None


async def _checkpoints(conn: AsyncConnection) -> AsyncIterator[sa.Row]:
    after = 0
    while True:
        page = (await conn.execute(sa.select(event_checkpoints).where(event_checkpoints.c.up_to_position > after)
                                   .order_by(event_checkpoints.c.up_to_position).limit(1000))).all()
        for row in page:
            yield row
        if len(page) < 1000:
            return
        after = page[-1].up_to_position


@contextlib.asynccontextmanager
async def _snapshot(database: Database) -> AsyncIterator[AsyncConnection]:
    async with database.engine.connect() as conn:
        if not database.is_sqlite:
            # Read-only: it takes no transaction id, so it holds back neither the relay nor checkpoints.
            await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        try:
            yield conn
        finally:
            await conn.rollback()


async def verify_log(database: Database, progress: Progress | None = None, batch: int = BATCH) -> VerifyReport:
    started = time.perf_counter()
    heads: dict[str, tuple[int, bytes]] = {}
    count = 0
    query = (sa.select(events.c.position, events.c.event_id, events.c.stream_id, events.c.stream_version,
                       events.c.type, events.c.recorded_at, events.c.data, events.c.metadata, events.c.hash)
             .order_by(events.c.position).limit(batch))

    def report(broken: BrokenLink | None) -> VerifyReport:
        return VerifyReport(events=count, streams=len(heads), checkpoints=checkpoints.verified,
                            seconds=time.perf_counter() - started, broken=broken)

    async with _snapshot(database) as conn:
        checkpoints = _CheckpointWalk(conn)
        await checkpoints.next()
        after = 0
        while rows := (await conn.execute(query.where(events.c.position > after))).all():
            for row in rows:
                if broken := await checkpoints.close_before(row.position):
                    return report(broken)
                broken = _check_link(row, heads)
                if broken is not None:
                    return report(broken)
                checkpoints.add(row.position, row.hash)
                count += 1
            after = rows[-1].position
            if progress is not None:
                progress(len(rows))
        return report(await checkpoints.close_before(None))


def _check_link(row: sa.Row, heads: dict[str, tuple[int, bytes]]) -> BrokenLink | None:
    """Check one event against its stream's previous one; on success it becomes the stream's head."""
    version, previous = heads.get(row.stream_id, (0, GENESIS))

    def broken(problem: str) -> BrokenLink:
        return BrokenLink(position=row.position, problem=problem, event_id=row.event_id, stream_id=row.stream_id,
                          stream_version=row.stream_version)

    if row.stream_version != version + 1:
        return broken(f"stream version {row.stream_version} follows {version}: an event of the stream is "
                      "missing or out of place")
    if not isinstance(row.hash, bytes) or len(row.hash) != len(GENESIS):
        return broken("the stored hash is missing or not a sha256 digest")
    expected = event_hash(previous, row.stream_id, row.stream_version, row.event_id, row.type, row.recorded_at,
                          row.data, row.metadata)
    if expected != row.hash:
        return broken("the stored hash does not match the event as stored: its content was altered, "
                      "or its predecessor in the stream was")
    heads[row.stream_id] = (row.stream_version, row.hash)
    return None
