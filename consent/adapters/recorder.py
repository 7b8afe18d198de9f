"""The event log as one unit of work sees it: the interface every backend implements.

A backend is a `Recorder` subclass: `SqliteRecorder` (consent/adapters/sqlite.py), `PostgresRecorder`
(consent/adapters/postgres.py), both on `SqlRecorder` (consent/adapters/sql_recorder.py), and
`MemoryRecorder` (consent/adapters/memory.py). One is chosen at start (consent/bootstrap.py); the same
contract tests run on all three (tests/integration/test_recorders.py).

What the log does for everyone (chaining, sealing, opening personal fields) is written here once; a
backend only stores and finds rows: `_insert`, `_hash_at`, `_stream_rows`, `_rows_from`, `_row_at`,
`_key_rows`, `stream_version` and `write_subject`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from consent.adapters.subject_keys import KeyRow, SubjectKeys, opened, sealed_subjects
from consent.adapters.write_record import SubjectWrite, event_rows, recorded_events
from consent.app.ports import RecordedEvent
from consent.domain.errors import VersionConflict
from consent.domain.events import Event, event_from_data, without_personal
from consent.domain.hash_chain import GENESIS
from consent.domain.subject import SubjectConsents

# Actors whose events are not governance's to audit (consent/domain/events.py has the others).
NOT_AUDITED = ("subject", "system")


class SubjectHead(NamedTuple):
    """What a write to a subject starts from: its state, the hash its next event chains to, its data key."""

    state: SubjectConsents
    head_hash: bytes | None  # None: the stream is empty
    key_row: KeyRow | None


class Recorder:
    def __init__(self, keys: SubjectKeys) -> None:
        self.keys = keys
        # stream -> (version, hash) of its last event as read or written here: the next append chains to it.
        self._heads: dict[str, tuple[int, bytes]] = {}

    # The interface

    async def append(self, stream_id: str, expected_version: int, new_events: list[Event],
                     actor: str) -> list[RecordedEvent]:
        """Append at `expected_version` (VersionConflict if the stream is elsewhere), without a projection."""
        rows = event_rows(await self.previous_hash(stream_id, expected_version), stream_id, expected_version,
                          new_events, actor, datetime.now(UTC))
        positions = await self._insert(rows)
        self.remember_head(rows[-1])
        return recorded_events(rows, positions, new_events)

    async def write_subject(self, write: SubjectWrite) -> list[int]:
        """Store a subject write whole (events, projections, pseudonyms, key; an erasure's deletions);
        VersionConflict if its stream is no longer at `write.expected_version`. The events' positions."""
        raise NotImplementedError

    async def read_subject(self, subject_id: str) -> SubjectHead:
        raise NotImplementedError

    async def read_stream(self, stream_id: str, after: int, limit: int) -> list[RecordedEvent]:
        """Events after position `after`, personal fields opened (or `[erased]` once the subject was erased)."""
        rows = await self._stream_rows(stream_id, after, limit)
        return [_recorded(row, data) for row, data in zip(rows, await self._readable(rows), strict=True)]

    async def read_audit(self, after: int, limit: int) -> list[tuple[RecordedEvent, str]]:
        """Events past position `after` whose actor is an administrator or a partner, with that actor."""
        rows = await self._rows_from(after, limit, audited=True)
        return [(_recorded(row, data), row.metadata["actor"])
                for row, data in zip(rows, await self._readable(rows), strict=True)]

    async def event_at(self, stream_id: str, position: int) -> RecordedEvent | None:
        """The stream's event at `position`, without its personal fields (checks that must not need a key)."""
        row = await self._row_at(stream_id, position)
        return None if row is None else _recorded(row, without_personal(row.data))

    async def stream_version(self, stream_id: str) -> int:
        raise NotImplementedError

    async def key_row(self, subject_id: str) -> KeyRow | None:
        return (await self._key_rows([subject_id])).get(subject_id)

    # Shared by every backend

    async def previous_hash(self, stream_id: str, expected_version: int) -> bytes:
        """The hash of the stream's event at `expected_version`, read with the state if it was."""
        if expected_version == 0:
            return GENESIS
        head = self._heads.get(stream_id)
        if head is not None and head[0] == expected_version:
            return head[1]
        found = await self._hash_at(stream_id, expected_version)
        if found is None:  # the stream is not where the caller read it: reload and retry
            raise VersionConflict(stream_id, expected_version)
        return found

    def remember_head(self, row: dict[str, Any]) -> None:
        """The stream's last event is this row (just written, or read with the state)."""
        self._heads[row["stream_id"]] = (row["stream_version"], row["hash"])

    async def _readable(self, rows: list[Any]) -> list[dict[str, Any]]:
        stored = await self._key_rows(sealed_subjects(rows))
        return [opened(self.keys, stored, row) for row in rows]

    # What each backend stores and finds (rows carry the `events` table's columns as attributes)

    async def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        """Store event rows; their positions. VersionConflict if a (stream, version) is taken."""
        raise NotImplementedError

    async def _hash_at(self, stream_id: str, version: int) -> bytes | None:
        raise NotImplementedError

    async def _stream_rows(self, stream_id: str, after: int, limit: int) -> list[Any]:
        raise NotImplementedError

    async def _rows_from(self, after: int, limit: int, audited: bool) -> list[Any]:
        raise NotImplementedError

    async def _row_at(self, stream_id: str, position: int) -> Any:
        raise NotImplementedError

    async def _key_rows(self, subject_ids: set[str] | list[str]) -> dict[str, KeyRow]:
        raise NotImplementedError


def _recorded(row: Any, data: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(event_id=row.event_id, stream_id=row.stream_id, stream_version=row.stream_version,
                         position=row.position, event=event_from_data(row.type, data), recorded_at=row.recorded_at)
