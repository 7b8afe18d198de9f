"""The log and its projections in this process's memory: the third backend, for the use-case tests
(tests/unit/test_use_cases.py) and the shared recorder contract (tests/integration/test_recorders.py).

A unit of work holds the store alone (as SQLite's single writer does) and works on it directly; leaving
without commit puts back what it found, so its writes land together or not at all.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime
from typing import Any, NamedTuple

from consent.adapters.recorder import NOT_AUDITED, Recorder, SubjectHead
from consent.adapters.subject_keys import WITHOUT_MASTER_KEY, KeyRow, SubjectKeys
from consent.adapters.subject_repository import SubjectRepository
from consent.adapters.write_cache import SubjectWriteCache
from consent.adapters.write_record import SubjectWrite
from consent.app.ports import RecordedEvent
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.errors import VersionConflict, idempotency_key_in_flight
from consent.domain.events import Event
from consent.domain.streams import CATALOG_STREAMS, parse_stream_id, stream_of, subject_stream
from consent.domain.subject import ConsentRecord, SubjectConsents


class StoredEvent(NamedTuple):
    """A row of the log, with the `events` table's columns."""

    position: int
    event_id: Any
    stream_id: str
    stream_version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    hash: bytes


class MemoryStore:
    """What the database would hold."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.events: list[StoredEvent] = []
        self.streams: dict[str, list[int]] = {}  # stream -> positions of its events, in version order
        self.subjects: dict[str, tuple[int, int, bool]] = {}  # subject -> (version, position, global opt-out)
        self.consents: dict[str, dict[tuple[str, str | None], ConsentRecord]] = {}
        self.keys: dict[str, KeyRow] = {}
        self.pseudonyms: dict[tuple[str, str], str] = {}  # (partner, pseudonym) -> subject
        self.catalog: dict[str, tuple[Purpose | Scope | Partner, int]] = {}  # stream -> (entity, version)
        self.answers: dict[str, tuple[str, Any]] = {}  # idempotency key -> (request hash, answer)

    def snapshot(self) -> dict[str, Any]:
        return {name: copy.deepcopy(value) if name in ("streams", "consents") else copy.copy(value)
                for name, value in vars(self).items() if name != "lock"}

    def restore(self, snapshot: dict[str, Any]) -> None:
        vars(self).update(snapshot)


class MemoryUnitOfWork:
    def __init__(self, store: MemoryStore, keys: SubjectKeys | None = None,
                 write_cache: SubjectWriteCache | None = None, **_ignored: object) -> None:
        self._store = store
        self.log = MemoryRecorder(store, keys or WITHOUT_MASTER_KEY)
        self.subjects = SubjectRepository(self.log, MemoryClaims(store), write_cache)
        self.catalog = MemoryCatalog(store, self.log)
        self.idempotency = MemoryIdempotency(store)

    async def __aenter__(self) -> MemoryUnitOfWork:
        await self._store.lock.acquire()
        self._before: dict[str, Any] | None = self._store.snapshot()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._before is not None:
            self._store.restore(self._before)
        self._store.lock.release()

    async def commit(self) -> None:
        self._before = None
        self.subjects.committed()


class MemoryRecorder(Recorder):
    def __init__(self, store: MemoryStore, keys: SubjectKeys) -> None:
        super().__init__(keys)
        self._store = store

    async def read_subject(self, subject_id: str) -> SubjectHead:
        state = SubjectConsents(subject_id)
        if subject_id in self._store.subjects:
            state.version, state.position, state.global_opt_out = self._store.subjects[subject_id]
            state.records.update(self._store.consents.get(subject_id, {}))
        head = await self._hash_at(subject_stream(subject_id), state.version) if state.version else None
        return SubjectHead(state, head, self._store.keys.get(subject_id))

    async def write_subject(self, write: SubjectWrite) -> list[int]:
        store = self._store
        if write.new_key is not None and write.subject_id in store.keys:
            raise VersionConflict(write.stream_id, write.expected_version)
        positions = await self._insert(write.events)
        if write.new_key is not None:
            store.keys[write.subject_id] = write.new_key
        for partner_id, pseudonym in write.pseudonyms.items():
            store.pseudonyms.setdefault((partner_id, pseudonym), write.subject_id)
        store.subjects[write.subject_id] = (write.version, positions[-1], write.global_opt_out)
        if write.erased:
            store.consents.pop(write.subject_id, None)
            store.keys.pop(write.subject_id, None)
            store.pseudonyms = {k: s for k, s in store.pseudonyms.items() if s != write.subject_id}
        held = store.consents.setdefault(write.subject_id, {})
        for record in write.consents:
            held[(record.purpose, record.partner)] = record
        return positions

    async def stream_version(self, stream_id: str) -> int:
        return len(self._store.streams.get(stream_id, ()))

    async def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        stream_id, first = rows[0]["stream_id"], rows[0]["stream_version"]
        held = self._store.streams.setdefault(stream_id, [])
        if len(held) != first - 1:
            raise VersionConflict(stream_id, first - 1)
        positions = []
        for row in rows:
            position = len(self._store.events) + 1
            self._store.events.append(StoredEvent(position=position, **row))
            held.append(position)
            positions.append(position)
        return positions

    async def _hash_at(self, stream_id: str, version: int) -> bytes | None:
        held = self._store.streams.get(stream_id, [])
        return self._store.events[held[version - 1] - 1].hash if 0 < version <= len(held) else None

    async def _stream_rows(self, stream_id: str, after: int, limit: int) -> list[Any]:
        found = [self._store.events[p - 1] for p in self._store.streams.get(stream_id, []) if p > after]
        return found[:limit]

    async def _rows_from(self, after: int, limit: int, audited: bool) -> list[Any]:
        found = (row for row in self._store.events[after:]
                 if not audited or row.metadata["actor"] not in NOT_AUDITED)
        return [row for _, row in zip(range(limit), found, strict=False)]

    async def _row_at(self, stream_id: str, position: int) -> Any:
        if 0 < position <= len(self._store.events) and self._store.events[position - 1].stream_id == stream_id:
            return self._store.events[position - 1]
        return None

    async def _key_rows(self, subject_ids: set[str] | list[str]) -> dict[str, KeyRow]:
        return {s: self._store.keys[s] for s in subject_ids if s in self._store.keys}


class MemoryCatalog:
    def __init__(self, store: MemoryStore, recorder: Recorder) -> None:
        self._store = store
        self._recorder = recorder

    async def load_all(self) -> tuple[Catalog, dict[str, int]]:
        catalog, versions = Catalog(), {}
        for stream_id, (entity, version) in self._store.catalog.items():
            kind, ident = parse_stream_id(stream_id)
            getattr(catalog, f"{kind}s")[ident] = entity
            versions[stream_id] = version
        return catalog, versions

    async def load(self, kind: str, ident: str) -> tuple[Any, int]:
        assert kind in CATALOG_STREAMS
        return self._store.catalog.get(stream_of(kind, ident), (None, 0))

    async def head_position(self) -> int:
        return max((self._store.streams[stream_id][-1] for stream_id in self._store.catalog), default=0)

    async def save(self, stream_id: str, expected_version: int, new_events: list[Event],
                   entity: Purpose | Scope | Partner, actor: str) -> list[RecordedEvent]:
        recorded = await self._recorder.append(stream_id, expected_version, new_events, actor)
        self._store.catalog[stream_id] = (entity, recorded[-1].stream_version)
        return recorded


class MemoryClaims:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def due(self, now: datetime, limit: int) -> list[str]:
        due = sorted((r.expires_at, subject_id) for subject_id, held in self._store.consents.items()
                     for r in held.values() if r.status == "granted" and r.expires_at is not None
                     and r.expires_at <= now)
        return list(dict.fromkeys(subject_id for _, subject_id in due))[:limit]

    async def grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]:
        terminated = {entity.id for entity, _ in self._store.catalog.values()
                      if isinstance(entity, Partner) and entity.status == "terminated"}
        found = [(subject_id, r.partner) for subject_id, held in self._store.consents.items()
                 for r in held.values() if r.partner in terminated and r.status == "granted"]
        return list(dict.fromkeys(found))[:limit]


class MemoryIdempotency:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def answer(self, key: str) -> tuple[str, Any] | None:
        return self._store.answers.get(key)

    async def remember(self, key: str, request_hash: str, answer: Any) -> None:
        if key in self._store.answers:
            raise idempotency_key_in_flight()
        self._store.answers[key] = (request_hash, answer)
