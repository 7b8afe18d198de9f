"""Catalog as code: what a catalog document would change, decided by the same domain commands as the
catalog routes, on a scratch copy of the catalog (pure: no I/O)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

import msgspec

from consent.domain import catalog as cat
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.events import Event, PurposeRevised
from consent.domain.ids import covers
from consent.domain.streams import PARTNER, PURPOSE, SCOPE, stream_of

Action = Literal["create", "update", "unchanged"]


class Desired(NamedTuple):
    """A catalog document, as domain specs: every entity it names, by id."""

    scopes: dict[str, cat.ScopeSpec]
    purposes: dict[str, tuple[cat.PurposeSpec, bool]]  # (spec, material_change)
    partners: dict[str, cat.PartnerSpec]


class Impact(msgspec.Struct):
    """Subjects a change affects: in all, and by partner (a first-party grant counts under no partner)."""

    subjects: int
    by_partner: dict[str, int]


class Change(msgspec.Struct):
    kind: Literal["purpose", "scope", "partner"]
    id: str
    action: Action
    fields: dict[str, list[Any]]  # name -> [old, new]; every field on a create
    material: bool = False
    impact: Impact | None = None


class Planned(NamedTuple):
    change: Change
    stream_id: str
    events: list[Event]
    entity: Purpose | Scope | Partner | None  # after the change


class EntityRef(msgspec.Struct):
    kind: Literal["purpose", "scope", "partner"]
    id: str


def plan(current: Catalog, desired: Desired, now: datetime) -> tuple[list[Planned], list[EntityRef]]:
    """Each entity of the document with the events it would append, in an order that applies (scopes,
    purposes, then the partners that name them), and the catalog's entities the document leaves out."""
    scratch = Catalog()
    scratch.purposes, scratch.scopes, scratch.partners = dict(current.purposes), dict(current.scopes), dict(
        current.partners)
    planned = []
    for scope_id, spec in sorted(desired.scopes.items()):
        before = scratch.scopes.get(scope_id)
        planned.append(_planned(scratch, SCOPE, scope_id, before,
                                cat.define_scope(before, scope_id, spec, now), scratch.scopes))
    for purpose_id, (spec, material_change) in sorted(desired.purposes.items()):
        before = scratch.purposes.get(purpose_id)
        planned.append(_planned(scratch, PURPOSE, purpose_id, before,
                                cat.define_purpose(before, purpose_id, spec, material_change, now), scratch.purposes))
    for partner_id, spec in sorted(desired.partners.items()):
        before = scratch.partners.get(partner_id)
        planned.append(_planned(scratch, PARTNER, partner_id, before,
                                cat.register_partner(before, partner_id, spec, scratch, now), scratch.partners))
    unmanaged = [EntityRef(kind=kind, id=ident)
                 for kind, held, named in ((SCOPE, current.scopes, desired.scopes),
                                           (PURPOSE, current.purposes, desired.purposes),
                                           (PARTNER, current.partners, desired.partners))
                 for ident in sorted(held) if ident not in named]
    return planned, unmanaged


def _planned(scratch: Catalog, kind: str, ident: str, before: Any, events: list[Event],
             held: dict[str, Any]) -> Planned:
    for event in events:
        scratch.apply(event)
    after = held.get(ident)
    action: Action = "unchanged" if not events else ("create" if before is None else "update")
    old = _fields(before)
    new = _fields(after)
    fields = {name: [old.get(name), value] for name, value in new.items() if old.get(name) != value}
    material = any(isinstance(e, PurposeRevised) and e.material for e in events)
    return Planned(Change(kind=kind, id=ident, action=action, fields=fields if events else {}, material=material),
                   stream_of(kind, ident), events, after)


def _fields(entity: Any) -> dict[str, Any]:
    if entity is None:
        return {}
    fields = msgspec.to_builtins(entity)
    fields.pop("id", None)
    fields.pop("reconsent_below", None)  # follows from version and material
    fields.pop("base_status", None)  # `status` says it
    return fields


def shrunk_data_uses(before: Partner | None, after: Partner | None) -> dict[str, tuple[str, ...]]:
    """For each purpose whose approved scopes shrink, the scopes approved from now on (empty: none)."""
    if before is None or after is None:
        return {}
    shrunk = {}
    for purpose_id, scopes in before.data_uses.items():
        kept = after.data_uses.get(purpose_id, ())
        if any(not any(covers(k, s) for k in kept) for s in scopes):
            shrunk[purpose_id] = kept
    return shrunk
