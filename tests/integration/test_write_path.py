"""The consent-write hot path: the write cache (no read for a subject this process wrote last), group commit
(concurrent writes in one statement on PostgreSQL) and what keeps both correct: versions checked by the
database, only committed writes remembered, a conflict failing only its own writer."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.exc import DBAPIError, IntegrityError

from consent.adapters import migrate
from consent.adapters.database import Database
from consent.adapters.log_verify import verify_log
from consent.adapters.postgres import WriteBatcher
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.adapters.write_record import SubjectWrite
from consent.api import fast_consents
from consent.api.app import create_app
from consent.config import Settings
from consent.domain.subject import Change, ConsentRecord, change_consents
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    SHARED_KEYS,
    create_postgres_database,
    drop_postgres_database,
    empty_tables,
    on_app_loop,
)
from tests.integration.test_decision_queries import counted_queries

MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


def write(action: str = "grant", purpose: str = "marketing") -> dict:
    return {"changes": [{"purpose": purpose, "action": action}]}


@pytest.fixture
async def pg_settings(postgresql_url: str) -> Settings:
    """Group commit is PostgreSQL's (SQLite has one writer at a time)."""
    await empty_tables(postgresql_url)
    return Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS)


async def two_processes(settings):
    """Two apps on one database, both knowing the catalog (no feed between them: neither hears the other)."""
    async with AsyncTestClient(create_app(settings)) as setup:
        await setup.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    return AsyncTestClient(create_app(settings)), AsyncTestClient(create_app(settings))


async def history_versions(client, subject_id: str) -> list[int]:
    events = (await client.get(f"/v1/subjects/{subject_id}/history", headers=ADMIN)).json()["events"]
    return [e["stream_version"] for e in events]


async def test_a_subject_written_here_last_is_written_again_without_a_read(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    with counted_queries(client) as first:
        assert (await client.post("/v1/subjects/ann/consents", headers=ADMIN, json=write())).status_code == 200
    assert any("FROM subjects" in s for s in first), first  # unknown here: its state is read
    with counted_queries(client) as second:
        answer = await client.post("/v1/subjects/ann/consents", headers=ADMIN, json=write("withdraw"))
    assert answer.status_code == 200 and answer.json()["version"] == 2
    assert not any("FROM subjects" in s for s in second), second
    assert await history_versions(client, "ann") == [1, 2]


async def test_another_process_writing_in_between_costs_a_retry_not_a_wrong_write(settings):
    first, second = await two_processes(settings)
    async with first as a, second as b:
        assert (await a.post("/v1/subjects/bob/consents", headers=ADMIN, json=write())).json()["version"] == 1
        assert (await b.post("/v1/subjects/bob/consents", headers=ADMIN, json=write("withdraw"))).json()[
            "version"] == 2
        # A still remembers version 1: its append at 2 is refused by the database, re-read and made at 3.
        answer = await a.post("/v1/subjects/bob/consents", headers=ADMIN, json=write("object"))
        assert answer.status_code == 200 and answer.json()["version"] == 3
        assert answer.json()["consents"][0]["status"] == "objected"
        assert await history_versions(a, "bob") == [1, 2, 3]
        report = await on_app_loop(a, verify_log, a.app.state.container.database)
        assert report.intact and report.events >= 3


async def test_if_match_is_checked_against_the_database_not_the_write_cache(settings):
    first, second = await two_processes(settings)
    async with first as a, second as b:
        await a.post("/v1/subjects/cy/consents", headers=ADMIN, json=write())
        await b.post("/v1/subjects/cy/consents", headers=ADMIN, json=write("withdraw"))
        current = await a.post("/v1/subjects/cy/consents", headers={**ADMIN, "If-Match": '"2"'}, json=write())
        assert current.status_code == 200 and current.json()["version"] == 3
        stale = await a.post("/v1/subjects/cy/consents", headers={**ADMIN, "If-Match": '"2"'}, json=write())
        assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"


async def test_a_write_rolled_back_is_not_remembered(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    await client.post("/v1/subjects/dee/consents", headers=ADMIN, json=write())
    container = client.app.state.container

    async def save_then_roll_back() -> None:
        async with SqlUnitOfWork(container.database, keys=container.subject_keys,
                                 write_cache=container.write_cache) as uow:
            state = await uow.subjects.load("dee", cached=True)
            version = state.version
            new_events = change_consents(state, container.catalog_service.catalog,
                                         [Change(purpose="marketing", action="withdraw")], "api", None,
                                         container.clock.now())
            for event in new_events:
                state.apply(event)
            await uow.subjects.save(state, version, new_events, "system")
            # left without commit: rolled back

    await on_app_loop(client, save_then_roll_back)
    assert container.write_cache.get("dee") is None
    answer = await client.post("/v1/subjects/dee/consents", headers=ADMIN, json=write("object"))
    assert answer.status_code == 200 and answer.json()["version"] == 2
    assert await history_versions(client, "dee") == [1, 2]


async def test_erasure_leaves_nothing_of_the_subject_in_the_write_cache(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    await client.post("/v1/subjects/eve/consents", headers=ADMIN, json=write())
    assert client.app.state.container.write_cache.get("eve") is not None
    assert (await client.post("/v1/subjects/eve/erase", headers=ADMIN)).status_code == 200
    assert client.app.state.container.write_cache.get("eve") is None
    again = await client.post("/v1/subjects/eve/consents", headers=ADMIN, json=write())
    assert again.status_code == 200 and again.json()["version"] == 3


async def concurrent_changes_here(client, subject_ids: list[str], action: str = "grant") -> list:
    """Writes started together (on the app's own loop), so that they meet in the batcher."""
    service = client.app.state.container.subject_service
    return await asyncio.gather(*(
        service.change_consents(s, [Change(purpose="marketing", action=action)], "api", None, "admin:test")
        for s in subject_ids), return_exceptions=True)


async def concurrent_changes(client, subject_ids: list[str], action: str = "grant") -> list:
    return await on_app_loop(client, concurrent_changes_here, client, subject_ids, action)


async def test_concurrent_writes_are_committed_together(pg_settings):
    async with AsyncTestClient(create_app(pg_settings)) as client:
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
        batcher = client.app.state.container.batcher
        before = batcher.batches, batcher.writes
        subject_ids = [f"group-{n}" for n in range(40)]
        answers = await concurrent_changes(client, subject_ids)
        assert [a.version for a in answers] == [1] * 40
        statements, writes = batcher.batches - before[0], batcher.writes - before[1]
        assert writes == 40 and statements < 40, (statements, writes)
        for subject_id, answer in zip(subject_ids, answers, strict=True):
            state = (await client.get(f"/v1/subjects/{subject_id}/consents", headers=ADMIN)).json()
            assert state["version"] == 1 and state["position"] == answer.position
            assert state["consents"][0]["status"] == "granted"
        report = await on_app_loop(client, verify_log, client.app.state.container.database)
        assert report.intact and report.events >= 40


async def test_a_conflict_in_a_batch_fails_only_its_writer_who_then_retries(pg_settings):
    first, second = await two_processes(pg_settings)
    async with first as a, second as b:
        others = [f"known-{n}" for n in range(20)]
        for subject_id in ["stale", *others]:  # all remembered by A at version 1
            await a.post(f"/v1/subjects/{subject_id}/consents", headers=ADMIN, json=write())
        await b.post("/v1/subjects/stale/consents", headers=ADMIN, json=write("withdraw"))  # A does not know
        with counted_queries(a) as statements:
            answers = await concurrent_changes(a, ["stale", *others], action="object")
        assert not [x for x in answers if isinstance(x, BaseException)], answers
        assert answers[0].version == 3 and [x.version for x in answers[1:]] == [2] * 20
        # Only the writer whose append was refused read its subject again; the others were committed as sent.
        assert len([s for s in statements if "FROM subjects" in s]) == 1, statements
        assert await history_versions(a, "stale") == [1, 2, 3]
        report = await on_app_loop(a, verify_log, a.app.state.container.database)
        assert report.intact


async def test_objects_built_at_start_up_are_left_out_of_full_collections_until_shutdown(settings):
    before = gc.get_threshold()
    async with AsyncTestClient(create_app(settings)):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == 10_000
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


@pytest.mark.parametrize("fast_writes", [True, False])
async def test_the_thin_layer_answers_consent_changes_and_nothing_else(settings, monkeypatch, fast_writes):
    answered = []
    change = fast_consents._change

    async def counted(*args):
        answered.append(args[2])  # the subject id
        return await change(*args)

    monkeypatch.setattr(fast_consents, "_change", counted)
    async with AsyncTestClient(create_app(msgspec.structs.replace(settings, fast_writes=fast_writes))) as client:
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
        assert (await client.post("/v1/subjects/fay/consents", headers=ADMIN, json=write())).status_code == 200
        assert (await client.get("/v1/subjects/fay/consents", headers=ADMIN)).status_code == 200
        assert (await client.post("/v1/subjects/fay/erase", headers=ADMIN)).status_code == 200
    assert answered == (["fay"] if fast_writes else [])


def raw_append(subject_id: str, stream_id: str | None = None) -> SubjectWrite:
    """A first write of a subject, rows as the store makes them (the batcher does not read them)."""
    now = datetime.now(UTC)
    event = {"event_id": uuid.uuid4(), "stream_id": stream_id or f"subject:{subject_id}", "stream_version": 1,
             "type": "consent.granted", "data": {}, "metadata": {"actor": "system"}, "recorded_at": now,
             "hash": bytes(32)}
    return SubjectWrite(subject_id=subject_id, expected_version=0, events=[event], version=1, global_opt_out=False,
                        consents=[ConsentRecord(purpose="marketing", partner=None, scopes=None, status="granted",
                                                expires_at=None, purpose_version=1, updated_at=now)],
                        pseudonyms={}, new_key=None, erased=False, at=now)


async def test_a_value_the_database_refuses_fails_only_its_own_write(postgresql_url):
    await empty_tables(postgresql_url)
    database = Database(postgresql_url, pool_size=5)  # a batcher with one connection: one statement in flight
    batcher = WriteBatcher(database)
    try:
        writes = [raw_append(f"ok-{n}") for n in range(6)]
        writes.insert(3, raw_append("too-long", stream_id="subject:" + "x" * 300))  # events.stream_id: 200 at most
        answers = await asyncio.gather(*(batcher.append(w) for w in writes), return_exceptions=True)
        assert isinstance(answers[3], DBAPIError) and not isinstance(answers[3], IntegrityError)
        assert all(isinstance(a, list) and len(a) == 1 for n, a in enumerate(answers) if n != 3), answers
        async with database.reading() as conn:
            stored = (await conn.execute(sa.text("SELECT subject_id FROM subjects ORDER BY 1"))).scalars().all()
        assert stored == [f"ok-{n}" for n in range(6)]
    finally:
        await database.dispose()


@pytest.mark.parametrize("thin", [True, False], ids=["fast", "litestar"])
async def test_a_database_gone_is_a_503_problem_on_the_hot_routes(thin):
    url = await create_postgres_database()
    await asyncio.to_thread(migrate.upgrade, url)
    settings = Settings(database_url=url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS, scheduler_interval=0,
                        checkpoint_interval=0, fast_writes=thin, fast_decisions=thin)
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
            await client.post("/v1/subjects/gus/consents", headers=ADMIN, json=write())  # remembered by the cache
            await drop_postgres_database(url)
            for subject_id in ("gus", "hal"):  # a write without a read, and one that needs a read
                answer = await client.post(f"/v1/subjects/{subject_id}/consents", headers=ADMIN, json=write("object"))
                assert answer.status_code == 503 and answer.json()["code"] == "unavailable", answer.text
            decision = await client.post("/v1/decisions", headers=ADMIN, json={
                "subject_id": "ivy", "purpose": "marketing", "scopes": ["profile"], "partner": "acme"})
            assert decision.status_code == 503 and decision.json()["code"] == "unavailable", decision.text
    finally:
        await drop_postgres_database(url)


async def test_more_first_writes_at_once_than_the_pool_has_connections_all_land(pg_settings):
    """Each first write holds a pooled connection (its read) while it waits for its batch: the batcher
    must not need one of those (it has connections of its own), or all of them wait for the pool timeout."""
    async with AsyncTestClient(create_app(pg_settings)) as client:
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
        subject_ids = [f"crowd-{n}" for n in range(150)]  # the shared pool holds 32 + 16

        async def bounded():
            return await asyncio.wait_for(concurrent_changes_here(client, subject_ids), timeout=20)

        answers = await on_app_loop(client, bounded)
        assert [getattr(a, "version", a) for a in answers] == [1] * 150
