"""Migration 0005 hashes the events written before it, and new writes chain on to them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters import migrate
from consent.adapters.database import Database
from consent.adapters.log_verify import verify_log
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.domain.catalog import Scope
from consent.domain.events import ScopeDefined

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# The events table as revision 0004 has it: no hash.
EVENTS_AT_0004 = sa.table("events", sa.column("event_id", sa.Uuid()), sa.column("stream_id", sa.String()),
                          sa.column("stream_version", sa.Integer()), sa.column("type", sa.String()),
                          sa.column("data", Json), sa.column("metadata", Json),
                          sa.column("recorded_at", sa.DateTime(timezone=True)))


def old_events() -> list[dict]:
    """Interleaved streams, with what jsonb may return differently: key order, integral floats, unicode."""
    at = datetime(2026, 1, 5, 9, 30, 15, 250001, tzinfo=UTC)
    rows = []
    for n in range(7):
        for stream in ("scope:a", "subject:zoë", "purpose:p"):
            version = 1 + sum(r["stream_id"] == stream for r in rows)
            rows.append({"event_id": uuid.uuid4(), "stream_id": stream, "stream_version": version,
                         "type": "scope.defined", "metadata": {"actor": "admin"},
                         "recorded_at": at + timedelta(seconds=n, microseconds=n),
                         "data": {"zeta": n, "alpha": "é ✓", "ratio": 1.0 * n, "half": n / 2,
                                  "nested": {"y": [1, {"b": None, "a": True}], "x": 2.5e-7}}})
    return rows


async def test_events_written_at_0004_are_hashed_and_verify(scratch_url):
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0004")
    engine = create_async_engine(scratch_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(EVENTS_AT_0004), old_events())
    finally:
        await engine.dispose()

    await asyncio.to_thread(migrate.upgrade, scratch_url)

    database = Database(scratch_url)
    try:
        report = await verify_log(database, batch=4)
        assert report.intact, report.broken
        assert (report.events, report.streams) == (21, 3)
        async with database.reading() as conn:
            hashes = (await conn.execute(sa.text("SELECT hash FROM events"))).scalars().all()
            assert len(set(hashes)) == 21 and all(len(h) == 32 for h in hashes)
            if database.is_sqlite:  # the table was recreated for NOT NULL: positions are still never reused
                ddl = (await conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'events'"))).scalar()
                assert "AUTOINCREMENT" in ddl
    finally:
        await database.dispose()

    # New writes chain on to the backfilled streams.
    database = Database(scratch_url)
    try:
        async with SqlUnitOfWork(database) as uow:
            event = ScopeDefined(occurred_at=datetime.now(UTC), scope_id="a", title="A", description="",
                                 sensitivity="low")
            await uow.catalog.save("scope:a", 7, [event], Scope(id="a", title="A", description="",
                                                                       sensitivity="low"), "admin")
            await uow.commit()
        report = await verify_log(database)
        assert report.intact, report.broken
        assert report.events == 22
    finally:
        await database.dispose()
