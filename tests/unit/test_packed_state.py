"""Packed cache states: they decide exactly like full ones, fold events like them, and stay bounded."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.app.packed_state import pack, unpack, unpack_for_reading
from consent.app.ports import RecordedEvent
from consent.app.read_model import SubjectCache
from consent.domain.decision import decide
from consent.domain.events import ConsentGranted
from consent.domain.subject import ConsentRecord, SubjectConsents
from tests.unit.test_decision import _PROPERTY_CATALOG, _REQUESTABLE, NOW, subject_events

DAY = timedelta(days=1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(subject_events(), max_size=12),
    partner=st.sampled_from([None, "acme", "beta", "ending", "narrow", "sleepy", "nobody"]),
    purpose=st.sampled_from(["marketing", "ads", "monthly", "analytics", "profiling", "billing", "tax", "old"]),
    requested=st.lists(st.sampled_from(_REQUESTABLE), min_size=1, max_size=8),
    offset=st.integers(-2, 30),
)
def test_a_packed_state_decides_exactly_like_the_full_one(events, partner, purpose, requested, offset):
    state = SubjectConsents("user-1", position=41)
    for event in events:
        state.apply(event)
    now = NOW + offset * DAY
    packed = pack(state)
    for restored in (unpack_for_reading("user-1", packed), unpack("user-1", packed)):
        assert (restored.version, restored.position, restored.global_opt_out) == (
            state.version, state.position, state.global_opt_out)
        assert dict(restored.records) == state.records
        assert decide(_PROPERTY_CATALOG, restored, partner, purpose, requested, now) == decide(
            _PROPERTY_CATALOG, state, partner, purpose, requested, now)


def test_times_keep_their_instant_to_the_microsecond_in_any_zone():
    moment = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    record = ConsentRecord("m", "acme", ("profile",), "granted", moment, 3, datetime(1999, 1, 1, tzinfo=UTC))
    state = SubjectConsents("s", 2, 9, {record.key: record})
    restored = unpack_for_reading("s", pack(state)).records.get(("m", "acme"))
    assert restored == record and restored.expires_at.utcoffset() == timedelta(0)
    assert unpack_for_reading("s", pack(state)).records.get(("m", None)) is None


def test_a_subject_with_ten_consents_packs_under_a_kilobyte():
    state = SubjectConsents("s", 10, 10_000_000)
    for n in range(10):
        state.apply(ConsentGranted(occurred_at=NOW, purpose=f"purpose-{n % 3}", partner=f"partner-{n}",
                                   scopes=("orders.history", "profile.email"), purpose_version=1, source="web",
                                   expires_at=NOW + 400 * DAY))
    assert len(pack(state)) < 1000  # unpacked, such a state holds about 6 KB of objects


class Reader:
    def __init__(self) -> None:
        self.reads = 0

    async def load_subjects(self, subject_ids: list[str]) -> dict[str, SubjectConsents]:
        self.reads += 1
        return {s: SubjectConsents(s) for s in subject_ids}

    async def head_position(self) -> int:
        return 0


def test_the_cache_holds_at_most_its_capacity_least_recently_used_out_first():
    async def scenario():
        reader = Reader()
        cache = SubjectCache(reader, capacity=5)
        for n in range(20):
            await cache.get(f"s-{n}")
            await cache.get("s-0")  # kept in use: never the one to go
        assert len(cache) == 5
        reads = reader.reads
        for n in (0, 16, 17, 18, 19):
            await cache.get(f"s-{n}")
        assert reader.reads == reads  # the five most recently used are cached
        await cache.get("s-1")
        assert reader.reads == reads + 1 and len(cache) == 5

    asyncio.run(scenario())


def test_a_state_handed_out_cannot_alter_the_cached_one():
    async def scenario():
        cache = SubjectCache(Reader(), capacity=5)
        granted = ConsentGranted(occurred_at=NOW, purpose="m", partner=None, scopes=None, purpose_version=1,
                                 source="web")
        await cache.get("s-1")
        cache.apply([RecordedEvent(uuid.uuid4(), "subject:s-1", 1, 7, granted, NOW)])
        handed = await cache.get("s-1")
        handed.version, handed.position = 99, 99
        again = await cache.get("s-1")
        assert (again.version, again.position) == (1, 7)
        assert again.records.get(("m", None)).status == "granted"

    asyncio.run(scenario())
