"""Rebuild the read models from the log, and swap them in while readers keep reading.

1. In one snapshot of the log (REPEATABLE READ on PostgreSQL, a read transaction on
   SQLite), fold every stream in (stream, version) order into temporary tables.
2. Then block appends (LOCK TABLE events on PostgreSQL; the write lock on SQLite),
   fold again the streams that gained events since the snapshot, and replace the
   live rows with the rebuilt ones in one transaction. Readers see the old rows
   until it commits, then the new ones: they never wait.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import sqlalchemy as sa
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.sql_rows import catalog_row, consent_row, subject_row
from consent.adapters.tables import consents, events, partners, purposes, scopes, subjects
from consent.domain.catalog import Catalog
from consent.domain.events import event_from_data, without_personal
from consent.domain.streams import (
    CATALOG_STREAMS,
    PARTNER,
    PURPOSE,
    SCOPE,
    SUBJECT,
    SUBJECT_PREFIX,
    parse_stream_id,
)
from consent.domain.subject import SubjectConsents

READ_MODELS = (subjects, consents, purposes, scopes, partners)
STREAM_KIND = {subjects: SUBJECT, consents: SUBJECT, purposes: PURPOSE, scopes: SCOPE, partners: PARTNER}
FLUSH_ROWS = 5_000
FETCH_ROWS = 10_000

Progress = Callable[[int], None]


class RebuildReport(Struct):
    events: int
    streams: int
    caught_up_streams: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _shadow(table: sa.Table) -> str:
    return f"rebuild_{table.name}"


class _Writer:
    """Buffers rebuilt rows and inserts them into the shadow tables in batches."""

    def __init__(self, conn: AsyncConnection, commit: bool = True) -> None:
        self._conn = conn
        self._commit = commit  # each batch its own short transaction (where the connection has them)
        self._rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in READ_MODELS}
        self._shadows = {t.name: sa.table(_shadow(t), *(sa.column(c.name, c.type) for c in t.columns))
                         for t in READ_MODELS}

    async def add(self, table: sa.Table, row: dict[str, Any]) -> None:
        rows = self._rows[table.name]
        rows.append(row)
        if len(rows) >= FLUSH_ROWS:
            await self.flush(table.name)

    async def flush(self, name: str | None = None) -> None:
        for table_name in [name] if name else list(self._rows):
            rows = self._rows[table_name]
            if rows:
                await self._conn.execute(sa.insert(self._shadows[table_name]), rows)
                rows.clear()
                if self._commit:
                    await _commit(self._conn)


async def _fold(rows: AsyncIterator[Any], writer: _Writer, progress: Progress | None) -> tuple[int, int]:
    """Fold events ordered by (stream, version) into read-model rows; returns (events, streams)."""
    catalog, catalog_versions = Catalog(), {}
    count = streams = 0
    subject: SubjectConsents | None = None

    async def flush_subject() -> None:
        if subject is not None:
            await writer.add(subjects, subject_row(subject.subject_id, subject.version, subject.position,
                                                       subject.global_opt_out))
            for record in subject.records.values():
                await writer.add(consents, consent_row(subject.subject_id, record))

    async for row in rows:
        event = event_from_data(row.type, without_personal(row.data))  # read models hold no personal data
        if row.stream_id.startswith(SUBJECT_PREFIX):
            subject_id = row.stream_id[len(SUBJECT_PREFIX):]
            if subject is None or subject.subject_id != subject_id:
                await flush_subject()
                subject, streams = SubjectConsents(subject_id), streams + 1
            subject.apply(event)
            subject.position = row.position
        else:
            streams += row.stream_id not in catalog_versions
            catalog.apply(event)
            catalog_versions[row.stream_id] = row.stream_version
        count += 1
        if progress is not None and count % FETCH_ROWS == 0:
            progress(FETCH_ROWS)
    await flush_subject()
    for stream_id, version in catalog_versions.items():
        kind, ident = parse_stream_id(stream_id)
        if kind not in CATALOG_STREAMS:
            continue  # access and audit streams: no read model here
        table, row = catalog_row(getattr(catalog, f"{kind}s")[ident], version)
        await writer.add(table, row)
    await writer.flush()
    if progress is not None:
        progress(count % FETCH_ROWS)
    return count, streams


async def _events_of(conn: AsyncConnection, condition: sa.ColumnElement[bool] | None = None) -> AsyncIterator[Any]:
    query = sa.select(events.c.stream_id, events.c.stream_version, events.c.position, events.c.type,
                      events.c.data).order_by(events.c.stream_id, events.c.stream_version)
    if condition is not None:
        query = query.where(condition)
    result = await conn.stream(query.execution_options(yield_per=FETCH_ROWS))
    async for row in result:
        yield row


async def rebuild_projections(database: Database, progress: Progress | None = None) -> RebuildReport:
    started = time.perf_counter()
    postgres = not database.is_sqlite
    # Shadow tables written in short autocommitted batches from a second connection: a long
    # writing transaction would hold back pg_snapshot_xmin, and with it the relay of every
    # database on the server, for as long as the rebuild runs.
    async with database.autocommit_engine.connect() as writing:
        for table in READ_MODELS:  # columns only: no constraints to slow the bulk insert
            await writing.execute(sa.text(f"DROP TABLE IF EXISTS {_shadow(table)}"))
            await writing.execute(sa.text(f"CREATE {'UNLOGGED ' if postgres else ''}TABLE {_shadow(table)} "
                                          f"AS SELECT * FROM {table.name} WHERE 1 = 0"))
        await _commit(writing)

        # 1. Fold a snapshot of the log (read-only: it takes no transaction id).
        async with database.engine.connect() as reading:
            if postgres:
                await reading.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
                horizon = (await reading.execute(sa.text(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))).scalar_one()
            head = (await reading.execute(
                sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0)))).scalar_one()
            count, streams = await _fold(_events_of(reading), _Writer(writing), progress)
            await reading.rollback()

    # 2. Block appends, catch up, swap: one short transaction.
    async with database.engine.connect() as conn:
        if postgres:
            await conn.execute(sa.text("LOCK TABLE events IN EXCLUSIVE MODE"))
            newer = sa.text("transaction_id >= CAST(:horizon AS text)::xid8").bindparams(horizon=horizon)
        else:
            await conn.execute(sa.delete(subjects).where(sa.false()))  # takes SQLite's write lock
            newer = events.c.position > head
        late = list((await conn.execute(sa.select(events.c.stream_id).where(newer).distinct())).scalars())
        if late:
            late_ids = [parse_stream_id(stream) for stream in late]
            for table, kind in STREAM_KIND.items():
                ids = [ident for late_kind, ident in late_ids if late_kind == kind] or [""]
                key = "subject_id" if table in (subjects, consents) else "id"
                await conn.execute(sa.text(f"DELETE FROM {_shadow(table)} WHERE {key} IN :ids")
                                   .bindparams(sa.bindparam("ids", expanding=True)), {"ids": ids})
            await _fold(_events_of(conn, events.c.stream_id.in_(late)), _Writer(conn, commit=False), None)
        for table in READ_MODELS:
            await conn.execute(sa.delete(table))
            await conn.execute(sa.text(f"INSERT INTO {table.name} SELECT * FROM {_shadow(table)}"))
            await conn.execute(sa.text(f"DROP TABLE {_shadow(table)}"))
        await conn.commit()
    # Fresh statistics: the planner would otherwise scan whole tables for the subject lookups.
    async with database.autocommit_engine.connect() as conn:
        await conn.execute(sa.text(f"ANALYZE {', '.join(t.name for t in READ_MODELS)}" if postgres else "ANALYZE"))
        await _commit(conn)
    return RebuildReport(events=count, streams=streams, caught_up_streams=len(late),
                         seconds=time.perf_counter() - started)


async def _commit(conn: AsyncConnection) -> None:
    if conn.in_transaction():  # autocommit connections have none to commit
        await conn.commit()
