"""PostgreSQL's recorder: a subject write is one statement, sent with other writes' when it can be.

The append, both projections, any pseudonym mapping and any new data key go as data-modifying CTEs over
arrays (`SUBJECT_WRITE`): atomic without a transaction, which spares the BEGIN and COMMIT round trips on
the write hot path. An erasure deletes as well, and takes the shared several-statement path in a
transaction (consent/adapters/sql_recorder.py).

Group commit (`WriteBatcher`): under load many writes are ready at once; sent together they cost
PostgreSQL one statement, one commit and one WAL flush instead of one each, and this process one round
trip. A write waits for nothing when the database is idle: a batch leaves at once, and later writes
gather while up to `max_in_flight` batches are out. All or nothing per batch, so one write's version
conflict (or a value the database refuses) would fail its neighbours: a batch the database refuses is
sent again one write at a time, and each write gets its own answer. A lost connection fails the whole
batch (503, retry later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, NamedTuple

import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError, IntegrityError

from consent.adapters.database import Database
from consent.adapters.sql_recorder import SqlRecorder, audited_predicate, version_conflict_from
from consent.adapters.write_record import SubjectWrite

_encode_json = msgspec.json.Encoder().encode

SUBJECT_WRITE = sa.text("""
    WITH appended AS (
        INSERT INTO events (event_id, stream_id, stream_version, type, data, metadata, recorded_at, hash)
        SELECT e.event_id, e.stream_id, e.stream_version, e.type, CAST(e.data AS jsonb),
               CAST(e.metadata AS jsonb), e.recorded_at, e.hash
        FROM unnest(CAST(:e_id AS uuid[]), CAST(:e_stream AS varchar[]), CAST(:e_version AS integer[]),
                    CAST(:e_type AS varchar[]), CAST(:e_data AS text[]), CAST(:e_metadata AS text[]),
                    CAST(:e_at AS timestamptz[]), CAST(:e_hash AS bytea[]))
             WITH ORDINALITY AS e(event_id, stream_id, stream_version, type, data, metadata, recorded_at, hash, n)
        ORDER BY e.n
        RETURNING position, stream_id, stream_version),
    subject AS (
        INSERT INTO subjects (subject_id, version, position, global_opt_out)
        SELECT s.subject_id, s.version, a.position, s.opt_out
        FROM unnest(CAST(:s_id AS varchar[]), CAST(:s_stream AS varchar[]), CAST(:s_version AS integer[]),
                    CAST(:s_opt_out AS boolean[])) AS s(subject_id, stream_id, version, opt_out)
        JOIN appended a ON a.stream_id = s.stream_id AND a.stream_version = s.version
        ON CONFLICT (subject_id) DO UPDATE SET version = EXCLUDED.version, position = EXCLUDED.position,
            global_opt_out = EXCLUDED.global_opt_out),
    consent AS (
        INSERT INTO consents (subject_id, purpose_id, partner_id, scopes, status, expires_at, purpose_version,
                              updated_at)
        SELECT c.subject_id, c.purpose_id, c.partner_id, CAST(c.scopes AS jsonb), c.status, c.expires_at,
               c.purpose_version, c.updated_at
        FROM unnest(CAST(:c_subject AS varchar[]), CAST(:c_purpose AS varchar[]), CAST(:c_partner AS varchar[]),
                    CAST(:c_scopes AS text[]), CAST(:c_status AS varchar[]), CAST(:c_expires AS timestamptz[]),
                    CAST(:c_purpose_version AS integer[]), CAST(:c_updated AS timestamptz[]))
             AS c(subject_id, purpose_id, partner_id, scopes, status, expires_at, purpose_version, updated_at)
        ON CONFLICT (subject_id, purpose_id, partner_id) DO UPDATE SET scopes = EXCLUDED.scopes,
            status = EXCLUDED.status, expires_at = EXCLUDED.expires_at,
            purpose_version = EXCLUDED.purpose_version, updated_at = EXCLUDED.updated_at),
    pseudonym AS (
        INSERT INTO pseudonyms (partner_id, pseudonym, subject_id)
        SELECT * FROM unnest(CAST(:p_partner AS varchar[]), CAST(:p_pseudonym AS varchar[]),
                             CAST(:p_subject AS varchar[]))
        ON CONFLICT (partner_id, pseudonym) DO NOTHING),
    -- A subject's first personal data: its data key, with the events. A key row is only ever made or
    -- deleted together with an append to the subject's stream, so a key committed by someone else
    -- since the state was read means an event at this version too: the append then fails whole.
    subject_key AS (
        INSERT INTO subject_keys (subject_id, key_id, wrapped_key, master_key_id, created_at)
        SELECT * FROM unnest(CAST(:k_subject AS varchar[]), CAST(:k_id AS varchar[]), CAST(:k_wrapped AS bytea[]),
                             CAST(:k_master AS varchar[]), CAST(:k_at AS timestamptz[]))
        ON CONFLICT (subject_id) DO NOTHING)
    SELECT position, stream_id, stream_version FROM appended""")

_compiled = SUBJECT_WRITE.compile(dialect=asyncpg_dialect())
# The statement as asyncpg takes it: $n placeholders, and the parameter names in their order.
_ASYNCPG_SQL, _ASYNCPG_NAMES = _compiled.string, tuple(_compiled.positiontup or ())


def _json(value: Any) -> str | None:
    return None if value is None else _encode_json(value).decode()


def subject_write_params(writes: Iterable[SubjectWrite]) -> dict[str, list[Any]]:
    """The statement's arrays for these writes (one row per event, subject, consent, pseudonym, key)."""
    params: dict[str, list[Any]] = {name: [] for name in _ASYNCPG_NAMES}
    for w in writes:
        stream_id = w.stream_id
        for row in w.events:
            for name, value in (("e_id", row["event_id"]), ("e_stream", stream_id),
                                ("e_version", row["stream_version"]), ("e_type", row["type"]),
                                ("e_data", _json(row["data"])), ("e_metadata", _json(row["metadata"])),
                                ("e_at", row["recorded_at"]), ("e_hash", row["hash"])):
                params[name].append(value)
        for name, value in (("s_id", w.subject_id), ("s_stream", stream_id), ("s_version", w.version),
                            ("s_opt_out", w.global_opt_out)):
            params[name].append(value)
        for r in w.consents:
            for name, value in (("c_subject", w.subject_id), ("c_purpose", r.purpose), ("c_partner", r.partner or ""),
                                ("c_scopes", _json(list(r.scopes)) if r.scopes is not None else None),
                                ("c_status", r.status), ("c_expires", r.expires_at),
                                ("c_purpose_version", r.purpose_version), ("c_updated", r.updated_at)):
                params[name].append(value)
        for partner_id, pseudonym in w.pseudonyms.items():
            params["p_partner"].append(partner_id)
            params["p_pseudonym"].append(pseudonym)
            params["p_subject"].append(w.subject_id)
        if w.new_key is not None:
            for name, value in (("k_subject", w.subject_id), ("k_id", w.new_key.key_id),
                                ("k_wrapped", w.new_key.wrapped_key), ("k_master", w.new_key.master_key_id),
                                ("k_at", w.at)):
                params[name].append(value)
    return params


def positions_by_stream(rows: Iterable[tuple[int, str, int]]) -> dict[str, list[int]]:
    """The appended events' positions, per stream, in stream order."""
    found: dict[str, list[tuple[int, int]]] = {}
    for position, stream_id, stream_version in rows:
        found.setdefault(stream_id, []).append((stream_version, position))
    return {stream_id: [position for _, position in sorted(pairs)] for stream_id, pairs in found.items()}


class PostgresRecorder(SqlRecorder):
    AUDITED = audited_predicate("(metadata ->> 'actor')")
    # Group commit of single writes (set by the unit of work when it is not in a transaction).
    batcher: WriteBatcher | None = None

    async def write_subject(self, write: SubjectWrite) -> list[int]:
        if write.erased:
            return await super().write_subject(write)
        try:
            if self.batcher is not None:
                await self._unit.release()  # the batch has connections of its own: no need to hold one
                return await self.batcher.append(write)
            conn = await self._unit.connection()
            found = await conn.execute(SUBJECT_WRITE, subject_write_params([write]))
            return positions_by_stream(found.all())[write.stream_id]
        except IntegrityError as error:
            raise version_conflict_from(error, write.stream_id, write.expected_version) from None


class _Pending(NamedTuple):
    write: SubjectWrite
    answer: asyncio.Future[list[int]]


class WriteBatcher:
    def __init__(self, database: Database, max_batch: int = 64) -> None:
        # One statement in flight per connection of its own.
        self._engine, self._max_in_flight = database.batcher_engine()
        self._max_batch = max_batch
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
                rows = await driver.fetch(_ASYNCPG_SQL, *[params[name] for name in _ASYNCPG_NAMES])
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
