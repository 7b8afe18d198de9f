"""Domain events: immutable facts, one Struct per type, tagged with their wire type.

The tag (`subject.granted`, `purpose.defined`, ...) is the event type stored in the
log and, prefixed with `io.consent.v1.`, the CloudEvents type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Union

import msgspec
from msgspec import Struct

LegalBasis = Literal["consent", "legitimate_interest", "contract", "legal_obligation"]
Sensitivity = Literal["low", "medium", "high"]
RequestSource = Literal["web", "app", "api", "gpc", "admin"]
# `system`: the service itself acted (a grant expired, a partner was terminated).
Source = Literal["web", "app", "api", "gpc", "admin", "system"]
PartnerStatus = Literal["sandbox", "active", "suspended", "terminated"]
# `pairwise`: the partner knows subjects only by pseudonyms of its own (consent/domain/pseudonyms.py).
Identifiers = Literal["public", "pairwise"]


class Evidence(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """How a choice was collected, as the platform tells it: personal data as a whole (see PERSONAL_FIELDS)."""

    collection_point: str | None = None
    text_shown: str | None = None
    user_note: str | None = None  # what the user wrote with the choice
    ip_address: str | None = None
    user_agent: str | None = None


# What a personal field reads as once the subject is erased (its data key deleted).
ERASED = "[erased]"
# The fields of events that hold personal data, in one place: the log stores them encrypted with the
# subject's data key (consent/adapters/subject_keys.py), they are never published, and they read as
# ERASED once the subject is erased.
PERSONAL_FIELDS = frozenset({"evidence"})


class Event(Struct, frozen=True, kw_only=True, tag_field="type"):
    occurred_at: datetime


# Subject stream: `subject:<subject_id>`


class SubjectChange(Event, frozen=True, kw_only=True):
    purpose: str
    partner: str | None
    scopes: tuple[str, ...] | None
    purpose_version: int
    source: Source
    evidence: Evidence | Literal["[erased]"] | None = None


class ConsentGranted(SubjectChange, frozen=True, tag="subject.granted"):
    expires_at: datetime | None = None


class ConsentWithdrawn(SubjectChange, frozen=True, tag="subject.withdrawn"):
    reason: str | None = None


class ConsentExpired(SubjectChange, frozen=True, tag="subject.expired"):
    expires_at: datetime


class ObjectionRecorded(SubjectChange, frozen=True, tag="subject.objected"):
    pass


class GlobalOptOutRecorded(Event, frozen=True, tag="subject.global_opt_out"):
    source: Source


class SubjectErased(Event, frozen=True, tag="subject.erased"):
    pass


# Catalog streams: `purpose:<id>`, `scope:<id>`, `partner:<id>`


class PurposeDefined(Event, frozen=True, tag="purpose.defined"):
    purpose_id: str
    title: str
    description: str
    legal_basis: LegalBasis
    retention: str
    sale_or_sharing: bool
    version: int


class PurposeRevised(PurposeDefined, frozen=True, tag="purpose.revised"):
    material: bool


class PurposeRetired(Event, frozen=True, tag="purpose.retired"):
    purpose_id: str


class ScopeDefined(Event, frozen=True, tag="scope.defined"):
    scope_id: str
    title: str
    description: str
    sensitivity: Sensitivity


class PartnerRegistered(Event, frozen=True, tag="partner.registered"):
    partner_id: str
    name: str
    status: Literal["sandbox", "active"]
    data_uses: dict[str, tuple[str, ...]]
    contract_ends_at: datetime | None
    identifiers: Identifiers = "public"  # events written before pseudonyms existed decode as public
    rate_limit: int | None = None  # requests a second; None: the service's default


class PartnerUpdated(PartnerRegistered, frozen=True, tag="partner.updated"):
    pass


class PartnerSuspended(Event, frozen=True, tag="partner.suspended"):
    partner_id: str


class PartnerReinstated(Event, frozen=True, tag="partner.reinstated"):
    partner_id: str


class PartnerTerminated(Event, frozen=True, tag="partner.terminated"):
    partner_id: str


class PartnerContractEnding(Event, frozen=True, tag="partner.contract_ending"):
    """A notice, once per contract end, CONSENT_WEBHOOK_CONTRACT_NOTICE_DAYS before it: changes no state."""

    partner_id: str
    contract_ends_at: datetime


# Partner access streams: `credential:<client_id>`, `token:<token_id>` (no personal data, never a secret)


class CredentialIssued(Event, frozen=True, tag="credential.issued"):
    partner_id: str
    client_id: str
    scopes: tuple[str, ...]
    replaces: str | None = None  # the credential this one rotates


class CredentialRevoked(Event, frozen=True, tag="credential.revoked"):
    partner_id: str
    client_id: str
    # Later than occurred_at when a rotation leaves the old credential an overlap.
    effective_at: datetime
    reason: Literal["revoked", "rotated"] = "revoked"


class TokenRevoked(Event, frozen=True, tag="token.revoked"):
    """RFC 7009: a partner gave up one access token before its expiry."""

    partner_id: str
    client_id: str
    token_id: str
    expires_at: datetime


# Webhooks, one stream per endpoint: `webhook:<id>` (never the secret, never the URL's query: it may hold one)


class WebhookRegistered(Event, frozen=True, tag="webhook.registered"):
    partner_id: str
    webhook_id: str
    url: str  # scheme, host, port and path only
    events: tuple[str, ...] | None
    enabled: bool = True


class WebhookUpdated(WebhookRegistered, frozen=True, tag="webhook.updated"):
    pass


class WebhookDeleted(Event, frozen=True, tag="webhook.deleted"):
    partner_id: str
    webhook_id: str


class WebhookSecretRotated(Event, frozen=True, tag="webhook.secret_rotated"):
    partner_id: str
    webhook_id: str
    previous_valid_until: datetime


class WebhookDisabled(Event, frozen=True, tag="webhook.disabled"):
    """The receiver answered 410 Gone: the service stopped delivering to it."""

    partner_id: str
    webhook_id: str


class WebhookDeliveriesRequeued(Event, frozen=True, tag="webhook.requeued"):
    """A delivery retried by hand (`delivery_id`), or the partner's events replayed after a position."""

    partner_id: str
    webhook_id: str
    delivery_id: int | None = None
    after_position: int | None = None
    count: int = 0


# Governance reads, one stream per admin key: `audit:<key id>`


class SubjectHistoryRead(Event, frozen=True, tag="audit.subject_history_read"):
    subject_id: str


AnyEvent = Union[  # noqa: UP007 - a runtime union of the classes, iterated below
    ConsentGranted, ConsentWithdrawn, ConsentExpired, ObjectionRecorded, GlobalOptOutRecorded,
    SubjectErased, PurposeDefined, PurposeRevised, PurposeRetired, ScopeDefined,
    PartnerRegistered, PartnerUpdated, PartnerSuspended, PartnerReinstated, PartnerTerminated,
    PartnerContractEnding, WebhookRegistered, WebhookUpdated, WebhookDeleted, WebhookSecretRotated,
    WebhookDisabled, WebhookDeliveriesRequeued, CredentialIssued, CredentialRevoked, TokenRevoked, SubjectHistoryRead,
]
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}


def event_type(event: Event) -> str:
    return event.__struct_config__.tag  # type: ignore[return-value]


def event_data(event: Event) -> dict:
    """The event's fields, without the type tag, as JSON-ready builtins."""
    data = msgspec.to_builtins(event)
    data.pop("type", None)
    return data


def event_from_data(type_: str, data: dict) -> Event:
    return msgspec.convert(data, EVENT_TYPES[type_], strict=False)


def without_personal(data: dict) -> dict:
    """Stored data less its personal fields (encrypted at rest), for readers that never show them."""
    return {k: v for k, v in data.items() if k not in PERSONAL_FIELDS}
