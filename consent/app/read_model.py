"""What decisions read: subjects' consent states, cached in memory and kept current by the event feed.

The cache is bounded (least recently used out first) and holds states packed small
(consent/app/packed_state.py), so that its size, not the number of subjects, sets a replica's
memory, at about 0.8 KB a subject. Every committed event reaches
`apply`, which folds it into a cached state of the previous version or drops the
entry, so a cached state is never older than the feed; `position` is how far the
feed has been applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Protocol

import msgspec

from consent.app.lru import BoundedLRU
from consent.app.packed_state import pack, packed_version, unpack, unpack_for_reading
from consent.app.ports import RecordedEvent
from consent.domain.events import SubjectErased
from consent.domain.streams import SUBJECT_PREFIX, UNRESOLVED, stream_of, subject_stream
from consent.domain.subject import SubjectConsents

RECENT_LIMIT = 65_536


class SubjectReader(Protocol):
    async def load_subjects(self, subject_ids: list[str]) -> dict[str, SubjectConsents]: ...

    async def head_position(self) -> int: ...


class PseudonymReader(Protocol):
    async def load_pseudonymous(self, partner_id: str, pseudonyms: list[str]) -> dict[str, SubjectConsents]:
        """By pseudonym, the state of the subject each stands for, in one query; unknown ones left out."""
        ...


class SubjectCache:
    def __init__(self, reader: SubjectReader, capacity: int = 100_000,
                 pseudonyms: PseudonymReader | None = None, followed_by_feed: bool = False) -> None:
        self._reader = reader
        # With a feed (replicas), `position` is what the feed has delivered: this process's own writes do not
        # advance it, since another replica's earlier event may still be on its way; they are remembered in
        # `_own_positions` instead, so that a client reads its own write here at once.
        self._followed_by_feed = followed_by_feed
        self._own_positions: BoundedLRU[int, None] = BoundedLRU(RECENT_LIMIT)
        # What the feed delivered, by position. The relay publishes in commit order, and a transaction that
        # commits first may hold the higher position: `position` passing P does not mean P has arrived.
        self._delivered: BoundedLRU[int, None] = BoundedLRU(RECENT_LIMIT)
        self._loaded_at = 0  # the head when this process started: every event up to it was read, not fed
        self._pseudonym_reader = pseudonyms
        # (pairwise partner, pseudonym) -> subject id: a mapping never changes, so it is never dropped
        # for staleness, only for space (least recently used out first).
        self._subject_of: BoundedLRU[tuple[str, str], str] = BoundedLRU(capacity)
        self._states: BoundedLRU[str, bytes] = BoundedLRU(capacity)  # subject id -> packed state
        # The latest stream version the feed has shown for recently written subjects, so that
        # a state read from the database while a newer event was applied is not cached.
        self._recent_versions: BoundedLRU[str, int] = BoundedLRU(RECENT_LIMIT)
        self.position = 0
        self._advanced = asyncio.Event()
        self._pending: dict[str, asyncio.Future[SubjectConsents]] = {}  # misses waiting for the next read
        self._flush_scheduled = False

    def has_applied(self, position: int) -> bool:
        """Whether the event at `position`, and what the log published before it, is applied here."""
        if not self._followed_by_feed:
            return position <= self.position  # one process: events are applied in position order
        if position <= self._loaded_at or position in self._delivered or position in self._own_positions:
            return True
        # Forgotten for space: so far behind the feed that it arrived long ago.
        oldest = next(iter(self._delivered), None) if len(self._delivered) == RECENT_LIMIT else None
        return oldest is not None and position < oldest

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the event at `position` is applied here, at most `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.has_applied(position):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            advanced = self._advanced
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(advanced.wait(), remaining)
        return True

    async def start(self) -> None:
        self.position = self._loaded_at = await self._reader.head_position()

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()
        self._subject_of.clear()

    async def get_many(self, subject_ids: Iterable[str], fresh: bool = False) -> dict[str, SubjectConsents]:
        """States of these subjects; misses (or all, when `fresh`) come from the database in one query."""
        found: dict[str, SubjectConsents] = {}
        missing: list[str] = []
        for subject_id in dict.fromkeys(subject_ids):
            packed = None if fresh else self._states.get(subject_id)
            if packed is None:
                missing.append(subject_id)
            else:
                self._states.touch(subject_id)
                found[subject_id] = unpack_for_reading(subject_id, packed)
        if missing:
            loaded = await self._load(missing)
            for subject_id, state in loaded.items():
                found[subject_id] = state
                if self._recent_versions.get(subject_id, 0) <= state.version:
                    self._put(state)
        return found

    async def _load(self, subject_ids: list[str]) -> dict[str, SubjectConsents]:
        """Read from the database, together with every other miss of this turn of the event loop.

        Under load many requests miss at once; one `= ANY(...)` query for all of them costs
        little more than one for a single subject.
        """
        loop = asyncio.get_running_loop()
        waiting = {}
        for subject_id in subject_ids:
            future = self._pending.get(subject_id)
            if future is None:
                future = self._pending[subject_id] = loop.create_future()
            waiting[subject_id] = future
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(lambda: loop.create_task(self._flush()))
        return {subject_id: await future for subject_id, future in waiting.items()}

    async def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, {}
        try:
            loaded = await self._reader.load_subjects(list(batch))
        except Exception as error:  # noqa: BLE001 - every waiter gets the failure
            for future in batch.values():
                if not future.done():
                    future.set_exception(error)
            return
        for subject_id, future in batch.items():
            if not future.done():
                future.set_result(loaded[subject_id])

    async def get(self, subject_id: str, fresh: bool = False) -> SubjectConsents:
        return (await self.get_many([subject_id], fresh))[subject_id]

    def remember_pseudonym(self, partner_id: str, pseudonym: str, subject_id: str) -> None:
        """Record a mapping known to be in the database (issued, or read from it)."""
        self._subject_of.put((partner_id, pseudonym), subject_id)

    def subject_of(self, partner_id: str, pseudonym: str) -> str | None:
        return self._subject_of.get((partner_id, pseudonym))

    async def get_pseudonymous(self, partner_id: str, pseudonyms: Iterable[str],
                               fresh: bool = False) -> dict[str, SubjectConsents | None]:
        """States of the subjects behind a pairwise partner's pseudonyms; None where none is recorded.

        A known mapping costs nothing more than `get_many`; unknown ones are read together with
        their subjects' states, in one query. A miss is not remembered: the subject may yet have
        the pseudonym issued.
        """
        found: dict[str, SubjectConsents | None] = {}
        known: dict[str, str] = {}
        unknown: list[str] = []
        for pseudonym in dict.fromkeys(pseudonyms):
            subject_id = self._subject_of.get((partner_id, pseudonym))
            if subject_id is None:
                unknown.append(pseudonym)
            else:
                self._subject_of.touch((partner_id, pseudonym))
                known[pseudonym] = subject_id
        if unknown:
            if self._pseudonym_reader is None:
                raise RuntimeError("SubjectCache was built without a PseudonymReader")
            loaded = await self._pseudonym_reader.load_pseudonymous(partner_id, unknown)
            for pseudonym in unknown:
                state = loaded.get(pseudonym)
                if state is not None:
                    self.remember_pseudonym(partner_id, pseudonym, state.subject_id)
                    state = self._newest(state, fresh)
                found[pseudonym] = state
        if known:
            states = await self.get_many(known.values(), fresh)
            found.update({pseudonym: states[subject_id] for pseudonym, subject_id in known.items()})
        return found

    def _newest(self, loaded: SubjectConsents, fresh: bool) -> SubjectConsents:
        """A state read with its mapping: cached like any other read, unless the cache holds a newer one."""
        packed = None if fresh else self._states.get(loaded.subject_id)
        if packed is not None and packed_version(packed) >= loaded.version:
            return unpack_for_reading(loaded.subject_id, packed)
        if self._recent_versions.get(loaded.subject_id, 0) <= loaded.version:
            self._put(loaded)
        return loaded

    async def apply_from_feed(self, events: list[RecordedEvent]) -> None:
        """Events other processes committed. A pairwise partner's event names its pseudonym (its stream
        id is `subject:<pseudonym>`): find the subject first, from memory or the database."""
        if any(item.pseudonym is not None for item in events):
            events = [await self._unmasked(item) for item in events]
        self.apply(events, from_feed=True)

    async def _unmasked(self, item: RecordedEvent) -> RecordedEvent:
        partner_id = getattr(item.event, "partner", None)
        if item.pseudonym is None or partner_id is None:
            return item
        subject_id = self._subject_of.get((partner_id, item.pseudonym))
        if subject_id is None and self._pseudonym_reader is not None:
            loaded = await self._pseudonym_reader.load_pseudonymous(partner_id, [item.pseudonym])
            if item.pseudonym in loaded:
                subject_id = loaded[item.pseudonym].subject_id
                self.remember_pseudonym(partner_id, item.pseudonym, subject_id)
        if subject_id is None:
            # Cannot happen (the mapping commits with the event); if it did, whichever subject
            # changed must not be answered from a stale state: forget them all.
            self._states.clear()
            return msgspec.structs.replace(item, stream_id=stream_of(UNRESOLVED, ""), pseudonym=None)
        return msgspec.structs.replace(item, stream_id=subject_stream(subject_id), pseudonym=None)

    def _forget_pseudonyms_of(self, subject_id: str) -> None:
        """Erasure deletes the subject's pseudonym mappings in the database: so here (rare, so a scan)."""
        for key in [key for key, subject in self._subject_of.items() if subject == subject_id]:
            del self._subject_of[key]

    async def database_head(self) -> int:
        """The log's head as the database has it (the feed may not have applied it yet)."""
        return await self._reader.head_position()

    async def lag(self) -> int:
        """Events the database has that this cache has not applied yet. The position is read before the
        head: events applied while the head is read would otherwise make the lag negative."""
        position = self.position
        return max(0, await self._reader.head_position() - position)

    def apply(self, events: list[RecordedEvent], from_feed: bool = False) -> None:
        """Committed events: this process's own (the in-process bus), or any replica's (`from_feed`)."""
        advances = from_feed or not self._followed_by_feed
        if events and advances:
            # Wake everyone waiting for a position, with a fresh event for the next wait.
            self._advanced.set()
            self._advanced = asyncio.Event()
        for item in events:
            if advances:
                self.position = max(self.position, item.position)
                if from_feed:
                    self._delivered.put(item.position, None)
            else:
                self._own_positions.put(item.position, None)
            if not item.stream_id.startswith(SUBJECT_PREFIX):
                continue
            subject_id = item.stream_id[len(SUBJECT_PREFIX):]
            if isinstance(item.event, SubjectErased):
                self._forget_pseudonyms_of(subject_id)
            self._recent_versions.put(subject_id, item.stream_version)
            packed = self._states.get(subject_id)
            if packed is None:
                continue
            version = packed_version(packed)
            if version >= item.stream_version:
                continue  # seen already: this process wrote it, or the feed repeats itself
            if version == item.stream_version - 1 and item.event is not None:
                state = unpack(subject_id, packed)
                state.apply(item.event)
                state.position = item.position
                self._states[subject_id] = pack(state)  # in place: a change is not a use
            else:
                del self._states[subject_id]

    def _put(self, state: SubjectConsents) -> None:
        self._states.put(state.subject_id, pack(state))
