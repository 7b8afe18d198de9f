"""What the OpenAPI document shows of request bodies that the handlers cannot say themselves.

- An example of every request body, by operation id: the viewer (/schema) fills "Try it out" with it.
  They tell one story (scopes, a purpose, a partner, a subject's grant, a decision about it), so that
  run in order on an empty service they all succeed (tests/integration/test_openapi_document.py).
- Typed schemas of the bodies that handlers read themselves: the two OAuth forms (consent/api/partner_access.py
  reads them as plain mappings, to answer RFC 6749 errors of its own) and the catalog document, which
  consent/api/catalog_code.py takes as JSON or YAML. These Structs document what the handlers read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from consent.api.schemas import CatalogDocument
from consent.app.partner_access import CLIENT_ID_MAX, CLIENT_SECRET_MAX, PARTNER_SCOPES

ClientId = Annotated[str, Meta(max_length=CLIENT_ID_MAX, description=(
    "The credential's client id, unless the client authenticates with HTTP Basic"))]
ClientSecret = Annotated[str, Meta(max_length=CLIENT_SECRET_MAX, description=(
    "The credential's secret, unless the client authenticates with HTTP Basic"))]


class TokenRequest(Struct):
    """Client credentials grant (RFC 6749 §4.4), form-urlencoded; each parameter at most once."""

    grant_type: Literal["client_credentials"]
    client_id: ClientId | UnsetType = UNSET
    client_secret: ClientSecret | UnsetType = UNSET
    scope: Annotated[str, Meta(description=(
        f"Space-separated subset of the credential's scopes ({', '.join(PARTNER_SCOPES)}); "
        "left out: all of them"))] | UnsetType = UNSET


class RevocationRequest(Struct):
    """Token revocation (RFC 7009 §2.1), form-urlencoded; each parameter at most once."""

    token: Annotated[str, Meta(description="The access token to give up")]
    token_type_hint: Annotated[str, Meta(description=(
        "Only a hint: access tokens are the only kind this service issues"))] | UnsetType = UNSET
    client_id: ClientId | UnsetType = UNSET
    client_secret: ClientSecret | UnsetType = UNSET


BODY_SCHEMAS: dict[str, type[Struct]] = {"issueToken": TokenRequest, "revokeToken": RevocationRequest,
                                         "planCatalog": CatalogDocument, "applyCatalog": CatalogDocument}


_CLIENT = {"client_id": "cl_Q2hhbmdlTWVQbGVhc2U", "client_secret": "s3cr3t-shown-once-at-issue"}

REQUEST_EXAMPLES: dict[str, object] = {
    "putScope": {"title": "Order history", "description": "Orders placed in the last two years",
                 "sensitivity": "medium"},
    "putPurpose": {"title": "Marketing e-mails",
                   "description": "News and offers about our products, by e-mail, at most once a week.",
                   "legal_basis": "consent", "retention": "P2Y", "sale_or_sharing": False},
    "putPartner": {"name": "Acme Analytics", "status": "active", "data_uses": {"marketing": ["orders.history"]},
                   "contract_ends_at": "2099-12-31T23:59:59Z", "rate_limit": 100},
    "createCredential": {"scopes": ["decisions:read", "catalog:read"]},
    "issueToken": {"grant_type": "client_credentials", **_CLIENT, "scope": "decisions:read"},
    "revokeToken": {"token": "eyJhbGciOiJIUzI1NiIsImtpZCI6ImNvbnNlbnQtcGFydG5lciJ9.e30.c2lnbmF0dXJl",
                    "token_type_hint": "access_token", **_CLIENT},
    "changeConsents": {
        "changes": [{"purpose": "marketing", "action": "grant", "partner": "acme", "scopes": ["orders.history"],
                     "expires_at": "2099-01-01T00:00:00Z"}],
        "source": "web",
        "evidence": {"collection_point": "signup-form-v3", "text_shown": "Yes, Acme may send me offers by e-mail",
                     "ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
    },
    "decide": {"subject_id": "u-12345", "purpose": "marketing", "scopes": ["orders.history"], "partner": "acme"},
    "planCatalog": {"scopes": {"orders.history": {"title": "Order history",
                                                  "description": "Orders placed in the last two years",
                                                  "sensitivity": "medium"}},
                    "purposes": {"marketing": {"title": "Marketing e-mails", "description": (
                        "News and offers about our products, by e-mail, at most once a week."),
                        "legal_basis": "consent", "retention": "P2Y", "sale_or_sharing": False}},
                    "partners": {"acme": {"name": "Acme Analytics", "status": "active",
                                          "data_uses": {"marketing": ["orders.history"]},
                                          "contract_ends_at": "2099-12-31T23:59:59Z", "rate_limit": 100}}},
    "decideBatch": {"items": [{"subject_id": "u-12345", "purpose": "marketing", "scopes": ["orders.history"]},
                              {"subject_id": "u-67890", "purpose": "marketing", "scopes": ["orders.history"]}],
                    "partner": "acme"},
    "createWebhook": {"url": "https://hooks.acme.example/consent", "events": ["subject.withdrawn", "subject.erased",
                                                                            "partner.contract_ending"],
                      "description": "Stop processing and delete our copy"},
    "updateWebhook": {"enabled": True, "events": None},
    "replayWebhook": {"after_position": 0},
}
REQUEST_EXAMPLES["applyCatalog"] = REQUEST_EXAMPLES["planCatalog"]
