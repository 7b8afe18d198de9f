"""Subjects' data keys, and the personal fields of events sealed with them (consent/adapters/cipher.py).

A subject's key is made by its first write that carries personal data, in the same statement (or
transaction) as the events, and kept wrapped in `subject_keys`. Erasure deletes the row: what the
key sealed reads as ERASED from then on, while the log's rows never change. Fields are sealed
before a row is hashed (consent/domain/hash_chain.py), so the chain covers the ciphertext and
erasure breaks no link.

The database row is the authority on which key a subject has: a write or a read uses a key only
if the row it read names it. Unwrapped keys are cached per subject (bounded, least recently used
out first) only to spare unwrapping; a cached key whose row was deleted is never used again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.cipher import (
    DataKey,
    MasterKeys,
    UnknownMasterKey,
    is_sealed,
    new_data_key,
    open_sealed,
    seal,
)
from consent.adapters.tables import subject_keys
from consent.app.lru import BoundedLRU
from consent.domain.errors import DomainError
from consent.domain.events import ERASED, PERSONAL_FIELDS, Event, SubjectErased
from consent.domain.streams import SUBJECT_PREFIX, parse_stream_id

CACHE_SIZE = 10_000

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
Sealer = Callable[[dict[str, Any], str, uuid.UUID], dict[str, Any]]


class KeyRow(NamedTuple):
    key_id: str
    wrapped_key: bytes
    master_key_id: str


def master_key_missing() -> DomainError:
    return DomainError("master_key_missing",
                       "evidence is personal data, stored only encrypted, and this server has no "
                       "CONSENT_MASTER_KEY to do so: send the change without evidence, or configure the key")


class MasterKeyUnavailable(DomainError):
    """A stored data key is wrapped by a master key this server was not given: a configuration error."""

    status = 503

    def __init__(self, master_key_id: str) -> None:
        super().__init__("master_key_unavailable",
                         f"personal data here is under master key {master_key_id}, which this server does not "
                         "have: set it as CONSENT_MASTER_KEY or in CONSENT_MASTER_KEYS_OLD")


class SubjectKeys:
    """Makes, wraps and unwraps subjects' data keys; `master` None: personal data cannot be stored."""

    def __init__(self, master: MasterKeys | None, capacity: int = CACHE_SIZE) -> None:
        self.master = master
        self._cache: BoundedLRU[str, DataKey] = BoundedLRU(capacity)

    def for_write(self, subject_id: str, stored: KeyRow | None) -> tuple[DataKey, dict[str, Any] | None]:
        """The key to seal with, and the `subject_keys` row to insert with the events when there was none."""
        if self.master is None:
            raise master_key_missing()
        if stored is not None:
            return self.unwrapped(subject_id, stored), None
        # A new key, even if one is cached: the row read says the subject has none (erased, or new).
        key = new_data_key()
        self._remember(subject_id, key)
        return key, {"subject_id": subject_id, "key_id": key.key_id, "wrapped_key": self.master.wrap(subject_id, key),
                     "master_key_id": self.master.current_id, "created_at": datetime.now(UTC)}

    def unwrapped(self, subject_id: str, stored: KeyRow) -> DataKey:
        cached = self._cache.get(subject_id)
        if cached is not None and cached.key_id == stored.key_id:
            self._cache.touch(subject_id)
            return cached
        if self.master is None:
            raise MasterKeyUnavailable(stored.master_key_id)
        try:
            key = self.master.unwrap(subject_id, stored.key_id, stored.wrapped_key, stored.master_key_id)
        except UnknownMasterKey as error:
            raise MasterKeyUnavailable(error.master_key_id) from None
        self._remember(subject_id, key)
        return key

    def forget(self, subject_id: str) -> None:
        self._cache.pop(subject_id, None)

    def _remember(self, subject_id: str, key: DataKey) -> None:
        self._cache.put(subject_id, key)


# Writing


def has_personal_data(events: Iterable[Event]) -> bool:
    return any(getattr(event, field, None) is not None for event in events for field in PERSONAL_FIELDS)


def sealer(key: DataKey) -> Sealer:
    """What turns an event's data into what is stored: each personal field sealed in place."""

    def sealed(data: dict[str, Any], stream_id: str, event_id: uuid.UUID) -> dict[str, Any]:
        stored = dict(data)
        for field in PERSONAL_FIELDS:
            if data.get(field) is not None:
                stored[field] = seal(key, _encode(data[field]), _context(stream_id, event_id, field))
        return stored

    return sealed


def _context(stream_id: str, event_id: uuid.UUID | str, field: str) -> bytes:
    """The associated data: a sealed value opens only in its own subject's stream, event and field."""
    return b"\x00".join((b"consent personal v1", stream_id.encode(), str(event_id).encode(), field.encode()))


# Reading


def sealed_subjects(rows: Iterable[Any]) -> set[str]:
    """The subjects whose keys are needed to read these event rows."""
    return {parse_stream_id(row.stream_id).id for row in rows
            if row.stream_id.startswith(SUBJECT_PREFIX) and any(is_sealed(row.data.get(f)) for f in PERSONAL_FIELDS)}


async def stored_keys(conn: AsyncConnection, subject_ids: Iterable[str]) -> dict[str, KeyRow]:
    wanted = sorted(subject_ids)
    if not wanted:
        return {}
    rows = await conn.execute(sa.select(subject_keys.c.subject_id, subject_keys.c.key_id, subject_keys.c.wrapped_key,
                                        subject_keys.c.master_key_id)
                              .where(subject_keys.c.subject_id.in_(wanted)))
    return {row.subject_id: KeyRow(row.key_id, row.wrapped_key, row.master_key_id) for row in rows}


def opened(keys: SubjectKeys, stored: dict[str, KeyRow], row: Any) -> dict[str, Any]:
    """A row's data as readers see it: each sealed field opened, or ERASED once its key is gone.

    A key that is there but does not open the value (altered bytes) raises CipherError: that is
    damage to report, not an erasure to show.
    """
    data = row.data
    if not any(is_sealed(data.get(field)) for field in PERSONAL_FIELDS):
        return data
    subject_id = parse_stream_id(row.stream_id).id
    key_row = stored.get(subject_id)
    data = dict(data)
    for field in PERSONAL_FIELDS:
        envelope = data.get(field)
        if not is_sealed(envelope):
            continue
        if key_row is None or envelope.get("kid") != key_row.key_id:
            data[field] = ERASED  # the key that sealed it was deleted (a newer one may have replaced it)
        else:
            key = keys.unwrapped(subject_id, key_row)
            data[field] = _decode(open_sealed(key, envelope, _context(row.stream_id, row.event_id, field)))
    return data


async def forget_subject(conn: AsyncConnection, subject_id: str) -> None:
    """Erasure's part in the database: the data key goes, so everything it sealed is unreadable."""
    await conn.execute(sa.delete(subject_keys).where(subject_keys.c.subject_id == subject_id))


# What a unit of work uses when it was given no keys: personal data can be neither stored nor opened.
WITHOUT_MASTER_KEY = SubjectKeys(None, capacity=0)


def forget_erased(keys: SubjectKeys, events: Iterable[Any]) -> None:
    """Another replica erased a subject: drop the unwrapped key from memory too (its row is gone already)."""
    for item in events:
        if item.stream_id.startswith(SUBJECT_PREFIX) and isinstance(item.event, SubjectErased):
            keys.forget(parse_stream_id(item.stream_id).id)
