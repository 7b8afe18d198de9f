"""What every use case that writes shares: retries after a lost race, turns per key, and handing
committed events on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from consent.app.ports import EventBus, RecordedEvent
from consent.domain.errors import VersionConflict
from consent.domain.events import event_type

T = TypeVar("T")

# A command without If-Match that loses a race is re-run on fresh state this many times.
ATTEMPTS = 3


async def retrying(attempt: Callable[[], Awaitable[T]], retry: bool = True) -> T:
    """Run `attempt` again on a VersionConflict (another writer appended first), up to ATTEMPTS times."""
    for remaining in range(ATTEMPTS - 1, -1, -1):
        try:
            return await attempt()
        except VersionConflict:
            if not retry or remaining == 0:
                raise
    raise AssertionError("unreachable")


class Publisher:
    """Hands committed events to the bus, counting them by type (GET /metrics)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.appended: dict[str, int] = {}

    async def committed(self, recorded: list[RecordedEvent]) -> None:
        """Called before the unit of work is left, so that where writes are serialised (SQLite)
        in-process subscribers see events in commit order."""
        for item in recorded:
            kind = event_type(item.event)
            self.appended[kind] = self.appended.get(kind, 0) + 1
        await self._bus.publish(recorded)


class KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, list] = {}  # key -> [lock, holders and waiters]

    def hold(self, key: str) -> _Held:
        return _Held(self._locks, key)


class _Held:
    """`async with locks.hold(key)`, as a plain class: it is on every consent write, where a generator-based
    context manager costs several times more."""

    __slots__ = ("_locks", "_key", "_entry")

    def __init__(self, locks: dict[str, list], key: str) -> None:
        self._locks, self._key = locks, key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = [asyncio.Lock(), 0]
        self._entry = entry
        entry[1] += 1
        try:
            await self._entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._leave()

    def _leave(self) -> None:
        self._entry[1] -= 1
        if self._entry[1] == 0:
            del self._locks[self._key]
