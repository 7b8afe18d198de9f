"""What every use case that writes shares: retries after a lost race, turns per key, and handing
committed events on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from consent.app.ports import EventBus, RecordedEvent, StoreUnavailable
from consent.domain.errors import VersionConflict
from consent.domain.events import event_type

T = TypeVar("T")

# A command without If-Match that loses a race is re-run on fresh state this many times.
ATTEMPTS = 3
FIRST_PAUSE, LONGEST_PAUSE = 0.05, 0.5  # seconds between attempts while the store is unavailable


async def retrying(attempt: Callable[[], Awaitable[T]], retry: bool = True, attempts: int = ATTEMPTS) -> T:
    """Run `attempt` again on a VersionConflict (another writer appended first), up to `attempts` times, and
    while the store is unavailable (a failover), for as long as it allows: a failover costs time, not errors.

    An attempt cut off mid-write may have committed: the next one reads the subject afresh, finds its events
    and has nothing left to do (or, with If-Match, answers 409 as the version has moved)."""
    conflicts = 0
    deadline: float | None = None
    pause = FIRST_PAUSE
    while True:
        try:
            return await attempt()
        except VersionConflict:
            conflicts += 1
            if not retry or conflicts == attempts:
                raise
        except StoreUnavailable as error:
            now = time.monotonic()
            deadline = deadline or now + error.patience
            if now + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)


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
