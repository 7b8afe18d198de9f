"""Use cases of a subject's consents: change them, erase the subject, let grants expire, read them back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from consent.app.ports import Clock, RecordedEvent, UnitOfWork
from consent.app.receipts import ReceiptIssuer, snapshot
from consent.app.subject_records import read_whole_stream
from consent.app.views import (
    ConsentChangeView,
    HistoryView,
    SubjectConsentsView,
    SubjectErasureView,
    history_event,
    subject_view,
)
from consent.app.writing import KeyedLocks, Publisher, retrying
from consent.domain.catalog import Catalog
from consent.domain.errors import Conflict, VersionConflict
from consent.domain.events import Event, Evidence, GlobalOptOutRecorded, Source, SubjectErased
from consent.domain.pseudonyms import pseudonyms_for_events
from consent.domain.streams import subject_stream
from consent.domain.subject import (
    Change,
    SubjectConsents,
    change_consents,
    expire_due,
    withdraw_for_terminated_partner,
)


class SubjectService:
    # Signs a receipt for each event a consent change appends (set at start; None: no receipts).
    receipts: ReceiptIssuer | None = None

    def __init__(self, unit_of_work: Callable[..., UnitOfWork], publisher: Publisher, clock: Clock,
                 catalog: Catalog, pseudonym_key: bytes | None = None) -> None:
        self._unit_of_work = unit_of_work
        self._publisher = publisher
        self._clock = clock
        self._catalog = catalog  # the process's catalog, kept current by CatalogService
        self._pseudonym_key = pseudonym_key  # CONSENT_PSEUDONYM_KEY: pairwise partners need it
        self._subject_locks = KeyedLocks()


    async def change_consents(self, subject_id: str, changes: list[Change], source: Source,
                              evidence: Evidence | None, actor: str, *, expected_version: int | None = None,
                              idempotency: tuple[str, str] | None = None,
                              global_opt_out: bool = False) -> ConsentChangeView:
        """Apply all changes or none; a replayed Idempotency-Key gets the first answer again."""

        async def attempt() -> ConsentChangeView:
            async with self._unit_of_work(single_write=idempotency is None) as uow:
                if idempotency is not None:
                    earlier = await uow.idempotency.answer(idempotency[0])
                    if earlier is not None:
                        if earlier[0] != idempotency[1]:
                            # A Conflict, so 409 as docs/api.md says: the body is valid, the key is taken.
                            raise Conflict("idempotency_key_reused",
                                           "this Idempotency-Key was used with another request body")
                        return msgspec.convert(earlier[1], ConsentChangeView)
                # With If-Match the client names the version: it must be checked against the database.
                state = await uow.subjects.load(subject_id, cached=expected_version is None)
                if expected_version is not None and state.version != expected_version:
                    raise VersionConflict(subject_stream(subject_id), expected_version)
                now = self._clock.now()
                new_events = self._decide(state, changes, source, evidence, now, global_opt_out)
                if not new_events and expected_version is None:
                    # "Nothing to do" from this process's memory of the subject may be stale (another replica
                    # wrote since, and its event is still on its way here): only the database may say so. An
                    # append would have caught it by version; a write that appends nothing would not.
                    state = await uow.subjects.load(subject_id)
                    new_events = self._decide(state, changes, source, evidence, now, global_opt_out)
                seen = snapshot(self._catalog) if new_events and self.receipts is not None else None
                recorded = await self._apply_and_save(uow, state, new_events, actor)
                answer = ConsentChangeView(**msgspec.structs.asdict(subject_view(state, now)), receipts=(
                    self.receipts.issue(recorded, seen or self._catalog) if self.receipts is not None else []))
                if idempotency is not None:
                    await uow.idempotency.remember(idempotency[0], idempotency[1], msgspec.to_builtins(answer))
                await uow.commit()
                await self._publisher.committed(recorded)
            return answer

        # Writers to one subject in this process take turns, so they do not fail each other's
        # version checks; writers in other processes still can, and are retried.
        async with self._subject_locks.hold(subject_id):
            return await retrying(attempt, retry=expected_version is None)

    def _decide(self, state: SubjectConsents, changes: list[Change], source: Source, evidence: Evidence | None,
                now: datetime, global_opt_out: bool) -> list[Event]:
        new_events = change_consents(state, self._catalog, changes, source, evidence, now)
        if global_opt_out and not state.global_opt_out:
            new_events.append(GlobalOptOutRecorded(occurred_at=now, source="gpc"))
        return new_events

    async def expire_due_grants(self, limit: int = 100) -> int:
        """Record the expiry of grants past their `expires_at`; returns how many events were written."""
        now = self._clock.now()
        async with self._unit_of_work() as uow:
            recorded = []
            for subject_id in await uow.subjects.claim_due(now, limit):
                state = await uow.subjects.load(subject_id)
                recorded += await self._apply_and_save(uow, state, expire_due(state, now), "system")
            await uow.commit()
            await self._publisher.committed(recorded)
        return len(recorded)

    async def withdraw_grants_of_terminated_partners(self, limit: int = 100) -> int:
        """Terminating a partner withdraws every grant to it, with an event each."""
        now = self._clock.now()
        async with self._unit_of_work() as uow:
            recorded = []
            for subject_id, partner_id in await uow.subjects.claim_grants_of_terminated_partners(limit):
                state = await uow.subjects.load(subject_id)
                recorded += await self._apply_and_save(
                    uow, state, withdraw_for_terminated_partner(state, partner_id, now), "system")
            await uow.commit()
            await self._publisher.committed(recorded)
        return len(recorded)

    async def _apply_and_save(self, uow: UnitOfWork, state: SubjectConsents, new_events: list[Event],
                              actor: str) -> list[RecordedEvent]:
        """Fold the events into the state and append them at the version the state was loaded at."""
        if not new_events:
            return []
        # Before folding: a write a pairwise partner's pseudonym cannot be computed for is refused whole.
        pseudonyms = pseudonyms_for_events(self._pseudonym_key, self._catalog, state.subject_id, new_events)
        version_before = state.version
        for event in new_events:
            state.apply(event)
        return await uow.subjects.save(state, version_before, new_events, actor, pseudonyms=pseudonyms)

    async def erase_subject(self, subject_id: str, actor: str) -> SubjectErasureView:
        """Crypto-shredding: the subject's data key is deleted (its events' personal fields become unreadable),
        `subject.erased` is appended and the read models are cleared, in one transaction. Appending at the
        version read makes a concurrent write fail and retry after the erasure, never slip past it.

        Idempotent: while the erasure is still the stream's last event, it is answered again, with no new event.
        """
        stream_id = subject_stream(subject_id)

        async def attempt() -> SubjectErasureView:
            async with self._unit_of_work() as uow:
                state = await uow.subjects.load(subject_id)
                last = await uow.log.event_at(stream_id, state.position) if state.version else None
                if last is not None and isinstance(last.event, SubjectErased):
                    return SubjectErasureView(subject_id=subject_id, erased_at=last.event.occurred_at,
                                              position=last.position)
                erased = SubjectErased(occurred_at=self._clock.now())
                recorded = await self._apply_and_save(uow, state, [erased], actor)
                await uow.commit()
                await self._publisher.committed(recorded)
            return SubjectErasureView(subject_id=subject_id, erased_at=erased.occurred_at,
                                      position=recorded[-1].position)

        async with self._subject_locks.hold(subject_id):
            return await retrying(attempt)

    async def record_global_opt_out(self, subject_id: str, actor: str) -> None:
        await self.change_consents(subject_id, [], "gpc", None, actor, global_opt_out=True)

    async def subject_consents(self, subject_id: str) -> SubjectConsentsView:
        return subject_view(await self.state(subject_id), self._clock.now())

    async def state(self, subject_id: str) -> SubjectConsents:
        """The subject's consents as the log has them now (the privacy center builds its page from them)."""
        async with self._unit_of_work() as uow:
            return await uow.subjects.load(subject_id)

    async def state_at(self, subject_id: str, at: datetime) -> SubjectConsents:
        """The subject's consents as they stood at `at`: its stream folded up to that moment (time travel).
        Built from the log alone, so a rebuilt database answers the same."""
        state = SubjectConsents(subject_id)
        async with self._unit_of_work() as uow:
            for recorded in await read_whole_stream(uow, subject_stream(subject_id)):
                if recorded.event.occurred_at > at:
                    break
                state.apply(recorded.event)
                state.position = recorded.position
        return state

    async def history(self, subject_id: str, after: int, limit: int) -> HistoryView:
        async with self._unit_of_work() as uow:
            recorded = await uow.log.read_stream(subject_stream(subject_id), after, limit)
        return HistoryView(subject_id=subject_id, events=[history_event(r) for r in recorded],
                           next_after=recorded[-1].position if len(recorded) == limit else None)
