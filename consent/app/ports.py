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


class StoreUnavailable(Exception):
    """The store could not be reached, or went away mid-way (a failover, connections cut): the use case may
    run again for `patience` seconds."""

    def __init__(self, patience: float) -> None:
        super().__init__("the store is unavailable")
        self.patience = patience


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SubjectRepository(Protocol):
    async def load(self, subject_id: str, cached: bool = False) -> SubjectConsents:
        """`cached`: this process's memory of its own last write may answer (a write checks it by version)."""
        ...

    async def save(self, state: SubjectConsents, expected_version: int, events: list[Event], actor: str,
                   pseudonyms: dict[str, str] | None = None) -> list[RecordedEvent]:
        """Append `events` to the subject's stream at `expected_version`; project `state` (already folded).

        `pseudonyms` ({pairwise partner: pseudonym}) go into the events' metadata, for publishing, and
        into the pseudonym mapping, with the events."""
        ...

    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        """Subjects with a grant past its expiry, claimed for this unit of work alone."""
        ...

    async def claim_grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]:
        """(subject, partner) pairs still granted to a terminated partner, claimed likewise."""
        ...


class CatalogRepository(Protocol):
    async def load_all(self) -> tuple[Catalog, dict[str, int]]:
        """The whole catalog, with the stream version of each entity."""
        ...

    async def load(self, kind: str, ident: str) -> tuple[Any, int]:
        """The entity of this stream kind (consent/domain/streams.py) and its stream version; (None, 0)."""
        ...

    async def save(self, stream_id: str, expected_version: int, events: list[Event],
                   entity: Purpose | Scope | Partner, actor: str) -> list[RecordedEvent]: ...

    async def head_position(self) -> int:
        """The position of the catalog's latest event (0: none yet)."""
        ...


class EventLog(Protocol):
    async def append(self, stream_id: str, expected_version: int, events: list[Event],
                     actor: str) -> list[RecordedEvent]:
        """Append to a stream that has no projection of its own (access, audit)."""
        ...

    async def read_stream(self, stream_id: str, after: int, limit: int) -> list[RecordedEvent]:
        """Events after `after`, personal fields opened (or `[erased]` once the subject was erased)."""
        ...

    async def read_audit(self, after: int, limit: int) -> list[tuple[RecordedEvent, str]]:
        """Events whose actor is an administrator or a partner, with that actor, oldest first."""
        ...

    async def event_at(self, stream_id: str, position: int) -> RecordedEvent | None:
        """The stream's event at `position`, without its personal fields."""
        ...

    async def stream_version(self, stream_id: str) -> int: ...


class IdempotentAnswers(Protocol):
    async def answer(self, key: str) -> tuple[str, Any] | None:
        """The (request hash, answer) first stored under `key`, if any."""
        ...

    async def remember(self, key: str, request_hash: str, answer: Any) -> None: ...


class UnitOfWork(Protocol):
    """One transaction holding the repositories: reads see the latest committed state, writes commit
    together or not at all (consent/adapters/sql_unit_of_work.py, consent/adapters/memory.py)."""

    subjects: SubjectRepository
    catalog: CatalogRepository
    log: EventLog
    idempotency: IdempotentAnswers

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def commit(self) -> None: ...


class EventBus(Protocol):
    """Where committed events go after commit."""

    async def publish(self, events: list[RecordedEvent]) -> None: ...
