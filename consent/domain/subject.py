"""A subject's consents: one aggregate per subject, stream `subject:<subject_id>`.

A record is kept per (purpose, partner); `partner None` is a first-party choice
that covers every partner. `scopes None` stands for every scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from msgspec import Struct, structs

from consent.domain.catalog import CONSENT_BASED, Catalog
from consent.domain.errors import DomainError
from consent.domain.events import (
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
    Event,
    Evidence,
    GlobalOptOutRecorded,
    ObjectionRecorded,
    Source,
    SubjectChange,
    SubjectErased,
)
from consent.domain.ids import check_scope, check_slug

Status = Literal["granted", "withdrawn", "expired", "objected"]
Key = tuple[str, "str | None"]

_STATUS_OF: dict[type, Status] = {
    ConsentGranted: "granted", ConsentWithdrawn: "withdrawn",
    ConsentExpired: "expired", ObjectionRecorded: "objected",
}


class ConsentRecord(Struct, frozen=True):
    purpose: str
    partner: str | None
    scopes: tuple[str, ...] | None
    status: Status
    expires_at: datetime | None
    purpose_version: int
    updated_at: datetime

    @property
    def key(self) -> Key:
        return (self.purpose, self.partner)

    def status_at(self, now: datetime) -> Status:
        """A grant past its expiry is expired, even before the expiry event is recorded."""
        if self.status == "granted" and self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.status


class SubjectConsents:
    """The current state of one subject's stream."""

    def __init__(self, subject_id: str, version: int = 0, position: int = 0,
                 records: dict[Key, ConsentRecord] | None = None, global_opt_out: bool = False) -> None:
        self.subject_id = subject_id
        self.version = version
        self.position = position
        self.records: dict[Key, ConsentRecord] = records if records is not None else {}
        self.global_opt_out = global_opt_out

    def apply(self, event: Event) -> None:
        self.version += 1
        if isinstance(event, SubjectChange):
            key = (event.purpose, event.partner)
            self.records[key] = _record_after(self.records.get(key), event)
        elif isinstance(event, GlobalOptOutRecorded):
            self.global_opt_out = True
        elif isinstance(event, SubjectErased):
            self.records.clear()
            self.global_opt_out = False

    def copy(self) -> SubjectConsents:
        return SubjectConsents(self.subject_id, self.version, self.position, dict(self.records), self.global_opt_out)


def _record_after(current: ConsentRecord | None, event: SubjectChange) -> ConsentRecord:
    if (isinstance(event, ConsentWithdrawn) and current is not None and current.status == "granted"
            and current.scopes is not None and event.scopes is not None
            and set(event.scopes) < set(current.scopes)):
        # A partial withdrawal leaves the rest of the grant in force.
        remaining = tuple(s for s in current.scopes if s not in event.scopes)
        return structs.replace(current, scopes=remaining, updated_at=event.occurred_at)
    return ConsentRecord(
        purpose=event.purpose, partner=event.partner, scopes=event.scopes, status=_STATUS_OF[type(event)],
        expires_at=getattr(event, "expires_at", None), purpose_version=event.purpose_version,
        updated_at=event.occurred_at,
    )


class Change(Struct, frozen=True):
    purpose: str
    action: Literal["grant", "withdraw", "object"]
    partner: str | None = None
    scopes: tuple[str, ...] | None = None
    expires_at: datetime | None = None


def change_consents(state: SubjectConsents, catalog: Catalog, changes: list[Change] | tuple[Change, ...],
                    source: Source, evidence: Evidence | None, now: datetime) -> list[Event]:
    """Validate a request's changes against the catalog and return the events, all or none."""
    events: list[Event] = []
    scratch = state.copy()
    for change in changes:
        event = _change_event(scratch.records, catalog, change, source, evidence, now)
        if event is not None:
            scratch.apply(event)
            events.append(event)
    return events


def _change_event(records: dict[Key, ConsentRecord], catalog: Catalog, change: Change, source: Source,
                  evidence: Evidence | None, now: datetime) -> SubjectChange | None:
    check_slug(change.purpose, "purpose")
    purpose = catalog.purposes.get(change.purpose)
    if purpose is None:
        raise DomainError("unknown_purpose", f"purpose {change.purpose!r} is not in the catalog")
    if purpose.legal_basis not in CONSENT_BASED:
        raise DomainError("not_consent_based",
                          f"purpose {purpose.id!r} rests on {purpose.legal_basis}; it takes no consent commands")
    if change.action == "grant" and purpose.status == "retired":
        raise DomainError("purpose_retired", f"purpose {purpose.id!r} is retired")
    scopes = _checked_scopes(catalog, change)
    if change.partner is not None:
        check_slug(change.partner, "partner")
        partner = catalog.partners.get(change.partner)
        if partner is None:
            raise DomainError("unknown_partner", f"partner {change.partner!r} is not registered")
        if change.action == "grant":
            if partner.status in ("suspended", "terminated"):
                raise DomainError("partner_inactive", f"partner {partner.id!r} is {partner.status}")
            approved = partner.approved_scopes(purpose.id)
            # A grant to a partner names exactly what the user saw, so later changes
            # to the partner's data uses never widen it.
            scopes = scopes if scopes is not None else approved
            refused = [s for s in scopes if not partner.approves(purpose.id, s)]
            if refused or not scopes:
                raise DomainError("scope_not_approved",
                                  f"partner {partner.id!r} is not approved for {purpose.id!r} on "
                                  f"{', '.join(refused) or 'any scope'}")
    if change.expires_at is not None:
        if change.action != "grant":
            raise DomainError("validation_failed", "expires_at applies to grants only")
        if change.expires_at.tzinfo is None:
            raise DomainError("validation_failed", "expires_at must carry a time zone (RFC 3339)")
        if change.expires_at <= now:
            raise DomainError("validation_failed", "expires_at must be in the future")
    common = dict(occurred_at=now, purpose=purpose.id, partner=change.partner, purpose_version=purpose.version,
                  source=source, evidence=evidence)
    current = records.get((purpose.id, change.partner))
    if change.action == "grant":
        if current is not None and current.status_at(now) == "granted":
            # Granting more adds to what is granted; the event carries the whole grant.
            scopes = None if scopes is None or current.scopes is None else tuple(sorted({*current.scopes, *scopes}))
        return ConsentGranted(scopes=scopes, expires_at=change.expires_at, **common)
    if change.action == "object":
        return ObjectionRecorded(scopes=scopes, **common)
    if current is None or current.status_at(now) != "granted":
        return None  # nothing granted: withdrawing is already true
    return ConsentWithdrawn(scopes=_withdrawn_scopes(current, scopes), **common)


def _checked_scopes(catalog: Catalog, change: Change) -> tuple[str, ...] | None:
    if change.scopes is None:
        return None
    if not change.scopes:
        raise DomainError("validation_failed", "scopes must be null (every scope) or name at least one scope")
    for scope in change.scopes:
        check_scope(scope)
        if not catalog.scope_known(scope):
            raise DomainError("unknown_scope", f"scope {scope!r} is not in the catalog")
    return tuple(sorted(set(change.scopes)))


def _withdrawn_scopes(current: ConsentRecord, withdrawn: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The scopes a withdrawal takes back: the whole grant, or the named part of it."""
    if withdrawn is None:
        return current.scopes
    if current.scopes is None:
        raise DomainError("validation_failed",
                          "this grant covers every scope: withdraw it whole (scopes null), then grant what remains")
    taken = tuple(s for s in current.scopes if s in withdrawn)
    if len(taken) != len(withdrawn):
        raise DomainError("validation_failed", "withdraw names scopes that this grant does not hold")
    return taken


def expire_due(state: SubjectConsents, now: datetime) -> list[Event]:
    """Grants whose expiry has passed become expired, with an event each."""
    return [
        ConsentExpired(occurred_at=now, purpose=r.purpose, partner=r.partner, scopes=r.scopes,
                       purpose_version=r.purpose_version, source="system", expires_at=r.expires_at)
        for r in _sorted(state)
        if r.status == "granted" and r.expires_at is not None and r.expires_at <= now
    ]


def withdraw_for_terminated_partner(state: SubjectConsents, partner_id: str, now: datetime) -> list[Event]:
    """Terminating a partner withdraws every grant to it (grants first-party stay: they name no partner)."""
    return [
        ConsentWithdrawn(occurred_at=now, purpose=r.purpose, partner=r.partner, scopes=r.scopes,
                         purpose_version=r.purpose_version, source="system", reason="partner_terminated")
        for r in _sorted(state)
        if r.partner == partner_id and r.status == "granted"
    ]


def _sorted(state: SubjectConsents) -> list[ConsentRecord]:
    return sorted(state.records.values(), key=lambda r: (r.purpose, r.partner or ""))
