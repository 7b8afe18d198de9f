"""Use cases: load a stream, run a domain command, append with the expected version, publish after commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import msgspec

from consent.app.ports import Clock, EventBus, RecordedEvent, UnitOfWork
from consent.app.receipts import ReceiptIssuer, snapshot
from consent.app.views import (
    AuditView,
    ConsentChangeView,
    HistoryView,
    SubjectConsentsView,
    SubjectErasureView,
    audit_entry,
    history_event,
    subject_view,
)
from consent.domain import catalog as cat
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.errors import Conflict, NotFound, VersionConflict
from consent.domain.events import (
    Event,
    Evidence,
    GlobalOptOutRecorded,
    Source,
    SubjectErased,
    SubjectHistoryRead,
    event_type,
)
from consent.domain.pseudonyms import key_missing, pseudonyms_for_events
from consent.domain.streams import (
    AUDIT,
    CATALOG_STREAMS,
    PARTNER,
    PURPOSE,
    SCOPE,
    parse_stream_id,
    stream_kind,
    stream_of,
    subject_stream,
)
from consent.domain.subject import (
    Change,
    SubjectConsents,
    change_consents,
    expire_due,
    withdraw_for_terminated_partner,
)

T = TypeVar("T")
Entity = TypeVar("Entity", Purpose, Scope, Partner)
PartnerCommand = Literal["suspend", "reinstate", "terminate"]

# A command without If-Match that loses a race is re-run on fresh state this many times.
ATTEMPTS = 3


class KeyedLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, list] = {}  # key -> [lock, holders and waiters]

    def hold(self, key: str) -> _Held:
        return _Held(self._locks, key)


class _Held:
    """`async with locks.hold(key)`, as a plain class: it is on every consent write, where a generator-based
    context manager costs several times more."""

    __slots__ = ("_locks", "_key", "_entry")

    def __init__(self, locks: dict[str, list], key: str) -> None:
        self._locks, self._key = locks, key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = [asyncio.Lock(), 0]
        self._entry = entry
        entry[1] += 1
        try:
            await self._entry[0].acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry[0].release()
        self._leave()

    def _leave(self) -> None:
        self._entry[1] -= 1
        if self._entry[1] == 0:
            del self._locks[self._key]


class Written(msgspec.Struct):
    """A catalog entity after a command, and whether the command created it."""

    entity: Any
    created: bool


class ConsentService:
    # Signs a receipt for each event a consent change appends (set by the app; None: no receipts).
    receipts: ReceiptIssuer | None = None

    def __init__(self, unit_of_work: Callable[..., UnitOfWork], bus: EventBus, clock: Clock,
                 catalog: Catalog, catalog_versions: dict[str, int] | None = None,
                 pseudonym_key: bytes | None = None) -> None:
        self._unit_of_work = unit_of_work
        self._pseudonym_key = pseudonym_key  # CONSENT_PSEUDONYM_KEY: pairwise partners need it
        self._bus = bus
        self._clock = clock
        self.catalog = catalog
        self._subject_locks = KeyedLocks()
        self.appended: dict[str, int] = {}  # events this process appended, by type
        # Stream version of each catalog entity as held in memory: events arrive both from
        # this process's commits and from the feed, in either order, and only newer ones count.
        self._catalog_versions = catalog_versions if catalog_versions is not None else {}

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], retry: bool = True) -> T:
        for remaining in range(ATTEMPTS - 1, -1, -1):
            try:
                return await attempt()
            except VersionConflict:
                if not retry or remaining == 0:
                    raise
        raise AssertionError("unreachable")

    async def _after_commit(self, recorded: list[RecordedEvent]) -> None:
        """Hand committed events on. Called before the unit of work is left, so that where writes are
        serialised (SQLite) in-process subscribers see events in commit order."""
        for item in recorded:
            kind = event_type(item.event)
            self.appended[kind] = self.appended.get(kind, 0) + 1
            if stream_kind(item.stream_id) in CATALOG_STREAMS and self._is_newer(item.stream_id,
                                                                                 item.stream_version):
                self.catalog.apply(item.event)
        await self._bus.publish(recorded)

    def _is_newer(self, stream_id: str, stream_version: int) -> bool:
        if stream_version <= self._catalog_versions.get(stream_id, 0):
            return False
        self._catalog_versions[stream_id] = stream_version
        return True

    async def reload_catalog(self) -> None:
        """Read every catalog entity again (after the feed was interrupted)."""
        async with self._unit_of_work() as uow:
            catalog, versions = await uow.load_catalog()
        for stream_id, version in versions.items():
            if self._is_newer(stream_id, version):
                kind, ident = parse_stream_id(stream_id)
                _put(self.catalog, getattr(catalog, f"{kind}s")[ident])

    async def refresh_catalog_entity(self, stream_id: str, stream_version: int) -> None:
        """Another process changed a catalog entity: read it as the database has it now."""
        if stream_version <= self._catalog_versions.get(stream_id, 0):
            return
        kind, ident = parse_stream_id(stream_id)
        async with self._unit_of_work() as uow:
            load = {PURPOSE: uow.load_purpose, SCOPE: uow.load_scope, PARTNER: uow.load_partner}[kind]
            entity, version = await load(ident)
        if entity is not None and self._is_newer(stream_id, version):
            _put(self.catalog, entity)

    # Catalog

    async def put_purpose(self, purpose_id: str, spec: cat.PurposeSpec, material_change: bool,
                          actor: str) -> Written:
        return await self._write_catalog(
            stream_of(PURPOSE, purpose_id), lambda uow: uow.load_purpose(purpose_id),
            lambda current: cat.define_purpose(current, purpose_id, spec, material_change, self._clock.now()),
            lambda catalog: catalog.purposes[purpose_id], actor)

    async def retire_purpose(self, purpose_id: str, actor: str) -> Written:
        return await self._write_catalog(
            stream_of(PURPOSE, purpose_id), lambda uow: uow.load_purpose(purpose_id),
            lambda current: cat.retire_purpose(_existing(current, "purpose", purpose_id), self._clock.now()),
            lambda catalog: catalog.purposes[purpose_id], actor)

    async def put_scope(self, scope_id: str, spec: cat.ScopeSpec, actor: str) -> Written:
        return await self._write_catalog(
            stream_of(SCOPE, scope_id), lambda uow: uow.load_scope(scope_id),
            lambda current: cat.define_scope(current, scope_id, spec, self._clock.now()),
            lambda catalog: catalog.scopes[scope_id], actor)

    async def put_partner(self, partner_id: str, spec: cat.PartnerSpec, actor: str) -> Written:
        if spec.identifiers == "pairwise" and self._pseudonym_key is None:
            raise key_missing()
        return await self._write_catalog(
            stream_of(PARTNER, partner_id), lambda uow: uow.load_partner(partner_id),
            lambda current: cat.register_partner(current, partner_id, spec, self.catalog, self._clock.now()),
            lambda catalog: catalog.partners[partner_id], actor)

    async def change_partner_status(self, partner_id: str, command: PartnerCommand, actor: str) -> Written:
        decide = {"suspend": cat.suspend_partner, "reinstate": cat.reinstate_partner,
                  "terminate": cat.terminate_partner}[command]
        return await self._write_catalog(
            stream_of(PARTNER, partner_id), lambda uow: uow.load_partner(partner_id),
            lambda current: decide(_existing(current, "partner", partner_id), self._clock.now()),
            lambda catalog: catalog.partners[partner_id], actor)

    async def _write_catalog(self, stream_id: str, load: Callable[[UnitOfWork], Awaitable[tuple[Any, int]]],
                             decide: Callable[[Any], list[Event]], pick: Callable[[Catalog], Any],
                             actor: str) -> Written:
        async def attempt() -> Written:
            async with self._unit_of_work() as uow:
                current, stream_version = await load(uow)
                new_events = decide(current)
                if not new_events:
                    return Written(entity=current, created=False)
                # Fold onto a scratch catalog holding just this entity, to project its new state.
                scratch = Catalog()
                if current is not None:
                    _put(scratch, current)
                for event in new_events:
                    scratch.apply(event)
                entity = pick(scratch)
                recorded = await uow.save_catalog_entity(stream_id, stream_version, new_events, entity, actor)
                await uow.commit()
                await self._after_commit(recorded)
            return Written(entity=entity, created=current is None)

        return await self._retrying(attempt)

    # Subjects

    async def change_consents(self, subject_id: str, changes: list[Change], source: Source,
                              evidence: Evidence | None, actor: str, *, expected_version: int | None = None,
                              idempotency: tuple[str, str] | None = None,
                              global_opt_out: bool = False) -> ConsentChangeView:
        """Apply all changes or none; a replayed Idempotency-Key gets the first answer again."""

        async def attempt() -> ConsentChangeView:
            async with self._unit_of_work(single_write=idempotency is None) as uow:
                if idempotency is not None:
                    earlier = await uow.idempotent_answer(idempotency[0])
                    if earlier is not None:
                        if earlier[0] != idempotency[1]:
                            # A Conflict, so 409 as docs/api.md says: the body is valid, the key is taken.
                            raise Conflict("idempotency_key_reused",
                                           "this Idempotency-Key was used with another request body")
                        return msgspec.convert(earlier[1], ConsentChangeView)
                # With If-Match the client names the version: it must be checked against the database.
                state = await uow.load_subject(subject_id, cached=expected_version is None)
                if expected_version is not None and state.version != expected_version:
                    raise VersionConflict(subject_stream(subject_id), expected_version)
                now = self._clock.now()
                new_events = change_consents(state, self.catalog, changes, source, evidence, now)
                seen = snapshot(self.catalog) if new_events and self.receipts is not None else None
                if global_opt_out and not state.global_opt_out:
                    new_events.append(GlobalOptOutRecorded(occurred_at=now, source="gpc"))
                recorded = await self._apply_and_save(uow, state, new_events, actor)
                answer = ConsentChangeView(**msgspec.structs.asdict(subject_view(state, now)), receipts=(
                    self.receipts.issue(recorded, seen or self.catalog) if self.receipts is not None else []))
                if idempotency is not None:
                    await uow.remember_answer(idempotency[0], idempotency[1], msgspec.to_builtins(answer))
                await uow.commit()
                await self._after_commit(recorded)
            return answer

        # Writers to one subject in this process take turns, so they do not fail each other's
        # version checks; writers in other processes still can, and are retried.
        async with self._subject_locks.hold(subject_id):
            return await self._retrying(attempt, retry=expected_version is None)

    async def expire_due_grants(self, limit: int = 100) -> int:
        """Record the expiry of grants past their `expires_at`; returns how many events were written."""
        now = self._clock.now()
        async with self._unit_of_work() as uow:
            recorded = []
            for subject_id in await uow.claim_due_subjects(now, limit):
                state = await uow.load_subject(subject_id)
                recorded += await self._apply_and_save(uow, state, expire_due(state, now), "system")
            await uow.commit()
            await self._after_commit(recorded)
        return len(recorded)

    async def withdraw_grants_of_terminated_partners(self, limit: int = 100) -> int:
        """Terminating a partner withdraws every grant to it, with an event each."""
        now = self._clock.now()
        async with self._unit_of_work() as uow:
            recorded = []
            for subject_id, partner_id in await uow.claim_grants_of_terminated_partners(limit):
                state = await uow.load_subject(subject_id)
                recorded += await self._apply_and_save(
                    uow, state, withdraw_for_terminated_partner(state, partner_id, now), "system")
            await uow.commit()
            await self._after_commit(recorded)
        return len(recorded)

    async def suspend_partners_past_contract(self) -> int:
        """A partner whose contract has ended is suspended, with an event, until an admin acts."""
        now = self._clock.now()
        ended = [p.id for p in self.catalog.partners.values()
                 if p.status in ("sandbox", "active") and p.contract_ends_at is not None
                 and p.contract_ends_at <= now]
        for partner_id in ended:
            await self.change_partner_status(partner_id, "suspend", "system")
        return len(ended)

    async def _apply_and_save(self, uow: UnitOfWork, state: SubjectConsents, new_events: list[Event],
                              actor: str) -> list[RecordedEvent]:
        """Fold the events into the state and append them at the version the state was loaded at."""
        if not new_events:
            return []
        # Before folding: a write a pairwise partner's pseudonym cannot be computed for is refused whole.
        pseudonyms = pseudonyms_for_events(self._pseudonym_key, self.catalog, state.subject_id, new_events)
        version_before = state.version
        for event in new_events:
            state.apply(event)
        return await uow.save_subject(state, version_before, new_events, actor, pseudonyms=pseudonyms)

    async def erase_subject(self, subject_id: str, actor: str) -> SubjectErasureView:
        """Crypto-shredding: the subject's data key is deleted (its events' personal fields become unreadable),
        `subject.erased` is appended and the read models are cleared, in one transaction. Appending at the
        version read makes a concurrent write fail and retry after the erasure, never slip past it.

        Idempotent: while the erasure is still the stream's last event, it is answered again, with no new event.
        """
        stream_id = subject_stream(subject_id)

        async def attempt() -> SubjectErasureView:
            async with self._unit_of_work() as uow:
                state = await uow.load_subject(subject_id)
                last = await uow.event_at(stream_id, state.position) if state.version else None
                if last is not None and isinstance(last.event, SubjectErased):
                    return SubjectErasureView(subject_id=subject_id, erased_at=last.event.occurred_at,
                                              position=last.position)
                erased = SubjectErased(occurred_at=self._clock.now())
                recorded = await self._apply_and_save(uow, state, [erased], actor)
                await uow.commit()
                await self._after_commit(recorded)
            return SubjectErasureView(subject_id=subject_id, erased_at=erased.occurred_at,
                                      position=recorded[-1].position)

        async with self._subject_locks.hold(subject_id):
            return await self._retrying(attempt)

    async def record_global_opt_out(self, subject_id: str, actor: str) -> None:
        await self.change_consents(subject_id, [], "gpc", None, actor, global_opt_out=True)

    async def subject_consents(self, subject_id: str) -> SubjectConsentsView:
        async with self._unit_of_work() as uow:
            state = await uow.load_subject(subject_id)
        return subject_view(state, self._clock.now())

    async def record_history_read(self, subject_id: str, actor: str) -> None:
        """An administrator read a subject's history: governance wants to know who did, and when."""
        audit_stream = stream_of(AUDIT, actor.partition(":")[2])  # the actor is `admin:<key id>`

        async def attempt() -> None:
            async with self._unit_of_work() as uow:
                event = SubjectHistoryRead(occurred_at=self._clock.now(), subject_id=subject_id)
                recorded = await uow.append(audit_stream, await uow.stream_version(audit_stream), [event], actor)
                await uow.commit()
                await self._after_commit(recorded)

        await self._retrying(attempt)

    async def audit(self, after: int, limit: int) -> AuditView:
        async with self._unit_of_work() as uow:
            found = await uow.read_audit(after, limit)
        return AuditView(events=[audit_entry(recorded, actor) for recorded, actor in found],
                         next_after=found[-1][0].position if len(found) == limit else None)

    async def history(self, subject_id: str, after: int, limit: int) -> HistoryView:
        async with self._unit_of_work() as uow:
            recorded = await uow.read_stream(subject_stream(subject_id), after, limit)
        return HistoryView(subject_id=subject_id, events=[history_event(r) for r in recorded],
                           next_after=recorded[-1].position if len(recorded) == limit else None)


def _existing(entity: Entity | None, what: str, ident: str) -> Entity:
    if entity is None:
        raise NotFound(what, ident)
    return entity


def _put(catalog: Catalog, entity: Purpose | Scope | Partner) -> None:
    if isinstance(entity, Purpose):
        catalog.purposes[entity.id] = entity
    elif isinstance(entity, Scope):
        catalog.scopes[entity.id] = entity
    else:
        catalog.partners[entity.id] = entity
