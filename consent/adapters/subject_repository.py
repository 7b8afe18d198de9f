"""Subjects as a write sees them, on any recorder: loaded with what their next append needs (from this
process's write cache when a write here was the last), saved as one `SubjectWrite`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from consent.adapters.recorder import Recorder
from consent.adapters.subject_keys import KeyRow, Sealer, has_personal_data, sealer
from consent.adapters.write_cache import SubjectWriteCache
from consent.adapters.write_record import recorded_events, subject_write
from consent.app.ports import RecordedEvent
from consent.domain.events import Event
from consent.domain.streams import subject_stream
from consent.domain.subject import SubjectConsents


class Claims(Protocol):
    """Subjects the scheduler must write to, claimed for this unit of work alone."""

    async def due(self, now: datetime, limit: int) -> list[str]: ...

    async def grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]: ...


class SubjectRepository:
    def __init__(self, recorder: Recorder, claims: Claims, write_cache: SubjectWriteCache | None = None) -> None:
        self._recorder = recorder
        self._claims = claims
        self._write_cache = write_cache
        # subject -> its data key row as read with its state (None: it has none).
        self._key_rows: dict[str, KeyRow | None] = {}
        # subject -> its state, head hash and key row after a save here: remembered once committed.
        self._saved: dict[str, tuple[SubjectConsents, bytes, KeyRow | None]] = {}

    async def load(self, subject_id: str, cached: bool = False) -> SubjectConsents:
        """`cached`: this process's memory of its own last write may answer (the append checks its version)."""
        if cached and self._write_cache is not None:
            hit = self._write_cache.get(subject_id)
            if hit is not None:
                state, head_hash, self._key_rows[subject_id] = hit
                self._recorder.remember_head({"stream_id": subject_stream(subject_id),
                                              "stream_version": state.version, "hash": head_hash})
                return state
        head = await self._recorder.read_subject(subject_id)
        if head.head_hash is not None:
            self._recorder.remember_head({"stream_id": subject_stream(subject_id),
                                          "stream_version": head.state.version, "hash": head.head_hash})
        self._key_rows[subject_id] = head.key_row
        return head.state

    async def save(self, state: SubjectConsents, expected_version: int, new_events: list[Event], actor: str,
                   pseudonyms: dict[str, str] | None = None) -> list[RecordedEvent]:
        """Append `new_events` at `expected_version` and project `state` (already folded over them).

        `pseudonyms` ({pairwise partner: pseudonym}) go into the events' metadata, for publishing, and
        into the pseudonym mapping, with the events."""
        subject_id = state.subject_id
        # Until this commits, what the cache held of the subject may or may not be the stream's head.
        if self._write_cache is not None:
            self._write_cache.forget(subject_id)
        self._saved.pop(subject_id, None)
        seal, new_key = await self._sealing(subject_id, new_events)
        previous_hash = await self._recorder.previous_hash(subject_stream(subject_id), expected_version)
        write = subject_write(state, expected_version, new_events, actor, datetime.now(UTC), previous_hash,
                              seal, new_key, pseudonyms)
        positions = await self._recorder.write_subject(write)
        state.position = positions[-1]
        self._recorder.remember_head(write.events[-1])
        if write.erased:
            self._recorder.keys.forget(subject_id)
            self._key_rows[subject_id] = None
        elif subject_id in self._key_rows:
            self._saved[subject_id] = (state, write.events[-1]["hash"], self._key_rows[subject_id])
        return recorded_events(write.events, positions, new_events)

    def committed(self) -> None:
        """The unit of work committed: what it saved is the streams' head now."""
        if self._write_cache is not None:
            for state, head_hash, key_row in self._saved.values():
                self._write_cache.put(state, head_hash, key_row)

    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        return await self._claims.due(now, limit)

    async def claim_grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]:
        return await self._claims.grants_of_terminated_partners(limit)

    async def _sealing(self, subject_id: str, new_events: list[Event]) -> tuple[Sealer | None, KeyRow | None]:
        """How these events' personal fields are sealed, and the subject's new key if it has none yet."""
        if not has_personal_data(new_events):
            return None, None
        if subject_id in self._key_rows:
            stored = self._key_rows[subject_id]
        else:
            stored = await self._recorder.key_row(subject_id)
        key, made = self._recorder.keys.for_write(subject_id, stored)
        new_key = None if made is None else KeyRow(made["key_id"], made["wrapped_key"], made["master_key_id"])
        if new_key is not None:  # what a later save in this unit of work must find (written with this one)
            self._key_rows[subject_id] = new_key
        return sealer(key), new_key
