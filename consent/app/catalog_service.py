"""Use cases of the catalog (purposes, scopes, partners), and the catalog this process holds in memory,
kept current by its own commits and by the feed of other replicas' (newer stream versions only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from consent.app.ports import Clock, RecordedEvent, UnitOfWork
from consent.app.subject_records import read_whole_stream
from consent.app.writing import Publisher, retrying
from consent.domain import catalog as cat
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.errors import NotFound
from consent.domain.events import Event, PartnerContractEnding
from consent.domain.pseudonyms import key_missing
from consent.domain.streams import CATALOG_STREAMS, PARTNER, PURPOSE, SCOPE, parse_stream_id, stream_kind, stream_of

PartnerCommand = Literal["suspend", "reinstate", "terminate"]


class Written(msgspec.Struct):
    """A catalog entity after a command, and whether the command created it."""

    entity: Any
    created: bool


class CatalogService:
    def __init__(self, unit_of_work: Callable[..., UnitOfWork], publisher: Publisher, clock: Clock,
                 catalog: Catalog, catalog_versions: dict[str, int] | None = None,
                 pseudonym_key: bytes | None = None) -> None:
        self._unit_of_work = unit_of_work
        self.publisher = publisher  # catalog documents publish what they commit through it too
        self._clock = clock
        self._pseudonym_key = pseudonym_key  # CONSENT_PSEUDONYM_KEY: pairwise partners need it
        # The one catalog of this process: its readers hold this object, which is updated in place.
        self.catalog = catalog
        # Stream version of each entity as held: events arrive both from this process's commits and from
        # the feed, in either order, and only newer ones count.
        self._versions = catalog_versions if catalog_versions is not None else {}
        # Contract ends this process knows were noticed (consent/app/scheduler.py): no need to read their stream.
        self._contract_notices: set[tuple[str, datetime]] = set()

    async def put_purpose(self, purpose_id: str, spec: cat.PurposeSpec, material_change: bool,
                          actor: str) -> Written:
        return await self._write(PURPOSE, purpose_id, actor, lambda current: cat.define_purpose(
            current, purpose_id, spec, material_change, self._clock.now()))

    async def retire_purpose(self, purpose_id: str, actor: str) -> Written:
        return await self._write(PURPOSE, purpose_id, actor, lambda current: cat.retire_purpose(
            _existing(current, "purpose", purpose_id), self._clock.now()))

    async def put_scope(self, scope_id: str, spec: cat.ScopeSpec, actor: str) -> Written:
        return await self._write(SCOPE, scope_id, actor, lambda current: cat.define_scope(
            current, scope_id, spec, self._clock.now()))

    async def put_partner(self, partner_id: str, spec: cat.PartnerSpec, actor: str) -> Written:
        if spec.identifiers == "pairwise" and self._pseudonym_key is None:
            raise key_missing()
        return await self._write(PARTNER, partner_id, actor, lambda current: cat.register_partner(
            current, partner_id, spec, self.catalog, self._clock.now()))

    async def change_partner_status(self, partner_id: str, command: PartnerCommand, actor: str) -> Written:
        decide = {"suspend": cat.suspend_partner, "reinstate": cat.reinstate_partner,
                  "terminate": cat.terminate_partner}[command]
        return await self._write(PARTNER, partner_id, actor, lambda current: decide(
            _existing(current, "partner", partner_id), self._clock.now()))

    async def suspend_partners_past_contract(self) -> int:
        """A partner whose contract has ended is suspended, with an event, until an admin acts."""
        now = self._clock.now()
        ended = [p.id for p in self.catalog.partners.values()
                 if p.status in ("sandbox", "active") and p.contract_ends_at is not None
                 and p.contract_ends_at <= now]
        for partner_id in ended:
            await self.change_partner_status(partner_id, "suspend", "system")
        return len(ended)

    async def notify_contracts_ending(self, days: int) -> int:
        """`partner.contract_ending`, once per contract end, for partners whose contract ends within `days`
        (CONSENT_WEBHOOK_CONTRACT_NOTICE_DAYS): their webhooks and subscribers hear it ahead of the end."""
        now = self._clock.now()
        due = [(p.id, p.contract_ends_at) for p in self.catalog.partners.values()
               if p.status != "terminated" and p.contract_ends_at is not None
               and now < p.contract_ends_at <= now + timedelta(days=days)
               and (p.id, p.contract_ends_at) not in self._contract_notices]
        written = 0
        for partner_id, ends_at in due:
            written += await retrying(functools.partial(self._notify_contract_ending, partner_id, ends_at))
            self._contract_notices.add((partner_id, ends_at))
        return written

    async def _notify_contract_ending(self, partner_id: str, ends_at: datetime) -> int:
        stream_id = stream_of(PARTNER, partner_id)
        async with self._unit_of_work() as uow:
            current, stream_version = await uow.catalog.load(PARTNER, partner_id)
            noticed = any(isinstance(r.event, PartnerContractEnding) and r.event.contract_ends_at == ends_at
                          for r in await read_whole_stream(uow, stream_id))
            if current is None or current.contract_ends_at != ends_at or noticed:
                return 0  # another replica noticed first, or the contract changed meanwhile
            event = PartnerContractEnding(occurred_at=self._clock.now(), partner_id=partner_id,
                                          contract_ends_at=ends_at)
            recorded = await uow.catalog.save(stream_id, stream_version, [event], current, "system")
            await uow.commit()
            self.apply(recorded)
            await self.publisher.committed(recorded)
        return 1

    async def _write(self, kind: str, ident: str, actor: str, decide: Callable[[Any], list[Event]]) -> Written:
        stream_id = stream_of(kind, ident)

        async def attempt() -> Written:
            async with self._unit_of_work() as uow:
                current, stream_version = await uow.catalog.load(kind, ident)
                new_events = decide(current)
                if not new_events:
                    return Written(entity=current, created=False)
                # Fold onto a scratch catalog holding just this entity, to project its new state.
                scratch = Catalog()
                if current is not None:
                    _put(scratch, current)
                for event in new_events:
                    scratch.apply(event)
                entity = getattr(scratch, f"{kind}s")[ident]
                recorded = await uow.catalog.save(stream_id, stream_version, new_events, entity, actor)
                await uow.commit()
                self.apply(recorded)
                await self.publisher.committed(recorded)
            return Written(entity=entity, created=current is None)

        return await retrying(attempt)

    # Time travel

    async def catalog_at(self, at: datetime, only: str | None = None) -> Catalog:
        """The catalog as it stood at `at` (each entity's stream folded up to that moment), or only the entity
        of stream `only`. Built from the log alone, so a rebuilt database answers the same."""
        stream_ids = [only] if only is not None else sorted(self._versions)
        past = Catalog()
        async with self._unit_of_work() as uow:
            for stream_id in stream_ids:
                for recorded in await read_whole_stream(uow, stream_id):
                    if recorded.event.occurred_at > at:
                        break
                    past.apply(recorded.event)
        return past

    # Keeping the catalog in memory current

    def apply(self, recorded: list[RecordedEvent]) -> None:
        """Committed catalog events, this process's own: applied in order, newer versions only."""
        for item in recorded:
            if stream_kind(item.stream_id) in CATALOG_STREAMS and self._is_newer(item.stream_id,
                                                                                 item.stream_version):
                self.catalog.apply(item.event)

    async def reload(self) -> None:
        """Read every catalog entity again (after the feed was interrupted)."""
        async with self._unit_of_work() as uow:
            catalog, versions = await uow.catalog.load_all()
        for stream_id, version in versions.items():
            if self._is_newer(stream_id, version):
                kind, ident = parse_stream_id(stream_id)
                _put(self.catalog, getattr(catalog, f"{kind}s")[ident])

    async def refresh(self, stream_id: str, stream_version: int) -> None:
        """Another process changed a catalog entity: read it as the database has it now."""
        if stream_version <= self._versions.get(stream_id, 0):
            return
        kind, ident = parse_stream_id(stream_id)
        async with self._unit_of_work() as uow:
            entity, version = await uow.catalog.load(kind, ident)
        if entity is not None and self._is_newer(stream_id, version):
            _put(self.catalog, entity)

    def _is_newer(self, stream_id: str, stream_version: int) -> bool:
        if stream_version <= self._versions.get(stream_id, 0):
            return False
        self._versions[stream_id] = stream_version
        return True


def _existing(entity: Any, what: str, ident: str) -> Any:
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
