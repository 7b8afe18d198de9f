"""What a write to a subject needs, remembered from this process's last committed write to it.

A consent change reads the subject's state, the hash of its stream's last event (which the next
event chains to) and its data key row, then appends. When this process wrote the subject last,
it already knows all three: the write skips its read and costs one statement.

Safe because an append names the version it follows: if anyone appended since, the insert fails
on (stream_id, stream_version), the entry is dropped and the write is retried on a fresh read
(consent/app/writing.py). Only committed writes are remembered (a rolled-back append would leave
a version the log never had), and the feed drops entries that another process has overtaken, so a
subject written elsewhere seldom costs a failed attempt. Bounded: least recently written out first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from consent.adapters.subject_keys import KeyRow
from consent.app.lru import BoundedLRU
from consent.app.packed_state import pack, unpack
from consent.app.ports import RecordedEvent
from consent.domain.streams import SUBJECT_PREFIX
from consent.domain.subject import SubjectConsents


class WriteHead(NamedTuple):
    """A subject as its last write here left it."""

    version: int  # the state's, kept apart so that comparing it needs no unpacking
    packed: bytes  # the state, packed (consent/app/packed_state.py)
    head_hash: bytes  # hash of the stream's last event
    key_row: KeyRow | None  # its data key as stored, None: it has none


class SubjectWriteCache:
    def __init__(self, capacity: int) -> None:
        self._heads: BoundedLRU[str, WriteHead] = BoundedLRU(capacity)

    def __len__(self) -> int:
        return len(self._heads)

    def get(self, subject_id: str) -> tuple[SubjectConsents, bytes, KeyRow | None] | None:
        head = self._heads.get(subject_id)
        if head is None:
            return None
        return unpack(subject_id, head.packed), head.head_hash, head.key_row

    def put(self, state: SubjectConsents, head_hash: bytes, key_row: KeyRow | None) -> None:
        held = self._heads.get(state.subject_id)
        if self._heads.capacity <= 0 or (held is not None and held.version >= state.version):
            return  # a write committed since (commits and their reports may interleave)
        self._heads.put(state.subject_id, WriteHead(state.version, pack(state), head_hash, key_row))

    def forget(self, subject_id: str) -> None:
        self._heads.pop(subject_id, None)

    def apply(self, events: Iterable[RecordedEvent]) -> None:
        """Events another process committed: an entry they overtook would only cost a failed attempt."""
        for item in events:
            if not item.stream_id.startswith(SUBJECT_PREFIX):
                continue
            subject_id = item.stream_id[len(SUBJECT_PREFIX):]
            head = self._heads.get(subject_id)
            if head is not None and head.version < item.stream_version:
                del self._heads[subject_id]
