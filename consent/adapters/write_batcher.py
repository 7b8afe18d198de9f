"""Group commit for consent changes on PostgreSQL: concurrent writes go to the database as one statement.

A consent change is one statement (the append, both projections, any pseudonym mapping and any new
data key, as data-modifying CTEs over arrays). Under load many are ready at once; sent together they
cost PostgreSQL one statement, one commit and one WAL flush instead of one each, and this process
one round trip. A write waits for nothing when the database is idle: a batch leaves at once, and
later writes gather while up to `max_in_flight` batches are out.

All or nothing per batch, so one write's version conflict (or a value the database refuses) would fail
its neighbours: a batch the database refuses is sent again one write at a time, and each write gets its
own answer. A lost connection fails the whole batch (503, retry later).
The statement is PostgreSQL's subject write (consent/adapters/postgres.py), for one write or many.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError

from consent.adapters.database import Database
from consent.adapters.postgres import ASYNCPG_NAMES, ASYNCPG_SQL, positions_by_stream, subject_write_params
from consent.adapters.write_record import SubjectWrite


class _Pending(NamedTuple):
    write: SubjectWrite
    answer: asyncio.Future[list[int]]


class WriteBatcher:
    def __init__(self, database: Database, max_batch: int = 64, max_in_flight: int = 4) -> None:
        # Connections of its own: the writes waiting for it may hold every connection of the shared pool.
        self._engine = database.dedicated_engine(max_in_flight)
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[_Pending] = []
        self._in_flight = 0
        self._senders: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self.batches = 0  # statements sent, for the tests and the curious
        self.writes = 0

    async def append(self, write: SubjectWrite) -> list[int]:
        """Commit this write (with whatever else is ready); its events' positions, in order.

        Raises what a statement of its own would: IntegrityError on a version conflict, DBAPIError when the
        database refuses a value or is unavailable."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[int]] = loop.create_future()
        self._queue.append(_Pending(write, answer))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            sender = loop.create_task(self._send_while_queued())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await answer

    async def _send_while_queued(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                await self._send(batch)
        finally:
            self._in_flight -= 1

    def _take(self) -> list[_Pending]:
        """Up to `max_batch` writes, at most one per subject (a row may be upserted once per statement)."""
        batch: list[_Pending] = []
        later: list[_Pending] = []
        subjects: set[str] = set()
        for pending in self._queue:
            if len(batch) < self._max_batch and pending.write.subject_id not in subjects:
                subjects.add(pending.write.subject_id)
                batch.append(pending)
            else:
                later.append(pending)
        self._queue = later
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            found = await self._execute([p.write for p in batch])
        except DBAPIError as error:
            if len(batch) == 1 or error.connection_invalidated:
                _fail(batch, error)
            else:
                # Whose was it: a version conflict, or a value the database refused? Each on its own.
                for pending in batch:
                    await self._send([pending])
            return
        except Exception as error:  # noqa: BLE001 - every waiter gets the failure
            _fail(batch, error)
            return
        except BaseException:  # cancelled (shutdown): so are the waiters
            for pending in batch:
                pending.answer.cancel()
            raise
        for pending in batch:
            if not pending.answer.done():
                pending.answer.set_result(found[pending.write.stream_id])

    async def _execute(self, writes: list[SubjectWrite]) -> dict[str, list[int]]:
        params = subject_write_params(writes)
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                rows = await driver.fetch(ASYNCPG_SQL, *[params[name] for name in ASYNCPG_NAMES])
            # Errors come out as SQLAlchemy's would, for the callers and the API's error mapping.
            except asyncpg.IntegrityConstraintViolationError as error:
                raise IntegrityError(None, None, error, hide_parameters=True) from None
            except asyncpg.PostgresError as error:
                raise DBAPIError(None, None, error, hide_parameters=True) from None
            except (asyncpg.InterfaceError, OSError) as error:  # the connection is gone: not back to the pool
                await conn.invalidate()
                raise DBAPIError(None, None, error, hide_parameters=True, connection_invalidated=True) from None
        self.batches += 1
        self.writes += len(writes)
        return positions_by_stream(rows)


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.answer.done():
            pending.answer.set_exception(error)
