"""The use cases on the in-memory store: no database, no server, milliseconds a test."""

from __future__ import annotations

import functools
from datetime import timedelta

import pytest

from consent.adapters.memory import MemoryStore, MemoryUnitOfWork
from consent.adapters.memory_bus import InProcessBus
from consent.adapters.write_cache import SubjectWriteCache
from consent.app.audit import AuditService
from consent.app.catalog_service import CatalogService
from consent.app.ports import RecordedEvent
from consent.app.subject_service import SubjectService
from consent.app.writing import Publisher
from consent.domain import catalog as cat
from consent.domain.catalog import Catalog
from consent.domain.errors import Conflict, NotFound, VersionConflict
from consent.domain.events import (
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
    SubjectErased,
    SubjectHistoryRead,
    event_type,
)
from consent.domain.streams import subject_stream
from consent.domain.subject import Change
from tests.conftest import FakeClock

MARKETING = cat.PurposeSpec(title="Marketing", description="Offers", legal_basis="consent", retention="P30D")
GRANT = [Change(purpose="marketing", action="grant")]


class World:
    """The services of one process over one in-memory store, with what they published."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.clock = FakeClock()
        self.published: list[RecordedEvent] = []
        bus = InProcessBus()
        bus.subscribe(self._heard)
        self.unit_of_work = functools.partial(MemoryUnitOfWork, self.store, write_cache=SubjectWriteCache(10))
        self.publisher = Publisher(bus)
        self.catalogs = CatalogService(self.unit_of_work, self.publisher, self.clock, Catalog())
        self.subjects = SubjectService(self.unit_of_work, self.publisher, self.clock, self.catalogs.catalog)
        self.audits = AuditService(self.unit_of_work, self.publisher, self.clock)

    async def _heard(self, events: list[RecordedEvent]) -> None:
        self.published += events

    def published_types(self) -> list[str]:
        return [event_type(r.event) for r in self.published]


async def new_world() -> World:
    """A catalog of one consent purpose, two scopes and a partner allowed one of them."""
    world = World()
    await world.catalogs.put_purpose("marketing", MARKETING, False, "admin:ops")
    for scope in ("email", "phone"):
        await world.catalogs.put_scope(scope, cat.ScopeSpec(title=scope, description="", sensitivity="low"),
                                       "admin:ops")
    await world.catalogs.put_partner("acme", cat.PartnerSpec(name="Acme", status="active",
                                                             data_uses={"marketing": ("email",)}), "admin:ops")
    world.published.clear()
    return world


@pytest.fixture
async def world() -> World:
    return await new_world()


async def test_a_catalog_write_is_applied_here_and_published_and_a_repeat_writes_nothing():
    world = World()
    first = await world.catalogs.put_purpose("marketing", MARKETING, False, "admin:ops")
    again = await world.catalogs.put_purpose("marketing", MARKETING, False, "admin:ops")
    assert (first.created, again.created) == (True, False)
    assert world.catalogs.catalog.purposes["marketing"].title == "Marketing"
    assert world.published_types() == ["purpose.defined"]
    assert world.publisher.appended == {"purpose.defined": 1}


async def test_another_process_reads_the_catalog_and_refreshes_only_newer_entities(world):
    other = World(world.store)
    await other.catalogs.reload()
    assert set(other.catalogs.catalog.partners) == {"acme"}
    await world.catalogs.change_partner_status("acme", "suspend", "admin:ops")
    await other.catalogs.refresh("partner:acme", 1)  # an old version: nothing to read
    assert other.catalogs.catalog.partners["acme"].status == "active"
    await other.catalogs.refresh("partner:acme", 2)
    assert other.catalogs.catalog.partners["acme"].status == "suspended"


async def test_a_status_change_of_an_unknown_partner_is_not_found(world):
    with pytest.raises(NotFound):
        await world.catalogs.change_partner_status("nobody", "suspend", "admin:ops")


async def test_a_consent_change_is_stored_published_and_answered(world):
    answer = await world.subjects.change_consents("ann", GRANT, "api", None, "subject")
    assert answer.version == 1 and [c.status for c in answer.consents] == ["granted"]
    assert world.published_types() == ["subject.granted"]
    assert (await world.subjects.subject_consents("ann")).version == 1
    history = await world.subjects.history("ann", 0, 10)
    assert [e.type for e in history.events] == ["subject.granted"] and history.next_after is None


async def test_an_idempotency_key_gives_the_first_answer_again_and_refuses_another_body(world):
    key = ("k1", "body-hash")
    first = await world.subjects.change_consents("bob", GRANT, "api", None, "subject", idempotency=key)
    again = await world.subjects.change_consents("bob", GRANT, "api", None, "subject", idempotency=key)
    assert again == first and len(world.published) == 1
    with pytest.raises(Conflict) as refused:
        await world.subjects.change_consents("bob", GRANT, "api", None, "subject", idempotency=("k1", "other"))
    assert refused.value.code == "idempotency_key_reused"


async def test_if_match_on_a_stale_version_is_refused_without_a_retry(world):
    await world.subjects.change_consents("cy", GRANT, "api", None, "subject")
    withdraw = [Change(purpose="marketing", action="withdraw")]
    with pytest.raises(VersionConflict):
        await world.subjects.change_consents("cy", withdraw, "api", None, "subject", expected_version=0)
    assert (await world.subjects.subject_consents("cy")).version == 1


async def test_a_write_that_loses_a_race_is_run_again_on_fresh_state(world):
    other = World(world.store)  # another process: its own caches, the same log
    await other.catalogs.reload()
    await world.subjects.change_consents("dee", GRANT, "api", None, "subject")  # remembered by world's cache
    await other.subjects.change_consents("dee", [Change(purpose="marketing", action="withdraw")], "api", None,
                                         "subject")
    answer = await world.subjects.change_consents("dee", [Change(purpose="marketing", action="object")], "api",
                                                  None, "subject")
    assert answer.version == 3
    assert [e.stream_version for e in (await world.subjects.history("dee", 0, 10)).events] == [1, 2, 3]


async def test_grants_fall_due_and_expire_with_an_event(world):
    due = [Change(purpose="marketing", action="grant", expires_at=world.clock.now() + timedelta(hours=1))]
    await world.subjects.change_consents("eve", due, "api", None, "subject")
    assert await world.subjects.expire_due_grants() == 0
    world.clock.advance(hours=2)
    assert await world.subjects.expire_due_grants() == 1
    assert isinstance(world.published[-1].event, ConsentExpired)
    assert await world.subjects.expire_due_grants() == 0


async def test_terminating_a_partner_withdraws_its_grants(world):
    grant = [Change(purpose="marketing", action="grant", partner="acme", scopes=("email",))]
    await world.subjects.change_consents("fay", grant, "api", None, "subject")
    await world.catalogs.change_partner_status("acme", "terminate", "admin:ops")
    assert await world.subjects.withdraw_grants_of_terminated_partners() == 1
    withdrawn = world.published[-1]
    assert isinstance(withdrawn.event, ConsentWithdrawn) and withdrawn.stream_id == subject_stream("fay")


async def test_a_contract_past_its_end_suspends_the_partner(world):
    spec = cat.PartnerSpec(name="Old", status="active", data_uses={"marketing": ("email",)},
                           contract_ends_at=world.clock.now() + timedelta(days=1))
    await world.catalogs.put_partner("old", spec, "admin:ops")
    assert await world.catalogs.suspend_partners_past_contract() == 0
    world.clock.advance(days=2)
    assert await world.catalogs.suspend_partners_past_contract() == 1
    assert world.catalogs.catalog.partners["old"].status == "suspended"


async def test_an_erasure_is_recorded_once_and_answered_again(world):
    await world.subjects.change_consents("gus", GRANT, "api", None, "subject")
    first = await world.subjects.erase_subject("gus", "admin:ops")
    again = await world.subjects.erase_subject("gus", "admin:ops")
    assert again == first
    assert [type(r.event) for r in world.published] == [ConsentGranted, SubjectErased]
    assert (await world.subjects.subject_consents("gus")).consents == []


async def test_a_history_read_by_an_administrator_is_audited(world):
    await world.subjects.change_consents("hal", GRANT, "api", None, "subject")
    await world.audits.record_history_read("hal", "admin:ops")
    audit = await world.audits.audit(0, 10)
    assert [e.actor for e in audit.events][-1] == "admin:ops"
    assert isinstance(world.published[-1].event, SubjectHistoryRead)
