"""The catalog: purposes, scopes and partners. Each entity is its own event stream.

Commands are pure functions that take the current state and return new events;
`Catalog.apply` folds events into state, so the catalog at any past position can
be rebuilt from the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from msgspec import Struct, structs

from consent.domain.durations import parse_duration
from consent.domain.errors import Conflict, DomainError, NotFound
from consent.domain.events import (
    Event,
    Identifiers,
    LegalBasis,
    PartnerRegistered,
    PartnerReinstated,
    PartnerStatus,
    PartnerSuspended,
    PartnerTerminated,
    PartnerUpdated,
    PurposeDefined,
    PurposeRetired,
    PurposeRevised,
    ScopeDefined,
    Sensitivity,
)
from consent.domain.ids import check_scope, check_slug, covers

CONSENT_BASED = ("consent", "legitimate_interest")


class Purpose(Struct, frozen=True):
    id: str
    title: str
    description: str
    legal_basis: LegalBasis
    retention: str
    sale_or_sharing: bool
    version: int
    # Grants given to a purpose version below this one must be given again.
    reconsent_below: int = 1
    status: Literal["active", "retired"] = "active"


class Scope(Struct, frozen=True):
    id: str
    title: str
    description: str
    sensitivity: Sensitivity


class Partner(Struct, frozen=True):
    id: str
    name: str
    status: PartnerStatus
    data_uses: dict[str, tuple[str, ...]]
    contract_ends_at: datetime | None
    # What a suspended partner returns to when reinstated.
    base_status: Literal["sandbox", "active"] = "sandbox"
    identifiers: Identifiers = "public"
    # Requests a second (token bucket); None: the service's default, 0: no limit.
    rate_limit: int | None = None

    def approved_scopes(self, purpose_id: str) -> tuple[str, ...]:
        return self.data_uses.get(purpose_id, ())

    def approves(self, purpose_id: str, scope: str) -> bool:
        return any(covers(approved, scope) for approved in self.approved_scopes(purpose_id))


class Catalog:
    """Current purposes, scopes and partners, folded from catalog events."""

    def __init__(self) -> None:
        self.purposes: dict[str, Purpose] = {}
        self.scopes: dict[str, Scope] = {}
        self.partners: dict[str, Partner] = {}

    def apply(self, event: Event) -> None:
        if isinstance(event, PurposeDefined):  # PurposeRevised too
            previous = self.purposes.get(event.purpose_id)
            reconsent_below = previous.reconsent_below if previous else 1
            if isinstance(event, PurposeRevised) and event.material:
                reconsent_below = event.version
            self.purposes[event.purpose_id] = Purpose(
                id=event.purpose_id, title=event.title, description=event.description,
                legal_basis=event.legal_basis, retention=event.retention,
                sale_or_sharing=event.sale_or_sharing, version=event.version,
                reconsent_below=reconsent_below,
            )
        elif isinstance(event, PurposeRetired):
            self.purposes[event.purpose_id] = structs.replace(self.purposes[event.purpose_id], status="retired")
        elif isinstance(event, ScopeDefined):
            self.scopes[event.scope_id] = Scope(event.scope_id, event.title, event.description, event.sensitivity)
        elif isinstance(event, PartnerRegistered):  # PartnerUpdated too
            previous = self.partners.get(event.partner_id)
            suspended = previous is not None and previous.status == "suspended"
            self.partners[event.partner_id] = Partner(
                id=event.partner_id, name=event.name,
                status="suspended" if suspended else event.status,
                data_uses=event.data_uses, contract_ends_at=event.contract_ends_at,
                base_status=event.status, identifiers=event.identifiers, rate_limit=event.rate_limit,
            )
        elif isinstance(event, PartnerSuspended):
            self._set_partner_status(event.partner_id, "suspended")
        elif isinstance(event, PartnerReinstated):
            self._set_partner_status(event.partner_id, self.partners[event.partner_id].base_status)
        elif isinstance(event, PartnerTerminated):
            self._set_partner_status(event.partner_id, "terminated")

    def _set_partner_status(self, partner_id: str, status: PartnerStatus) -> None:
        self.partners[partner_id] = structs.replace(self.partners[partner_id], status=status)

    def scope_known(self, scope: str) -> bool:
        """A scope is known when it, or a scope that covers it, is defined."""
        parts = scope.split(".")
        return any(".".join(parts[:n]) in self.scopes for n in range(1, len(parts) + 1))

    def purpose(self, purpose_id: str) -> Purpose:
        try:
            return self.purposes[purpose_id]
        except KeyError:
            raise NotFound("purpose", purpose_id) from None

    def partner(self, partner_id: str) -> Partner:
        try:
            return self.partners[partner_id]
        except KeyError:
            raise NotFound("partner", partner_id) from None


# Commands


class PurposeSpec(Struct, frozen=True):
    title: str
    description: str
    legal_basis: LegalBasis
    retention: str
    sale_or_sharing: bool = False


def define_purpose(current: Purpose | None, purpose_id: str, spec: PurposeSpec, material_change: bool,
                   now: datetime) -> list[Event]:
    """Define a purpose or revise it. Any change to what users were told bumps its version."""
    check_slug(purpose_id, "purpose")
    parse_duration(spec.retention)
    fields = dict(
        purpose_id=purpose_id, title=spec.title, description=spec.description,
        legal_basis=spec.legal_basis, retention=spec.retention, sale_or_sharing=spec.sale_or_sharing,
    )
    if current is None:
        return [PurposeDefined(occurred_at=now, version=1, **fields)]
    unchanged = (current.title, current.description, current.legal_basis, current.retention,
                 current.sale_or_sharing) == (spec.title, spec.description, spec.legal_basis,
                                              spec.retention, spec.sale_or_sharing)
    if unchanged:
        return []
    if current.status == "retired":
        raise Conflict("purpose_retired", f"purpose {purpose_id!r} is retired and cannot be revised")
    return [PurposeRevised(occurred_at=now, version=current.version + 1, material=material_change, **fields)]


def retire_purpose(current: Purpose, now: datetime) -> list[Event]:
    if current.status == "retired":
        return []
    return [PurposeRetired(occurred_at=now, purpose_id=current.id)]


class ScopeSpec(Struct, frozen=True):
    title: str
    description: str
    sensitivity: Sensitivity


def define_scope(current: Scope | None, scope_id: str, spec: ScopeSpec, now: datetime) -> list[Event]:
    check_scope(scope_id)
    if current is not None and (current.title, current.description, current.sensitivity) == (
            spec.title, spec.description, spec.sensitivity):
        return []
    return [ScopeDefined(occurred_at=now, scope_id=scope_id, title=spec.title,
                         description=spec.description, sensitivity=spec.sensitivity)]


class PartnerSpec(Struct, frozen=True):
    name: str
    status: Literal["sandbox", "active"]
    data_uses: dict[str, tuple[str, ...]]
    contract_ends_at: datetime | None = None
    # None keeps the partner's current mode (public for a new one): leaving the field out of an
    # update must not quietly hand a pairwise partner real subject ids.
    identifiers: Identifiers | None = None
    rate_limit: int | None = None


def register_partner(current: Partner | None, partner_id: str, spec: PartnerSpec, catalog: Catalog,
                     now: datetime) -> list[Event]:
    """Register a partner or update it; its approved data uses must name known purposes and scopes."""
    check_slug(partner_id, "partner")
    if current is not None and current.status == "terminated":
        raise Conflict("partner_terminated", f"partner {partner_id!r} is terminated; termination is final")
    data_uses: dict[str, tuple[str, ...]] = {}
    for purpose_id, scopes in sorted(spec.data_uses.items()):
        purpose = catalog.purposes.get(purpose_id)
        if purpose is None:
            raise DomainError("unknown_purpose", f"data_uses names unknown purpose {purpose_id!r}")
        if purpose.status == "retired":
            raise DomainError("purpose_retired", f"data_uses names retired purpose {purpose_id!r}")
        for scope in scopes:
            check_scope(scope)
            if not catalog.scope_known(scope):
                raise DomainError("unknown_scope", f"data_uses names unknown scope {scope!r}")
        data_uses[purpose_id] = tuple(sorted(set(scopes)))
    if spec.contract_ends_at is not None and spec.contract_ends_at.tzinfo is None:
        raise DomainError("validation_failed", "contract_ends_at must carry a time zone (RFC 3339)")
    identifiers = spec.identifiers or (current.identifiers if current is not None else "public")
    fields = dict(partner_id=partner_id, name=spec.name, status=spec.status, data_uses=data_uses,
                  contract_ends_at=spec.contract_ends_at, identifiers=identifiers, rate_limit=spec.rate_limit)
    if current is None:
        return [PartnerRegistered(occurred_at=now, **fields)]
    if (current.name, current.base_status, current.data_uses, current.contract_ends_at, current.identifiers,
            current.rate_limit) == (spec.name, spec.status, data_uses, spec.contract_ends_at, identifiers,
                                    spec.rate_limit):
        return []
    return [PartnerUpdated(occurred_at=now, **fields)]


def suspend_partner(current: Partner, now: datetime) -> list[Event]:
    _refuse_if_terminated(current)
    if current.status == "suspended":
        return []
    return [PartnerSuspended(occurred_at=now, partner_id=current.id)]


def reinstate_partner(current: Partner, now: datetime) -> list[Event]:
    _refuse_if_terminated(current)
    if current.status != "suspended":
        return []
    return [PartnerReinstated(occurred_at=now, partner_id=current.id)]


def terminate_partner(current: Partner, now: datetime) -> list[Event]:
    if current.status == "terminated":
        return []
    return [PartnerTerminated(occurred_at=now, partner_id=current.id)]


def _refuse_if_terminated(partner: Partner) -> None:
    if partner.status == "terminated":
        raise Conflict("partner_terminated", f"partner {partner.id!r} is terminated; termination is final")
