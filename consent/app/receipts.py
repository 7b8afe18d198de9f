"""Consent receipts: the claims of one recorded subject event, after the Kantara Consent Receipt v1.1.

A receipt is a JWS over these claims, signed by a `ReceiptSigner` (consent/adapters/receipt_keys.py).
The claims follow the Kantara Consent Receipt v1.1 / ISO/IEC 27560 record structure as far as it
applies, with Kantara's names, and JWT's registered claims where Kantara has the same field:
`iat` = consent timestamp, `jti` = receipt id (the event id), `sub` = the subject, `iss` = issuer.

They come from the event and the catalog *as the event saw it* only, never from the clock, so the
same event always yields the same claims and, with one key (Ed25519 being deterministic), the same
receipt; a receipt an earlier build issued as `EdDSA` comes back signed as `Ed25519`. Of a
purpose they use only what its version pins (every change to its text or basis bumps the version);
scope sensitivities are not versioned, so whoever regenerates a receipt passes the scopes as they
were at the event's position (consent/app/subject_records.py).
Evidence is left out: it may hold personal data and is erased with the subject.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from msgspec import Struct

from consent.app.ports import RecordedEvent
from consent.app.views import ReceiptView
from consent.domain.catalog import Catalog
from consent.domain.events import GlobalOptOutRecorded, SubjectChange, event_type
from consent.domain.ids import covers
from consent.domain.streams import SUBJECT_PREFIX, parse_stream_id

RECEIPT_VERSION = "KI-CR-v1.1.0"


class ReceiptSettings(Struct, frozen=True):
    issuer: str
    controller_name: str
    controller_contact: str | None = None
    jurisdiction: str | None = None


class ReceiptSigner(Protocol):
    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS over the claims, deterministic for one key."""
        ...


def has_receipt(recorded: RecordedEvent) -> bool:
    """Consent granted, withdrawn, objected or expired, and the global opt-out: a subject's choices."""
    return recorded.stream_id.startswith(SUBJECT_PREFIX) and isinstance(
        recorded.event, SubjectChange | GlobalOptOutRecorded)


def receipt_claims(recorded: RecordedEvent, catalog: Catalog, settings: ReceiptSettings) -> dict[str, Any]:
    event = recorded.event
    controller = {"piiController": settings.controller_name, "onBehalf": False}
    if settings.controller_contact:
        controller["contact"] = settings.controller_contact
    claims: dict[str, Any] = {"version": RECEIPT_VERSION}
    if settings.jurisdiction:
        claims["jurisdiction"] = settings.jurisdiction
    claims.update(
        iat=int(event.occurred_at.timestamp()), collectionMethod=event.source,  # type: ignore[attr-defined]
        jti=str(recorded.event_id), iss=settings.issuer, sub=parse_stream_id(recorded.stream_id).id,
        piiControllers=[controller], services=[], sensitive=False, spiCat=[],
    )
    if isinstance(event, SubjectChange):
        purpose = catalog.purposes.get(event.purpose)
        sensitive = high_sensitivity_scopes(catalog, event.scopes)
        claims["services"] = [{"service": settings.controller_name, "purposes": [{
            "purpose": purpose.title if purpose else event.purpose,
            "purposeId": event.purpose,
            "policyVersion": event.purpose_version,
            "legalBasis": purpose.legal_basis if purpose else None,
            "consentType": "explicit",
            # The scopes chosen; null: every scope (a first-party choice; grants to a partner name theirs).
            "piiCategory": list(event.scopes) if event.scopes is not None else None,
            "termination": _rfc3339(getattr(event, "expires_at", None)),
            "thirdPartyDisclosure": event.partner is not None,
            "thirdPartyName": event.partner,
            "saleOrSharing": purpose.sale_or_sharing if purpose else None,
        }]}]
        claims.update(sensitive=bool(sensitive), spiCat=sensitive)
    claims.update(type=event_type(event), position=recorded.position, stream_version=recorded.stream_version)
    return claims


def high_sensitivity_scopes(catalog: Catalog, scopes: tuple[str, ...] | None) -> list[str]:
    """The chosen scopes whose sensitivity is high, with the high scopes beneath them that they cover.

    A scope not itself in the catalog takes the sensitivity of the nearest scope above it."""
    defined = catalog.scopes
    high = {scope_id for scope_id, scope in defined.items() if scope.sensitivity == "high"}
    if scopes is None:
        return sorted(high)
    found: set[str] = set()
    for scope in scopes:
        nearest = next((p for p in _prefixes(scope) if p in defined), None)
        if nearest in high:
            found.add(scope)
        found.update(h for h in high if covers(scope, h) and h != scope)
    return sorted(found)


def scopes_that_matter(catalog: Catalog, scopes: tuple[str, ...] | None) -> list[str]:
    """The catalog scopes whose definition `high_sensitivity_scopes` reads for these chosen scopes."""
    if scopes is None:
        return sorted(catalog.scopes)
    return sorted(s for s in catalog.scopes if any(covers(s, c) or covers(c, s) for c in scopes))


def _prefixes(scope: str) -> list[str]:
    """`a.b.c`, `a.b`, `a`: nearest first."""
    parts = scope.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def snapshot(catalog: Catalog) -> Catalog:
    """What a receipt reads of the catalog, as it is now: the live catalog changes under awaits."""
    copy = Catalog()
    copy.purposes, copy.scopes = dict(catalog.purposes), dict(catalog.scopes)
    return copy


class ReceiptIssuer:
    """Claims and signature for each receipt-bearing event."""

    def __init__(self, signer: ReceiptSigner, settings: ReceiptSettings) -> None:
        self.signer = signer
        self.settings = settings

    def receipt(self, recorded: RecordedEvent, catalog: Catalog) -> ReceiptView:
        return ReceiptView(event_id=recorded.event_id,
                           receipt=self.signer.sign(receipt_claims(recorded, catalog, self.settings)))

    def issue(self, recorded: list[RecordedEvent], catalog: Catalog) -> list[ReceiptView]:
        return [self.receipt(r, catalog) for r in recorded if has_receipt(r)]
