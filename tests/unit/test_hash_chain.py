"""The canonical encoding and the chaining of event hashes: pure, no database."""

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from consent.domain.hash_chain import GENESIS, CheckpointDigest, canonical_event, event_hash, rfc3339

EVENT_ID = uuid.UUID("0b5e0c1e-8f2a-4c53-9d7e-3f1a2b3c4d5e")
AT = datetime(2026, 3, 3, 12, 0, 0, 123456, tzinfo=UTC)
DATA = {"purpose": "marketing", "partner": None, "scopes": ["orders", "profile"], "expires_at": None,
        "nested": {"b": 1, "a": [True, 0.5]}}
META = {"actor": "admin"}


def encode(**overrides):
    fields = dict(stream_id="subject:s-1", stream_version=1, event_id=EVENT_ID, type_="consent.granted",
                  recorded_at=AT, data=DATA, metadata=META) | overrides
    return canonical_event(**fields)


def test_the_encoding_is_an_array_in_a_fixed_field_order_with_sorted_keys():
    assert json.loads(encode()) == [
        "subject:s-1", 1, str(EVENT_ID), "consent.granted", "2026-03-03T12:00:00.123456Z",
        DATA, META]
    assert encode().startswith(b'["subject:s-1",1,"0b5e0c1e-8f2a-4c53-9d7e-3f1a2b3c4d5e","consent.granted",')
    assert b'{"expires_at":null,"nested":{"a":[true,0.5],"b":1},"partner":null,"purpose":' in encode()


def test_key_order_as_a_database_returns_it_does_not_matter():
    reordered = {"nested": {"a": [True, 0.5], "b": 1}, "scopes": ["orders", "profile"], "partner": None,
                 "expires_at": None, "purpose": "marketing"}
    assert list(reordered) != list(DATA)
    assert encode(data=reordered) == encode()


def test_integral_floats_equal_the_ints_jsonb_returns_but_fractions_stay():
    assert encode(data={"n": 1.0, "big": 1e20}) == encode(data={"n": 1, "big": 100000000000000000000})
    assert encode(data={"n": 1.5}) != encode(data={"n": 1})


def test_timestamps_are_utc_with_microseconds_whatever_zone_the_driver_returns():
    assert rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    in_paris = AT.astimezone(timezone(timedelta(hours=1)))
    naive_utc = AT.replace(tzinfo=None)  # SQLite returns no zone: it stores UTC
    assert encode(recorded_at=in_paris) == encode(recorded_at=naive_utc) == encode()
    assert encode(recorded_at=AT + timedelta(microseconds=1)) != encode()


def test_every_field_is_covered():
    changed = [encode(stream_id="subject:s-2"), encode(stream_version=2), encode(event_id=uuid.uuid4()),
               encode(type_="consent.withdrawn"), encode(data=DATA | {"purpose": "fraud"}),
               encode(metadata={"actor": "user"})]
    assert len({encode(), *changed}) == len(changed) + 1


def test_the_hash_is_sha256_of_the_previous_hash_and_the_encoding():
    first = event_hash(GENESIS, "subject:s-1", 1, EVENT_ID, "consent.granted", AT, DATA, META)
    assert first == hashlib.sha256(bytes(32) + encode()).digest()
    second = event_hash(first, "subject:s-1", 2, EVENT_ID, "consent.granted", AT, DATA, META)
    assert second == hashlib.sha256(first + encode(stream_version=2)).digest()
    # A different predecessor gives a different link.
    assert event_hash(GENESIS, "subject:s-1", 2, EVENT_ID, "consent.granted", AT, DATA, META) != second


def checkpoint(previous, entries):
    digest = CheckpointDigest(previous)
    for position, hash_ in entries:
        digest.add(position, hash_)
    return digest.count, digest.hash()


def test_a_checkpoint_detects_a_deleted_inserted_or_moved_event():
    entries = [(3, b"a" * 32), (4, b"b" * 32), (7, b"c" * 32)]
    count, intact = checkpoint(GENESIS, entries)
    assert count == 3
    assert checkpoint(GENESIS, entries[:1] + entries[2:])[1] != intact
    assert checkpoint(GENESIS, entries + [(8, b"d" * 32)])[1] != intact
    assert checkpoint(GENESIS, [(3, b"a" * 32), (5, b"b" * 32), (7, b"c" * 32)])[1] != intact
    assert checkpoint(GENESIS, [(3, b"b" * 32), (4, b"a" * 32), (7, b"c" * 32)])[1] != intact
    # Chained: the same range after another checkpoint hashes differently.
    assert checkpoint(intact, entries)[1] != intact
