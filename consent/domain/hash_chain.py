"""The tamper-evident log: each event's hash chains to the previous event of its stream.

hash = sha256(previous hash of the same stream || canonical encoding of the event), with
GENESIS (32 zero bytes) before a stream's first event. The encoding is recomputed from what
a row returns, never from the text a client sent, so it must not depend on anything the
database may change while storing: key order (PostgreSQL's jsonb sorts keys, SQLite keeps
them), the zone of a timestamp, or whether an integral number comes back as 1.0 or 1
(jsonb keeps numbers as `numeric`, so 1e20 returns as an int).

`position` and `transaction_id` are assigned by the database and left out; checkpoints over
the global sequence cover positions (see `CheckpointDigest`).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

GENESIS = bytes(32)

_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def canonical_event(stream_id: str, stream_version: int, event_id: uuid.UUID | str, type_: str,
                    recorded_at: datetime, data: Any, metadata: Any) -> bytes:
    """The bytes an event's hash covers: a JSON array in a fixed field order."""
    return _encode_sorted([stream_id, stream_version, str(event_id), type_, rfc3339(recorded_at),
                           _canonical_numbers(data), _canonical_numbers(metadata)])


def event_hash(previous: bytes, stream_id: str, stream_version: int, event_id: uuid.UUID | str, type_: str,
               recorded_at: datetime, data: Any, metadata: Any) -> bytes:
    """The one function every append goes through to chain an event to its stream."""
    return hashlib.sha256(
        previous + canonical_event(stream_id, stream_version, event_id, type_, recorded_at, data, metadata)).digest()


def rfc3339(moment: datetime) -> str:
    """UTC with microseconds, whatever zone the driver returned (SQLite returns none: it is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_numbers(value: Any) -> Any:
    """Integral floats become ints, as they may come back from jsonb's numeric."""
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class CheckpointDigest:
    """A checkpoint's hash: the previous checkpoint's hash, then (position, event hash) of every event in order.

    A deleted, inserted or reordered row in the range changes it.
    """

    def __init__(self, previous: bytes) -> None:
        self._digest = hashlib.sha256(previous)
        self.count = 0

    def add(self, position: int, hash_: bytes) -> None:
        self._digest.update(position.to_bytes(8, "big") + hash_)
        self.count += 1

    def hash(self) -> bytes:
        return self._digest.digest()
