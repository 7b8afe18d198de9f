"""Use cases of catalog as code: plan a catalog document (what it would change, and whom it would affect),
and apply it, every change in one transaction or none."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import msgspec

from consent.app.catalog_plan import Change, Desired, EntityRef, Impact, Planned, plan, shrunk_data_uses
from consent.app.catalog_service import CatalogService
from consent.app.ports import Clock, RecordedEvent, UnitOfWork
from consent.domain.catalog import Partner, Purpose
from consent.domain.errors import Conflict
from consent.domain.pseudonyms import key_missing


class CatalogImpact(Protocol):
    async def reconsent(self, purpose_id: str, below_version: int, now: datetime) -> Impact: ...

    async def narrowed(self, partner_id: str, kept: dict[str, tuple[str, ...]], now: datetime) -> Impact: ...


class CatalogPlan(msgspec.Struct):
    catalog_position: int  # the position of the catalog's latest event when planned
    changes: list[Change]
    unmanaged: list[EntityRef]  # in the catalog, not in the document: left as they are


class CatalogApplied(CatalogPlan, kw_only=True):
    position: int  # the catalog's latest event after the apply (unchanged when nothing changed)


class CatalogDocuments:
    def __init__(self, unit_of_work: Callable[..., UnitOfWork], catalogs: CatalogService, impact: CatalogImpact,
                 clock: Clock, pseudonym_key: bytes | None = None) -> None:
        self._unit_of_work = unit_of_work
        self._catalogs = catalogs
        self._impact = impact
        self._clock = clock
        self._pseudonym_key = pseudonym_key

    async def plan(self, desired: Desired) -> CatalogPlan:
        self._check_keys(desired)
        async with self._unit_of_work() as uow:
            position = await uow.catalog.head_position()
            current, _ = await uow.catalog.load_all()
        now = self._clock.now()
        planned, unmanaged = plan(current, desired, now)
        for item in planned:
            item.change.impact = await self._impact_of(item, current, now)
        return CatalogPlan(catalog_position=position, changes=[p.change for p in planned], unmanaged=unmanaged)

    async def apply(self, desired: Desired, actor: str, expected_position: int | None = None) -> CatalogApplied:
        self._check_keys(desired)
        async with self._unit_of_work() as uow:
            position = await uow.catalog.head_position()
            if expected_position is not None and position != expected_position:
                raise Conflict("catalog_changed", f"the catalog changed since the plan (its latest event is at "
                                                  f"{position}, the plan saw {expected_position}): plan again")
            current, versions = await uow.catalog.load_all()
            now = self._clock.now()
            planned, unmanaged = plan(current, desired, now)
            impacts = [await self._impact_of(item, current, now) for item in planned]
            recorded: list[RecordedEvent] = []
            for item in planned:
                if item.events:
                    recorded += await uow.catalog.save(item.stream_id, versions.get(item.stream_id, 0), item.events,
                                                       item.entity, actor)
            await uow.commit()
            self._catalogs.apply(recorded)
            await self._catalogs.publisher.committed(recorded)
        for item, impact in zip(planned, impacts, strict=True):
            item.change.impact = impact
        return CatalogApplied(catalog_position=position, changes=[p.change for p in planned], unmanaged=unmanaged,
                              position=recorded[-1].position if recorded else position)

    async def _impact_of(self, item: Planned, current, now: datetime) -> Impact | None:
        change = item.change
        if change.kind == "purpose" and change.material and isinstance(item.entity, Purpose):
            return await self._impact.reconsent(change.id, item.entity.version, now)
        if change.kind == "partner" and change.action == "update" and isinstance(item.entity, Partner):
            shrunk = shrunk_data_uses(current.partners.get(change.id), item.entity)
            if shrunk:
                return await self._impact.narrowed(change.id, shrunk, now)
        return None

    def _check_keys(self, desired: Desired) -> None:
        if self._pseudonym_key is None and any(s.identifiers == "pairwise" for s in desired.partners.values()):
            raise key_missing()
