"""The decision cache: misses of one event-loop turn share one read; the feed keeps cached states current."""

import asyncio
import uuid
from datetime import UTC, datetime

from consent.app.ports import RecordedEvent
from consent.app.read_model import SubjectCache
from consent.domain.events import ConsentGranted
from consent.domain.subject import SubjectConsents


class CountingReader:
    def __init__(self) -> None:
        self.reads: list[list[str]] = []

    async def load_subjects(self, subject_ids: list[str]) -> dict[str, SubjectConsents]:
        self.reads.append(sorted(subject_ids))
        await asyncio.sleep(0)
        return {s: SubjectConsents(s) for s in subject_ids}

    async def head_position(self) -> int:
        return 0


def test_concurrent_misses_share_one_read_and_hits_need_none():
    async def scenario():
        reader = CountingReader()
        cache = SubjectCache(reader, capacity=100)
        states = await asyncio.gather(*(cache.get(f"s-{n % 10}") for n in range(30)))
        assert reader.reads == [sorted(f"s-{n}" for n in range(10))]
        assert [s.subject_id for s in states] == [f"s-{n % 10}" for n in range(30)]
        await asyncio.gather(*(cache.get(f"s-{n}") for n in range(10)))
        assert len(reader.reads) == 1  # all cached now
        await cache.get("s-1", fresh=True)
        assert reader.reads[-1] == ["s-1"]  # fresh reads always go to the database

    asyncio.run(scenario())


def test_the_feed_folds_into_cached_states_and_drops_what_it_cannot_fold():
    async def scenario():
        cache = SubjectCache(CountingReader(), capacity=100)
        await cache.get("s-1")
        granted = ConsentGranted(occurred_at=datetime(2026, 1, 1, tzinfo=UTC), purpose="m", partner=None,
                                 scopes=None, purpose_version=1, source="web")

        def recorded(version: int, position: int) -> RecordedEvent:
            return RecordedEvent(uuid.uuid4(), "subject:s-1", version, position, granted, granted.occurred_at)

        cache.apply([recorded(1, 7)])
        state = await cache.get("s-1")
        assert (state.version, state.position, cache.position) == (1, 7, 7)
        cache.apply([recorded(1, 7)])  # a repeat changes nothing
        assert (await cache.get("s-1")).version == 1
        cache.apply([recorded(3, 9)])  # a gap: the entry is dropped, to be read again
        assert len(cache) == 0 and cache.position == 9

    asyncio.run(scenario())


def test_lag_is_never_negative_when_events_arrive_while_the_head_is_read():
    """/health/ready once reported "feed_lag": -55 after a burst: events applied during the head's read."""
    granted = ConsentGranted(occurred_at=datetime(2026, 1, 1, tzinfo=UTC), purpose="m", partner=None,
                             scopes=None, purpose_version=1, source="web")

    class BusyReader(CountingReader):
        """The database's head as read, while the in-process bus applies 55 newer events meanwhile."""

        async def head_position(self) -> int:
            head = cache.position
            cache.apply([RecordedEvent(uuid.uuid4(), f"subject:s-{n}", 1, head + n, granted, granted.occurred_at)
                         for n in range(1, 56)])
            return head

    cache = SubjectCache(BusyReader(), capacity=100)
    assert asyncio.run(cache.lag()) == 0
    assert cache.position == 55


def test_a_position_passed_by_the_feed_is_not_applied_until_its_own_event_arrives():
    """The relay publishes in commit order: the transaction holding position 8 may commit after the one
    holding 9. A replica that has applied 9 must not answer `min_position=8` from memory before 8 arrives."""
    granted = ConsentGranted(occurred_at=datetime(2026, 1, 1, tzinfo=UTC), purpose="m", partner=None,
                             scopes=None, purpose_version=1, source="web")

    def recorded(subject: str, position: int) -> RecordedEvent:
        return RecordedEvent(uuid.uuid4(), f"subject:{subject}", 1, position, granted, granted.occurred_at)

    async def scenario():
        cache = SubjectCache(CountingReader(), capacity=100, followed_by_feed=True)
        await cache.start()  # the head was 0
        cache.apply([recorded("a", 9)], from_feed=True)
        assert cache.position == 9 and cache.has_applied(9) and not cache.has_applied(8)
        waiting = asyncio.create_task(cache.wait_for(8, timeout=5))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        cache.apply([recorded("b", 8)], from_feed=True)
        assert await waiting and cache.has_applied(8)
        assert not await cache.wait_for(7, timeout=0.05)  # never delivered (a gap, or still on its way)
        cache.apply([recorded("c", 10)])  # this process's own write: applied here, and known to be
        assert cache.has_applied(10) and cache.position == 9

    asyncio.run(scenario())


def test_one_process_without_a_feed_applies_events_in_position_order():
    async def scenario():
        cache = SubjectCache(CountingReader(), capacity=100)
        await cache.start()
        granted = ConsentGranted(occurred_at=datetime(2026, 1, 1, tzinfo=UTC), purpose="m", partner=None,
                                 scopes=None, purpose_version=1, source="web")
        cache.apply([RecordedEvent(uuid.uuid4(), "subject:a", 1, 5, granted, granted.occurred_at)])
        assert cache.has_applied(5) and cache.has_applied(3) and not cache.has_applied(6)

    asyncio.run(scenario())
