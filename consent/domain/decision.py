"""The decision: may partner P use scopes S of subject U for purpose X, and until when?

A pure function of the catalog, the subject's consent state and the time. Default is
deny; each denied scope carries the first reason that applies, checked in the order
of docs/design.md, "Decision rules".
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from msgspec import Struct

from consent.domain.catalog import Catalog, Partner, Purpose
from consent.domain.durations import parse_duration
from consent.domain.ids import covered_by_any
from consent.domain.subject import ConsentRecord, SubjectConsents

Reason = Literal[
    "unknown_partner", "partner_inactive", "unknown_purpose", "purpose_retired", "scope_not_approved",
    "no_consent", "consent_withdrawn", "consent_expired", "objected", "global_opt_out", "reconsent_required",
]
REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]


class Denied(Struct, frozen=True):
    scope: str
    reason: Reason


class Decision(Struct, frozen=True):
    decision: Literal["permit", "deny", "partial"]
    permitted: list[str]
    denied: list[Denied]
    retain_until: datetime | None
    purpose_version: int | None


def partner_inactive(partner: Partner, now: datetime) -> bool:
    return partner.status not in ("sandbox", "active") or (
        partner.contract_ends_at is not None and partner.contract_ends_at <= now)


def decide(catalog: Catalog, state: SubjectConsents | None, partner_id: str | None, purpose_id: str,
           scopes: list[str], now: datetime) -> Decision:
    """`partner_id None` asks for the platform itself (first party): no partner checks apply."""
    scopes = list(dict.fromkeys(scopes))
    partner = catalog.partners.get(partner_id) if partner_id is not None else None
    purpose = catalog.purposes.get(purpose_id)
    if partner_id is not None and partner is None:
        return _deny_all(scopes, "unknown_partner", purpose)
    if partner is not None and partner_inactive(partner, now):
        return _deny_all(scopes, "partner_inactive", purpose)
    if purpose is None:
        return _deny_all(scopes, "unknown_purpose", None)
    if purpose.status == "retired":
        return _deny_all(scopes, "purpose_retired", purpose)

    permitted: list[str] = []
    denied: list[Denied] = []
    limits: list[datetime] = [parse_duration(purpose.retention).after(now)]
    if partner is not None and partner.contract_ends_at is not None:
        limits.append(partner.contract_ends_at)
    for scope in scopes:
        if partner is not None and not partner.approves(purpose.id, scope):
            denied.append(Denied(scope, "scope_not_approved"))
            continue
        reason, grant = _consent_check(purpose, state, partner_id, scope, now)
        if reason is not None:
            denied.append(Denied(scope, reason))
            continue
        permitted.append(scope)
        if grant is not None and grant.expires_at is not None:
            limits.append(grant.expires_at)
    verdict = "permit" if not denied else "deny" if not permitted else "partial"
    return Decision(decision=verdict, permitted=permitted, denied=denied,
                    retain_until=min(limits) if permitted else None, purpose_version=purpose.version)


def _consent_check(purpose: Purpose, state: SubjectConsents | None, partner_id: str | None, scope: str,
                   now: datetime) -> tuple[Reason | None, ConsentRecord | None]:
    if purpose.legal_basis in ("contract", "legal_obligation"):
        return None, None
    record = _record_for(state, purpose, partner_id, scope, now)
    status = record.status_at(now) if record is not None else None
    if purpose.legal_basis == "consent":
        if status is None:
            return "no_consent", None
        if status == "withdrawn":
            return "consent_withdrawn", None
        if status == "expired":
            return "consent_expired", None
    if status == "objected":
        return "objected", None
    if purpose.sale_or_sharing and state is not None and state.global_opt_out:
        return "global_opt_out", None
    if purpose.legal_basis == "consent" and record.purpose_version < purpose.reconsent_below:  # type: ignore[union-attr]
        return "reconsent_required", None
    return None, record if purpose.legal_basis == "consent" else None


def _record_for(state: SubjectConsents | None, purpose: Purpose, partner_id: str | None, scope: str,
                now: datetime) -> ConsentRecord | None:
    """The subject's choice that speaks to this scope: a choice about this partner first, then first-party.

    Under legitimate interest a lapsed (withdrawn or expired) grant says nothing: it must not hide an
    objection, or a partner grant would lift a first-party objection for good once it ended.
    """
    if state is None:
        return None
    keys = ((purpose.id, partner_id), (purpose.id, None)) if partner_id is not None else ((purpose.id, None),)
    for key in keys:
        record = state.records.get(key)
        if record is not None and covered_by_any(scope, record.scopes):
            if purpose.legal_basis == "legitimate_interest" and record.status_at(now) in ("withdrawn", "expired"):
                continue
            return record
    return None


def _deny_all(scopes: list[str], reason: Reason, purpose: Purpose | None) -> Decision:
    return Decision(decision="deny", permitted=[], denied=[Denied(s, reason) for s in scopes], retain_until=None,
                    purpose_version=purpose.version if purpose is not None else None)
