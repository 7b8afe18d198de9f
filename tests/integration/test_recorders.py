"""The recorder contract: the same cases on every backend (memory, SQLite, PostgreSQL in a transaction, and
PostgreSQL's single-statement path through the write batcher), through the unit of work's repositories."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from consent.adapters.cipher import MasterKeys
from consent.adapters.database import Database
from consent.adapters.memory import MemoryStore, MemoryUnitOfWork
from consent.adapters.postgres import WriteBatcher
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.adapters.subject_keys import SubjectKeys
from consent.adapters.write_cache import SubjectWriteCache
from consent.app.ports import UnitOfWork
from consent.domain.catalog import Scope
from consent.domain.errors import Conflict, VersionConflict
from consent.domain.events import (
    ERASED,
    ConsentGranted,
    ConsentWithdrawn,
    Event,
    Evidence,
    ScopeDefined,
    SubjectErased,
    SubjectHistoryRead,
)
from consent.domain.key_encoding import decode_master_key
from consent.domain.streams import subject_stream
from consent.domain.subject import SubjectConsents
from tests.conftest import MASTER_KEY, empty_tables

BACKENDS = ["memory", "sqlite", "postgresql", "postgresql-batched"]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The backend's name and its migrated database (none in memory)."""
    if request.param == "memory":
        return request.param, None
    return request.param, request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgresql_url")


@pytest.fixture
async def unit_of_work(backend: tuple[str, str | None]) -> AsyncIterator[Callable[..., UnitOfWork]]:
    """A factory of units of work on one backend, all sharing one store, keys and write cache."""
    name, url = backend
    keys = SubjectKeys(MasterKeys(decode_master_key(MASTER_KEY, "k")))
    cache = SubjectWriteCache(100)
    if url is None:
        yield functools.partial(MemoryUnitOfWork, MemoryStore(), keys=keys, write_cache=cache)
        return
    await empty_tables(url)
    database = Database(url)
    batcher = WriteBatcher(database) if name == "postgresql-batched" else None
    try:
        yield functools.partial(SqlUnitOfWork, database, keys=keys, write_cache=cache, batcher=batcher,
                                single_write=batcher is not None)
    finally:
        await database.dispose()


def granted(purpose: str, evidence: Evidence | None = None) -> ConsentGranted:
    return ConsentGranted(occurred_at=NOW, purpose=purpose, partner=None, scopes=None, purpose_version=1,
                          source="api", evidence=evidence)


async def write(unit_of_work, subject_id: str, new_events: list[Event], actor: str = "subject",
                cached: bool = False) -> SubjectConsents:
    async with unit_of_work() as uow:
        state = await uow.subjects.load(subject_id, cached=cached)
        version = state.version
        for event in new_events:
            state.apply(event)
        await uow.subjects.save(state, version, new_events, actor)
        await uow.commit()
    return state


async def test_a_subject_write_is_read_back_whole(unit_of_work):
    written = await write(unit_of_work, "ann", [granted("ads"), granted("news")])
    async with unit_of_work() as uow:
        loaded = await uow.subjects.load("ann")
        history = await uow.log.read_stream(subject_stream("ann"), 0, 10)
    assert (loaded.version, loaded.position, loaded.records) == (2, written.position, written.records)
    assert [(r.stream_version, r.event) for r in history] == [(1, granted("ads")), (2, granted("news"))]
    assert history[0].position < history[1].position == written.position


async def test_a_write_at_a_stale_version_is_refused_and_leaves_nothing(unit_of_work):
    await write(unit_of_work, "bob", [granted("ads")])
    withdrawn = ConsentWithdrawn(occurred_at=NOW, purpose="ads", partner=None, scopes=None, purpose_version=1,
                                 source="api")
    async with unit_of_work() as uow:
        stale = await uow.subjects.load("bob")
    await write(unit_of_work, "bob", [withdrawn])  # someone else appended since
    with pytest.raises(VersionConflict):
        async with unit_of_work() as uow:
            stale.apply(granted("news"))
            await uow.subjects.save(stale, 1, [granted("news")], "subject")
    async with unit_of_work() as uow:
        assert [r.event for r in await uow.log.read_stream(subject_stream("bob"), 0, 10)] == [granted("ads"), withdrawn]
        assert (await uow.subjects.load("bob")).records[("ads", None)].status == "withdrawn"


async def test_the_next_write_from_the_write_cache_chains_on(unit_of_work):
    await write(unit_of_work, "cy", [granted("ads")])
    state = await write(unit_of_work, "cy", [granted("news")], cached=True)
    async with unit_of_work() as uow:
        assert (await uow.subjects.load("cy")).version == state.version == 2
        assert await uow.log.stream_version(subject_stream("cy")) == 2


async def test_personal_fields_are_opened_for_readers_until_the_subject_is_erased(unit_of_work):
    await write(unit_of_work, "dee", [granted("ads", Evidence(user_note="yes please"))])
    async with unit_of_work() as uow:
        (first,) = await uow.log.read_stream(subject_stream("dee"), 0, 10)
        assert first.event.evidence == Evidence(user_note="yes please")
        assert (await uow.log.event_at(subject_stream("dee"), first.position)).event.evidence is None
        assert await uow.log.event_at("subject:someone-else", first.position) is None
    erased = await write(unit_of_work, "dee", [SubjectErased(occurred_at=NOW)], actor="admin:ops")
    assert erased.records == {}
    async with unit_of_work() as uow:
        history = await uow.log.read_stream(subject_stream("dee"), 0, 10)
        assert history[0].event.evidence == ERASED and isinstance(history[1].event, SubjectErased)
        assert (await uow.subjects.load("dee")).records == {}
        assert await uow.log.key_row("dee") is None


async def test_a_unit_left_without_commit_leaves_nothing(unit_of_work):
    # In a transaction on every backend (a single write on PostgreSQL commits as it is sent).
    async with unit_of_work(single_write=False) as uow:
        state = await uow.subjects.load("eve")
        state.apply(granted("ads"))
        await uow.subjects.save(state, 0, [granted("ads")], "subject")
    async with unit_of_work() as uow:
        assert (await uow.subjects.load("eve")).version == 0
        assert await uow.log.read_stream(subject_stream("eve"), 0, 10) == []


async def test_appends_without_a_projection_take_the_expected_version(unit_of_work):
    read = SubjectHistoryRead(occurred_at=NOW, subject_id="ann")
    async with unit_of_work() as uow:
        first = await uow.log.append("audit:ops", 0, [read, read], "admin:ops")
        await uow.commit()
    with pytest.raises(VersionConflict):
        async with unit_of_work() as uow:
            await uow.log.append("audit:ops", 1, [read], "admin:ops")
    async with unit_of_work() as uow:
        assert await uow.log.stream_version("audit:ops") == 2
        assert [r.position for r in await uow.log.read_stream("audit:ops", 0, 10)] == [r.position for r in first]


async def test_the_audit_reads_administrators_and_partners_only_in_order(unit_of_work):
    await write(unit_of_work, "fay", [granted("ads")], actor="subject")
    await write(unit_of_work, "fay", [granted("news")], actor="partner:acme")
    read = SubjectHistoryRead(occurred_at=NOW, subject_id="fay")
    async with unit_of_work() as uow:
        await uow.log.append("audit:ops", 0, [read], "admin:ops")
        await uow.commit()
    async with unit_of_work() as uow:
        found = await uow.log.read_audit(0, 10)
        assert [actor for _, actor in found] == ["partner:acme", "admin:ops"]
        assert await uow.log.read_audit(found[0][0].position, 10) == found[1:]


async def test_catalog_entities_are_saved_with_their_stream_version(unit_of_work):
    defined = ScopeDefined(occurred_at=NOW, scope_id="email", title="Email", description="", sensitivity="low")
    scope = Scope(id="email", title="Email", description="", sensitivity="low")
    async with unit_of_work() as uow:
        await uow.catalog.save("scope:email", 0, [defined], scope, "admin:ops")
        await uow.commit()
    async with unit_of_work() as uow:
        assert await uow.catalog.load("scope", "email") == (scope, 1)
        assert await uow.catalog.load("scope", "phone") == (None, 0)
        catalog, versions = await uow.catalog.load_all()
    assert catalog.scopes == {"email": scope} and versions == {"scope:email": 1}


async def test_an_idempotency_key_keeps_its_first_answer(unit_of_work):
    async with unit_of_work() as uow:
        await uow.idempotency.remember("key", "hash", {"version": 1})
        await uow.commit()
    async with unit_of_work() as uow:
        assert await uow.idempotency.answer("key") == ("hash", {"version": 1})
        assert await uow.idempotency.answer("other") is None
        with pytest.raises(Conflict) as refused:
            await uow.idempotency.remember("key", "hash", {"version": 2})
    assert refused.value.code == "idempotency_key_in_flight"


async def test_grants_past_their_expiry_are_claimed(unit_of_work):
    expiring = ConsentGranted(occurred_at=NOW, purpose="ads", partner=None, scopes=None, purpose_version=1,
                              source="api", expires_at=NOW + timedelta(days=1))
    await write(unit_of_work, "gus", [expiring])
    await write(unit_of_work, "hal", [granted("ads")])
    async with unit_of_work() as uow:
        assert await uow.subjects.claim_due(NOW, 10) == []
        assert await uow.subjects.claim_due(NOW + timedelta(days=2), 10) == ["gus"]
