"""What the use cases answer: the wire shapes of docs/api.md, as msgspec Structs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from msgspec import Struct

from consent.app.ports import RecordedEvent
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.events import event_data, event_type
from consent.domain.subject import SubjectConsents


class PurposeView(Struct):
    id: str
    title: str
    description: str
    legal_basis: str
    retention: str
    sale_or_sharing: bool
    version: int
    status: str


class ScopeView(Struct):
    id: str
    title: str
    description: str
    sensitivity: str


class PartnerView(Struct):
    id: str
    name: str
    status: str
    data_uses: dict[str, list[str]]
    contract_ends_at: datetime | None
    identifiers: str
    rate_limit: int | None


class ConsentView(Struct):
    purpose: str
    partner: str | None
    scopes: list[str] | None
    status: str
    expires_at: datetime | None
    purpose_version: int
    updated_at: datetime


class SubjectConsentsView(Struct):
    subject_id: str
    version: int
    position: int
    consents: list[ConsentView]
    global_opt_out: bool


class ConsentAtView(ConsentView, kw_only=True):
    purpose_version_in_force: int | None  # the purpose's version at that moment (None: it did not exist yet)


class SubjectConsentsAtView(Struct):
    """A subject's consents as they stood at `at` (time travel: the log folded up to that moment)."""

    subject_id: str
    at: datetime
    version: int
    position: int
    consents: list[ConsentAtView]
    global_opt_out: bool


class ReceiptView(Struct):
    """A signed consent receipt (compact JWS, consent/app/receipts.py) for one recorded event."""

    event_id: UUID
    receipt: str


class ConsentChangeView(SubjectConsentsView, kw_only=True):
    """The answer to a consent change: the state after it, and a receipt per event it appended."""

    receipts: list[ReceiptView] = []


class HistoryEvent(Struct):
    event_id: UUID
    type: str
    stream_version: int
    position: int
    occurred_at: datetime
    data: dict[str, Any]


class HistoryView(Struct):
    subject_id: str
    events: list[HistoryEvent]
    next_after: int | None


class SubjectErasureView(Struct):
    """A subject's erasure: when it happened and the position of its `subject.erased` event."""

    subject_id: str
    erased_at: datetime
    position: int


class SubjectExportView(Struct):
    """Everything held on one subject, for a data access or portability request."""

    subject_id: str
    exported_at: datetime
    consents: SubjectConsentsView
    history: list[HistoryEvent]
    receipts: list[ReceiptView]


def purpose_view(purpose: Purpose) -> PurposeView:
    return PurposeView(id=purpose.id, title=purpose.title, description=purpose.description,
                       legal_basis=purpose.legal_basis, retention=purpose.retention,
                       sale_or_sharing=purpose.sale_or_sharing, version=purpose.version, status=purpose.status)


def scope_view(scope: Scope) -> ScopeView:
    return ScopeView(id=scope.id, title=scope.title, description=scope.description, sensitivity=scope.sensitivity)


def partner_view(partner: Partner) -> PartnerView:
    return PartnerView(id=partner.id, name=partner.name, status=partner.status,
                       data_uses={k: list(v) for k, v in partner.data_uses.items()},
                       contract_ends_at=partner.contract_ends_at, identifiers=partner.identifiers,
                       rate_limit=partner.rate_limit)


def subject_view(state: SubjectConsents, now: datetime) -> SubjectConsentsView:
    records = sorted(state.records.values(), key=lambda r: (r.purpose, r.partner or ""))
    return SubjectConsentsView(
        subject_id=state.subject_id, version=state.version, position=state.position,
        global_opt_out=state.global_opt_out,
        consents=[
            ConsentView(purpose=r.purpose, partner=r.partner, scopes=list(r.scopes) if r.scopes is not None else None,
                        status=r.status_at(now), expires_at=r.expires_at, purpose_version=r.purpose_version,
                        updated_at=r.updated_at)
            for r in records
        ],
    )


def subject_view_at(state: SubjectConsents, at: datetime, catalog: Catalog) -> SubjectConsentsAtView:
    now = subject_view(state, at)
    in_force = {purpose.id: purpose.version for purpose in catalog.purposes.values()}
    return SubjectConsentsAtView(
        subject_id=now.subject_id, at=at, version=now.version, position=now.position,
        global_opt_out=now.global_opt_out,
        consents=[ConsentAtView(**msgspec.structs.asdict(c), purpose_version_in_force=in_force.get(c.purpose))
                  for c in now.consents])


def history_event(recorded: RecordedEvent) -> HistoryEvent:
    data = event_data(recorded.event)
    data.pop("occurred_at", None)
    return HistoryEvent(event_id=recorded.event_id, type=event_type(recorded.event),
                        stream_version=recorded.stream_version, position=recorded.position,
                        occurred_at=recorded.event.occurred_at, data=data)


class AuditEntry(Struct):
    event_id: UUID
    type: str
    stream_id: str
    stream_version: int
    position: int
    occurred_at: datetime
    actor: str  # `admin:<key id>` (never the key) or `partner:<partner id>`
    data: dict[str, Any]


class AuditView(Struct):
    events: list[AuditEntry]
    next_after: int | None


def audit_entry(recorded: RecordedEvent, actor: str) -> AuditEntry:
    entry = history_event(recorded)
    return AuditEntry(event_id=entry.event_id, type=entry.type, stream_id=recorded.stream_id,
                      stream_version=entry.stream_version, position=entry.position, occurred_at=entry.occurred_at,
                      actor=actor, data=entry.data)
