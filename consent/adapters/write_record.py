"""What a write puts in the log, built once for every backend.

`event_rows` chains and seals the events of any append; `subject_write` adds what a subject write
changes beside them (its projection rows, pseudonym mappings, a new data key, an erasure). Each
recorder (consent/adapters/postgres.py, sqlite.py, memory.py) stores a record as it is, so the
hashes, the sealed fields and the projection rows are the same whichever backend holds them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from consent.adapters.subject_keys import KeyRow, Sealer
from consent.app.ports import RecordedEvent
from consent.domain.events import Event, SubjectChange, SubjectErased, event_data, event_type
from consent.domain.hash_chain import event_hash
from consent.domain.streams import subject_stream
from consent.domain.subject import ConsentRecord, SubjectConsents


def event_rows(previous_hash: bytes, stream_id: str, expected_version: int, new_events: list[Event],
               actor: str, now: datetime, pseudonyms: dict[str, str] | None = None,
               seal: Sealer | None = None) -> list[dict[str, Any]]:
    """The rows that append `new_events` to a stream, each hashed onto the one before.

    Every append goes through here, so that no row is written without its link in the chain.
    `pseudonyms` ({pairwise partner: pseudonym}) go into the metadata, for the relay to publish.
    `seal` encrypts personal fields before the hash, so that the chain covers what is stored.
    """
    metadata: dict[str, Any] = {"actor": actor, "pseudonyms": pseudonyms} if pseudonyms else {"actor": actor}
    rows = []
    for version, event in enumerate(new_events, start=expected_version + 1):
        event_id = uuid.uuid4()
        data = event_data(event) if seal is None else seal(event_data(event), stream_id, event_id)
        row = {"event_id": event_id, "stream_id": stream_id, "stream_version": version,
               "type": event_type(event), "data": data, "metadata": metadata,
               "recorded_at": now}
        row["hash"] = previous_hash = event_hash(
            previous_hash, stream_id, version, row["event_id"], row["type"], now, row["data"], row["metadata"])
        rows.append(row)
    return rows


def recorded_events(rows: list[dict[str, Any]], positions: list[int], new_events: list[Event]) -> list[RecordedEvent]:
    """The appended events as the log now holds them, at the positions the backend gave them."""
    return [RecordedEvent(event_id=row["event_id"], stream_id=row["stream_id"], stream_version=row["stream_version"],
                          position=position, event=event, recorded_at=row["recorded_at"],
                          pseudonym=published_pseudonym(event, row["metadata"]))
            for row, position, event in zip(rows, positions, new_events, strict=True)]


def published_pseudonym(event: Event, metadata: dict[str, Any]) -> str | None:
    """What a subject event about a pairwise partner is published with instead of the subject id."""
    partner_id = getattr(event, "partner", None)
    return metadata.get("pseudonyms", {}).get(partner_id) if partner_id is not None else None


class SubjectWrite(NamedTuple):
    """One write to a subject, whole: a backend stores all of it or none of it."""

    subject_id: str
    expected_version: int  # the stream's version the events follow; anything else is a VersionConflict
    events: list[dict[str, Any]]  # event rows (event_rows), sealed and chained
    version: int  # the subject's version after the write
    global_opt_out: bool
    consents: list[ConsentRecord]  # the consent records the events changed, as they are now
    pseudonyms: dict[str, str]  # {pairwise partner: pseudonym}, kept for the pseudonym lookup
    new_key: KeyRow | None  # the subject's first data key, stored with its first personal data
    erased: bool  # an erasure: the key, the projections and the pseudonym mappings go
    at: datetime

    @property
    def stream_id(self) -> str:
        return self.events[0]["stream_id"]


def subject_write(state: SubjectConsents, expected_version: int, new_events: list[Event], actor: str,
                  now: datetime, previous_hash: bytes, seal: Sealer | None = None, new_key: KeyRow | None = None,
                  pseudonyms: dict[str, str] | None = None) -> SubjectWrite:
    """The record of `new_events` appended to the subject's stream, `state` already folded over them."""
    rows = event_rows(previous_hash, subject_stream(state.subject_id), expected_version, new_events, actor, now,
                      pseudonyms, seal)
    touched = sorted({(e.purpose, e.partner) for e in new_events if isinstance(e, SubjectChange)},
                     key=lambda k: (k[0], k[1] or ""))
    return SubjectWrite(
        subject_id=state.subject_id, expected_version=expected_version, events=rows, version=state.version,
        global_opt_out=state.global_opt_out,
        consents=[record for key in touched if (record := state.records.get(key)) is not None],
        pseudonyms=pseudonyms or {}, new_key=new_key,
        erased=any(isinstance(e, SubjectErased) for e in new_events), at=now)
