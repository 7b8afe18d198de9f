"""Ports: what the use cases need from the outside world."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from msgspec import Struct

from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.events import Event
from consent.domain.subject import SubjectConsents


class RecordedEvent(Struct, frozen=True):
    """An event as the log holds it."""

    event_id: UUID
    stream_id: str
    stream_version: int
    position: int
    event: Event
    recorded_at: datetime
    # Set on a subject event about a pairwise partner: what it is published with instead of the subject id.
    pseudonym: str | None = None


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class UnitOfWork(Protocol):
    """One transaction: reads see the latest committed state, appends commit together or not at all."""

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def commit(self) -> None: ...

    async def load_subject(self, subject_id: str, cached: bool = False) -> SubjectConsents:
        """`cached`: this process's memory of its own last write may answer (a write checks it by version)."""
        ...

    async def load_catalog(self) -> tuple[Catalog, dict[str, int]]:
        """The whole catalog, with the stream version of each entity."""
        ...

    async def save_subject(self, state: SubjectConsents, expected_version: int, events: list[Event],
                           actor: str, pseudonyms: dict[str, str] | None = None) -> list[RecordedEvent]:
        """Append `events` to the subject's stream at `expected_version`; project `state` (already folded).

        `pseudonyms` ({pairwise partner: pseudonym}) go into the events' metadata, for publishing, and
        into the pseudonym mapping, in the same transaction."""
        ...

    async def claim_due_subjects(self, now: datetime, limit: int) -> list[str]:
        """Subjects with a grant past its expiry, claimed for this transaction alone."""
        ...

    async def claim_grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]:
        """(subject, partner) pairs still granted to a terminated partner, claimed likewise."""
        ...

    async def load_purpose(self, purpose_id: str) -> tuple[Purpose | None, int]: ...

    async def load_scope(self, scope_id: str) -> tuple[Scope | None, int]: ...

    async def load_partner(self, partner_id: str) -> tuple[Partner | None, int]: ...

    async def save_catalog_entity(self, stream_id: str, expected_version: int, events: list[Event],
                                  entity: Purpose | Scope | Partner, actor: str) -> list[RecordedEvent]: ...

    async def read_stream(self, stream_id: str, after: int, limit: int) -> list[RecordedEvent]:
        """Events after `after`, personal fields opened (or `[erased]` once the subject was erased)."""
        ...

    async def event_at(self, stream_id: str, position: int) -> RecordedEvent | None:
        """The stream's event at `position`, without its personal fields."""
        ...

    async def append(self, stream_id: str, expected_version: int, events: list[Event],
                     actor: str) -> list[RecordedEvent]:
        """Append to a stream that has no projection of its own (access, audit)."""
        ...

    async def stream_version(self, stream_id: str) -> int: ...

    async def read_audit(self, after: int, limit: int) -> list[tuple[RecordedEvent, str]]:
        """Events whose actor is an administrator or a partner, with that actor, oldest first."""
        ...

    async def idempotent_answer(self, key: str) -> tuple[str, Any] | None:
        """The (request hash, answer) first stored under `key`, if any."""
        ...

    async def remember_answer(self, key: str, request_hash: str, answer: Any) -> None: ...


class EventBus(Protocol):
    """Where committed events go after commit."""

    async def publish(self, events: list[RecordedEvent]) -> None: ...
