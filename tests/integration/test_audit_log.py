"""The tamper-evident log: written through the API, verified, tampered with by SQL, and caught."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.database import Database
from consent.adapters.log_checkpoints import Checkpointer
from consent.adapters.log_verify import VerifyReport, verify_log
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.adapters.subject_repository import SubjectRepository
from consent.adapters.tables import event_checkpoints, events
from consent.adapters.write_record import event_rows
from consent.api.app import create_app
from consent.config import Settings
from consent.domain.events import GlobalOptOutRecorded, ScopeDefined
from consent.domain.hash_chain import GENESIS, event_hash
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS, USER_TOKEN_SECRET, tail
from tests.integration.test_rebuild import build_history

MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    # No background checkpoints: the tests decide which ranges are checkpointed.
    return Settings(database_url=database_url, admin_keys=(ADMIN_KEY,), user_token_secret=USER_TOKEN_SECRET,
                    checkpoint_interval=0, **SHARED_KEYS)


@pytest.fixture
async def database(database_url):
    db = Database(database_url)
    yield db
    await db.dispose()


async def verify(database: Database) -> VerifyReport:
    return await verify_log(database, batch=7)  # small batches: the keyset pagination is exercised too


async def checkpointed(database: Database) -> int | None:
    async with database.reading() as conn:
        return (await conn.execute(sa.select(sa.func.max(event_checkpoints.c.up_to_position)))).scalar_one()


async def checkpoint(database: Database, checkpointer: Checkpointer | None = None, past: int = 0) -> int:
    """Checkpoint everything committed (beyond `past`); returns the checkpointed position.

    PostgreSQL: the first call notes the horizon, a later one covers it once every older transaction
    ended, on the whole server: other test runs' transactions may make it wait a little.
    """
    checkpointer = checkpointer or Checkpointer(database)
    async with database.reading() as conn:
        head = (await conn.execute(sa.select(sa.func.max(events.c.position)))).scalar_one()
    for _ in range(200):
        await checkpointer.checkpoint_once()
        if (covered := await checkpointed(database)) is not None and covered >= max(head, past + 1):
            return covered
        await asyncio.sleep(0.05)
    raise AssertionError(f"no checkpoint up to {head} was written")


async def run_sql(url: str, *statements) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return [await conn.execute(s) for s in statements]
    finally:
        await engine.dispose()


async def rows(url: str, condition=sa.true()) -> list[dict]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(events).where(condition).order_by(events.c.position))
            return [dict(r) for r in result.mappings()]
    finally:
        await engine.dispose()


def run_cli(url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONSENT_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "consent.cli", "audit", "verify"], env=env, capture_output=True,
                          text=True, timeout=120)


async def test_verify_passes_then_catches_each_kind_of_tampering(client, database, database_url):
    await build_history(client)
    up_to = await checkpoint(database)
    # More events after the checkpoint: the unchecked tail is still chained per stream.
    await client.post("/v1/subjects/s-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "fraud", "action": "object"}]})
    log = await rows(database_url)
    assert up_to is not None and up_to < log[-1]["position"]

    report = await verify(database)
    assert report.intact, report.broken
    assert (report.events, report.checkpoints) == (len(log), 1)
    assert report.streams == len({r["stream_id"] for r in log})
    cli = await asyncio.to_thread(run_cli, database_url)
    assert cli.returncode == 0, tail(cli.stdout + cli.stderr)
    assert "the log is intact" in cli.stdout and "events/s" in cli.stdout

    # 1. One row's data altered: verify fails at exactly that row; restored, it passes again.
    target = next(r for r in log if r["type"] == "subject.granted" and r["stream_id"] == "subject:s-7")
    forged = {**target["data"], "source": "forged"}
    at_target = events.c.position == target["position"]
    await run_sql(database_url, sa.update(events).where(at_target).values(data=forged))
    report = await verify(database)
    assert (report.broken.position, report.broken.event_id) == (target["position"], target["event_id"])
    assert report.broken.stream_id == "subject:s-7" and "altered" in report.broken.problem
    cli = await asyncio.to_thread(run_cli, database_url)
    assert cli.returncode == 1
    assert f"BROKEN at position {target['position']}, event {target['event_id']}" in cli.stdout
    await run_sql(database_url, sa.update(events).where(at_target).values(data=target["data"]))
    assert (await verify(database)).intact

    # 2. A stream's last event deleted inside the checkpointed range: only the checkpoint sees it.
    last_of_stream = next(r for r in log if r["stream_id"] == "scope:profile")
    assert last_of_stream["position"] <= up_to
    await run_sql(database_url, sa.delete(events).where(events.c.position == last_of_stream["position"]))
    report = await verify(database)
    assert report.broken.position == up_to and "checkpoint" in report.broken.problem
    await run_sql(database_url, sa.insert(events).values({k: v for k, v in last_of_stream.items()
                                                          if k != "transaction_id"}))
    assert (await verify(database)).intact

    # 3. An event in the middle of a stream deleted: the stream's next event reports the gap.
    s1 = [r for r in log if r["stream_id"] == "subject:s-1"]
    await run_sql(database_url, sa.delete(events).where(events.c.position == s1[0]["position"]))
    report = await verify(database)
    assert report.broken.position == s1[1]["position"] and "missing" in report.broken.problem
    await run_sql(database_url, sa.insert(events).values({k: v for k, v in s1[0].items() if k != "transaction_id"}))
    assert (await verify(database)).intact

    # 4. Two rows' data swapped: caught at the first of them.
    a, b = [r for r in log if r["type"] == "subject.granted" and r["stream_id"] in ("subject:s-2", "subject:s-3")][:2]
    assert a["data"] != b["data"]
    await run_sql(database_url, sa.update(events).where(events.c.position == a["position"]).values(data=b["data"]),
                  sa.update(events).where(events.c.position == b["position"]).values(data=a["data"]))
    report = await verify(database)
    assert report.broken.position == a["position"]
    await run_sql(database_url, sa.update(events).where(events.c.position == a["position"]).values(data=a["data"]),
                  sa.update(events).where(events.c.position == b["position"]).values(data=b["data"]))
    assert (await verify(database)).intact

    # 5. The tail truncated back into the checkpointed range.
    await run_sql(database_url, sa.delete(events).where(events.c.position >= up_to - 2))
    report = await verify(database)
    assert report.broken.position == up_to and "truncated" in report.broken.problem


async def test_checkpoints_chain_and_cover_only_what_was_written(client, database, database_url):
    await build_history(client)
    first = await checkpoint(database)
    await client.put("/v1/purposes/news", headers=ADMIN, json=MARKETING)
    second = await checkpoint(database)
    assert second > first
    assert await checkpoint(database) == second  # nothing new: no empty checkpoint
    report = await verify(database)
    assert report.intact and report.checkpoints == 2

    # Altering a row and re-hashing its stream does not help: the checkpoint holds the old hash.
    (news,) = await rows(database_url, events.c.stream_id == "purpose:news")
    forged = {**news["data"], "title": "Forged"}
    rehashed = event_hash(GENESIS, "purpose:news", 1, news["event_id"], news["type"], news["recorded_at"], forged,
                          news["metadata"])
    await run_sql(database_url, sa.update(events).where(events.c.position == news["position"])
                  .values(data=forged, hash=rehashed))
    report = await verify(database)
    assert report.broken.position == second and "checkpoint" in report.broken.problem


async def test_a_writer_that_loses_the_race_retries_with_a_fresh_previous_hash(postgresql_url, monkeypatch):
    """Another process appends between this writer's load and save (PostgreSQL: processes share the log)."""
    from tests.conftest import empty_tables

    await empty_tables(postgresql_url)
    load, raced = SubjectRepository.load, []

    async def load_then_lose_the_race(self, subject_id, cached=False):
        state = await load(self, subject_id, cached)
        if subject_id == "busy" and not raced:
            raced.append(state.version)
            other_process = Database(postgresql_url)  # here: on the loop the app runs on
            try:
                async with SqlUnitOfWork(other_process) as uow:
                    theirs = await uow.subjects.load(subject_id)
                    version, event = theirs.version, GlobalOptOutRecorded(occurred_at=datetime.now(UTC),
                                                                          source="gpc")
                    theirs.apply(event)
                    await uow.subjects.save(theirs, version, [event], "admin")
                    await uow.commit()
            finally:
                await other_process.dispose()
        return state

    settings = Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,), checkpoint_interval=0, **SHARED_KEYS)
    database = Database(postgresql_url)
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
            grant = {"changes": [{"purpose": "marketing", "action": "grant"}]}
            assert (await client.post("/v1/subjects/busy/consents", headers=ADMIN, json=grant)).status_code == 200
            monkeypatch.setattr(SubjectRepository, "load", load_then_lose_the_race)
            answer = await client.post("/v1/subjects/busy/consents", headers=ADMIN, json={
                "changes": [{"purpose": "marketing", "action": "withdraw"}]})
        assert answer.status_code == 200 and answer.json()["version"] == 3
        assert raced == [1]  # the first attempt read version 1, then lost to the other process's version 2
        report = await verify_log(database)
        assert report.intact, report.broken
    finally:
        await database.dispose()


async def test_a_checkpoint_waits_for_a_transaction_holding_a_lower_position(postgresql_url):
    """PostgreSQL commits out of position order: a position still in flight is never checkpointed past."""
    from tests.conftest import empty_tables

    await empty_tables(postgresql_url)
    database = Database(postgresql_url)
    engine = create_async_engine(postgresql_url)
    try:
        now = datetime.now(UTC)
        event = ScopeDefined(occurred_at=now, scope_id="slow", title="t", description="", sensitivity="low")
        async with engine.connect() as slow:
            (row,) = event_rows(GENESIS, "scope:slow", 0, [event], "admin", now)
            in_flight = (await slow.execute(sa.insert(events).values(row).returning(events.c.position))).scalar_one()
            async with AsyncTestClient(create_app(Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,),
                                                           checkpoint_interval=0, **SHARED_KEYS))) as other:
                await other.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
            checkpointer = Checkpointer(database)
            for _ in range(5):
                await checkpointer.checkpoint_once()
                await asyncio.sleep(0.05)
            covered = await checkpointed(database)
            assert covered is None or covered < in_flight
            await slow.commit()
        assert await checkpoint(database, checkpointer, past=in_flight) > in_flight
        report = await verify_log(database)
        assert report.intact and report.checkpoints >= 1
    finally:
        await engine.dispose()
        await database.dispose()
