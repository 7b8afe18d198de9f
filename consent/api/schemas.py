"""Request bodies (docs/api.md). Unknown fields are refused so that a typo is an error, not a silent no-op."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from consent.domain.events import LegalBasis, RequestSource, Sensitivity

# PostgreSQL cannot store NUL in text or JSONB: refuse it here rather than fail in the database.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Meta(max_length=10_000, pattern=NO_NUL)]
Title = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Id = Annotated[str, Meta(min_length=1, max_length=255)]


class PurposeIn(Struct, forbid_unknown_fields=True):
    title: Title
    description: Text
    legal_basis: LegalBasis
    retention: Annotated[str, Meta(min_length=2, max_length=64)]
    sale_or_sharing: bool = False
    material_change: bool = False


class ScopeIn(Struct, forbid_unknown_fields=True):
    title: Title
    description: Text
    sensitivity: Sensitivity


class PartnerIn(Struct, forbid_unknown_fields=True):
    name: Title
    status: Literal["sandbox", "active"] = "sandbox"
    data_uses: Annotated[dict[Id, Annotated[list[Id], Meta(max_length=200)]], Meta(max_length=200)] = {}
    contract_ends_at: datetime | None = None
    # `pairwise`: the partner knows subjects only by pseudonyms of its own. Left out: unchanged.
    identifiers: Literal["public", "pairwise"] | None = None
    # Requests a second for this partner (token bucket, burst of the same size); null: the service's
    # default (CONSENT_PARTNER_RATE_LIMIT); 0: no limit.
    rate_limit: Annotated[int, Meta(ge=0, le=1_000_000)] | None = None

    def __post_init__(self) -> None:
        self.contract_ends_at = _utc(self.contract_ends_at, "contract_ends_at")


class CatalogDocument(Struct, forbid_unknown_fields=True):
    """The whole catalog as code (YAML or JSON): each entity by id, with the fields of its PUT route.
    Entities left out are not changed (a plan lists them as unmanaged)."""

    purposes: Annotated[dict[Id, PurposeIn], Meta(max_length=1000)] = {}
    scopes: Annotated[dict[Id, ScopeIn], Meta(max_length=1000)] = {}
    partners: Annotated[dict[Id, PartnerIn], Meta(max_length=1000)] = {}


class ChangeIn(Struct, forbid_unknown_fields=True):
    purpose: Id
    action: Literal["grant", "withdraw", "object"]
    partner: Id | None = None
    scopes: Annotated[list[Id], Meta(max_length=200)] | None = None
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        self.expires_at = _utc(self.expires_at, "expires_at")


class EvidenceIn(Struct, forbid_unknown_fields=True):
    """Personal data: stored encrypted with the subject's key, never published, erased with the subject."""

    collection_point: Annotated[str, Meta(max_length=200, pattern=NO_NUL)] | None = None
    text_shown: Text | None = None
    user_note: Annotated[str, Meta(max_length=2000, pattern=NO_NUL)] | None = None
    ip_address: Annotated[str, Meta(max_length=45)] | None = None  # IPv4 or IPv6, as the platform saw it
    user_agent: Annotated[str, Meta(max_length=512, pattern=NO_NUL)] | None = None

    def __post_init__(self) -> None:
        if self.ip_address is not None:
            try:
                self.ip_address = str(ipaddress.ip_address(self.ip_address))
            except ValueError:
                raise ValueError("ip_address is not an IPv4 or IPv6 address") from None


class ConsentRequest(Struct, forbid_unknown_fields=True):
    changes: Annotated[list[ChangeIn], Meta(min_length=1, max_length=100)]
    source: RequestSource = "api"
    evidence: EvidenceIn | None = None


def _utc(value: datetime | None, field: str) -> datetime | None:
    """Times are stored and answered in UTC; one that has no UTC equivalent (e.g. year 9999 at
    -01:00) is refused here, not by the database. Naive times are left for the domain to refuse."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{field} is out of range once converted to UTC") from None
