"""Use cases of governance: who read which subject's history, and what administrators and partners did."""

from __future__ import annotations

from collections.abc import Callable

from consent.app.ports import Clock, UnitOfWork
from consent.app.views import AuditView, audit_entry
from consent.app.writing import KeyedLocks, Publisher, retrying
from consent.domain.events import SubjectHistoryRead
from consent.domain.streams import AUDIT, stream_of

CONTENDED_ATTEMPTS = 20  # each lost race is another replica's append: this many is a busy deployment


class AuditService:
    def __init__(self, unit_of_work: Callable[..., UnitOfWork], publisher: Publisher, clock: Clock) -> None:
        self._unit_of_work = unit_of_work
        self._publisher = publisher
        self._clock = clock
        # One admin key's reads all append to its one audit stream: here they take turns; against other
        # replicas they race, and a lost race only means trying again at the new head.
        self._stream_locks = KeyedLocks()

    async def record_history_read(self, subject_id: str, actor: str) -> None:
        """An administrator read a subject's history: governance wants to know who did, and when."""
        audit_stream = stream_of(AUDIT, actor.partition(":")[2])  # the actor is `admin:<key id>`

        async def attempt() -> None:
            async with self._unit_of_work() as uow:
                event = SubjectHistoryRead(occurred_at=self._clock.now(), subject_id=subject_id)
                recorded = await uow.log.append(audit_stream, await uow.log.stream_version(audit_stream), [event],
                                                actor)
                await uow.commit()
                await self._publisher.committed(recorded)

        async with self._stream_locks.hold(audit_stream):
            await retrying(attempt, attempts=CONTENDED_ATTEMPTS)

    async def audit(self, after: int, limit: int) -> AuditView:
        async with self._unit_of_work() as uow:
            found = await uow.log.read_audit(after, limit)
        return AuditView(events=[audit_entry(recorded, actor) for recorded, actor in found],
                         next_after=found[-1][0].position if len(found) == limit else None)
