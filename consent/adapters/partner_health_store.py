"""Partner health in the database: each process adds its counts by the minute; the route sums a window.

The flusher runs beside the HTTP server, off the hot path: every `interval` seconds it compares the
process's counters (consent/app/telemetry.py) with what it has already written and adds the difference to
the current minute's rows, with an upsert (INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n) that
PostgreSQL and SQLite both run. Replicas adding to the same rows at once lock them in the same (sorted)
order, so they never deadlock. It flushes once more when the process stops, and deletes rows older than
the longest window now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.tables import partner_health as table
from consent.app.background import BackgroundLoop
from consent.app.partner_health import KEEP, WINDOWS, PartnerHealth, counter_rows, minute_of, partner_health
from consent.app.ports import Clock
from consent.app.telemetry import Telemetry

log = logging.getLogger("consent.partner_health")

PRUNE_EVERY = timedelta(minutes=10)
STOP_TIMEOUT = 10.0  # seconds the last flush may take at shutdown


class HealthFlusher(BackgroundLoop):
    task_name = "consent-partner-health"

    def __init__(self, database: Database, telemetry: Telemetry, clock: Clock, interval: float) -> None:
        self._database = database
        self._telemetry = telemetry
        self._clock = clock
        self._interval = interval
        self._written: dict[tuple[str, str, str], int] = {}  # (partner, metric, label) -> count written so far
        self._lock = asyncio.Lock()  # one flush at a time, or both would add the same difference
        self._stopping = asyncio.Event()
        self._pruned_at: datetime | None = None

    async def flush_once(self) -> int:
        """Add what was counted since the last flush; the number of rows written."""
        async with self._lock:
            # Read in one go, without an await: what is counted while the write runs goes with the next flush.
            counted = {(stats.label, metric, label): count
                       for stats in self._telemetry.partners.values() if not stats.label.startswith("_")
                       for (metric, label), count in counter_rows(stats).items()}
            now = self._clock.now()
            minute = minute_of(now)
            rows = [{"partner_id": partner, "bucket_start": minute, "metric": metric, "label": label,
                     "n": count - self._written.get((partner, metric, label), 0)}
                    for (partner, metric, label), count in sorted(counted.items())
                    if count != self._written.get((partner, metric, label), 0)]
            if rows:
                upsert = self._database.upsert(table)
                upsert = upsert.on_conflict_do_update(index_elements=list(table.primary_key.columns),
                                                      set_={"n": table.c.n + upsert.excluded.n})
                await self._write(upsert, rows)
                self._written = counted
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                await self._write(sa.delete(table).where(table.c.bucket_start < now - KEEP))
                self._pruned_at = now
            return len(rows)

    async def _write(self, statement, rows: list[dict] | None = None) -> None:
        async with self._database.writing() as conn:
            await conn.execute(statement, rows)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
            try:
                await self.flush_once()  # after stop() too: the last flush
            except Exception as error:  # noqa: BLE001 - the next flush adds what this one could not
                log.warning("partner health flush failed (%s)", type(error).__name__)

    async def stop(self) -> None:
        """Flush what is left, then stop (not cancelled mid-write: a cancelled write might have committed,
        and the next flush would add the same counts again)."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=STOP_TIMEOUT)
            except TimeoutError:
                log.warning("partner health: the last flush did not finish in %s s", STOP_TIMEOUT)


class PartnerHealthReader:
    def __init__(self, database: Database, clock: Clock, flush_interval: float) -> None:
        self._database = database
        self._clock = clock
        self._flush_interval = flush_interval

    async def read(self, partner_id: str, window: str) -> PartnerHealth:
        until = self._clock.now()
        since = minute_of(until - WINDOWS[window])
        query = (sa.select(table.c.metric, table.c.label, sa.func.sum(table.c.n))
                 .where(table.c.partner_id == partner_id, table.c.bucket_start >= since)
                 .group_by(table.c.metric, table.c.label))
        async with self._database.reading() as conn:
            sums = {(metric, label): int(n) for metric, label, n in await conn.execute(query)}
        return partner_health(partner_id, window, until, self._flush_interval, sums)
