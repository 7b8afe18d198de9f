"""Partner credentials (admin) and the OAuth 2.0 token endpoint (partners, with their credential)."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from urllib.parse import unquote_plus

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath, HeaderParameter, JSONBody
from msgspec import Meta, Struct

from consent.api.deps import Access, Caller
from consent.api.errors import ERRORS, created
from consent.api.guards import admin
from consent.app.partner_access import (
    CLIENT_ID_MAX,
    CLIENT_SECRET_MAX,
    PARTNER_SCOPES,
    AccessToken,
    IssuedCredential,
    TokenRefused,
)
from consent.app.telemetry import note_violation
from consent.domain.ids import check_slug

# Cache-Control: no-store is set on every answer by the app (consent/api/app.py); RFC 6749 §5.1 adds Pragma.
NO_STORE = {"Pragma": "no-cache"}
# What a 401 of the token endpoints asks for (RFC 6749 §5.2; RFC 7617 requires the realm).
BASIC_CHALLENGE = 'Basic realm="consent", charset="UTF-8"'


class CredentialRequest(Struct, forbid_unknown_fields=True):
    # OAuth scopes the credential's tokens may carry; null = all of PARTNER_SCOPES.
    scopes: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(min_length=1, max_length=16)] | None = None


class CredentialController(Controller):
    path = "/v1/partners/{partner_id:str}/credentials"
    tags = ["partners"]
    guards = [admin]

    @post("/", status_code=201, responses=created(IssuedCredential),
          summary=f"Issue a client credential, limited to some of {', '.join(PARTNER_SCOPES)} if asked; "
                  "the secret is shown once (admin)")
    async def create(self, partner_id: FromPath[str], principal: Caller, partner_access: Access,
                     data: JSONBody[CredentialRequest | None] = None) -> Response[IssuedCredential]:
        check_slug(partner_id, "partner")
        issued = await partner_access.create_credential(partner_id, data.scopes if data else None, principal.actor)
        return Response(issued, status_code=201, headers=NO_STORE)

    @post("/{client_id:str}/rotate", status_code=201, responses=created(IssuedCredential),
          summary="A new credential with the same scopes; the old one keeps working for the configured "
                  "overlap (CONSENT_CREDENTIAL_OVERLAP), then not (admin)")
    async def rotate(self, partner_id: FromPath[str], client_id: FromPath[str], principal: Caller,
                     partner_access: Access) -> Response[IssuedCredential]:
        check_slug(partner_id, "partner")
        issued = await partner_access.rotate_credential(partner_id, client_id, principal.actor)
        return Response(issued, status_code=201, headers=NO_STORE)

    @delete("/{client_id:str}", status_code=204, responses=ERRORS,
            summary="Revoke a client credential; its tokens stop working at once (admin)")
    async def revoke(self, partner_id: FromPath[str], client_id: FromPath[str], principal: Caller,
                     partner_access: Access) -> None:
        await partner_access.revoke_credential(partner_id, client_id, principal.actor)


def _single(form: dict[str, Any], name: str) -> str | None:
    """A parameter sent once; RFC 6749 §3.2 forbids repeating one, so a repeat counts as invalid."""
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise TokenRefused("invalid_request", f"{name} must be sent exactly once")
    return value


# Base64 of the longest id and secret, each percent-encoded (3 characters a byte): longer is no credential.
_BASIC_MAX = 4 * (3 * (CLIENT_ID_MAX + CLIENT_SECRET_MAX) + 1) // 3 + 4
_MALFORMED_BASIC = "the Basic credentials are not base64 of a client id and secret joined by a colon"


def client_credentials(form: dict[str, Any], authorization: str | None) -> tuple[str | None, str | None]:
    """The client's id and secret, from HTTP Basic (client_secret_basic, RFC 6749 §2.3.1) or from the form
    (client_secret_post), never from both: RFC 6749 §2.3 allows one method a request. An Authorization
    header of another scheme is no client authentication here, and is ignored."""
    form_id, form_secret = _single(form, "client_id"), _single(form, "client_secret")
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return form_id, form_secret
    if form_secret is not None:
        raise TokenRefused("invalid_request", "authenticate the client with HTTP Basic or with the form, not both")
    try:
        if len(encoded) > _BASIC_MAX:
            raise ValueError("too long")
        user_pass = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise TokenRefused("invalid_client", _MALFORMED_BASIC, status=401) from None
    # Both halves are form-urlencoded before they are joined, so the first colon is the separator.
    raw_id, colon, raw_secret = user_pass.partition(":")
    client_id, client_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    if not colon or not 0 < len(client_id) <= CLIENT_ID_MAX or not 0 < len(client_secret) <= CLIENT_SECRET_MAX:
        raise TokenRefused("invalid_client", _MALFORMED_BASIC, status=401)
    if form_id is not None and form_id != client_id:
        raise TokenRefused("invalid_request", "the form's client_id is not the one in the Basic credentials")
    return client_id, client_secret


class TokenError(Struct):
    """RFC 6749 §5.2."""

    error: str
    error_description: str


_TOKEN_ERRORS = {
    400: ResponseSpec(TokenError, generate_examples=False,
                      description="invalid_request, unsupported_grant_type, invalid_scope, unauthorized_client"),
    401: ResponseSpec(TokenError, generate_examples=False, description="invalid_client"),
}
# The client authenticates with HTTP Basic ("client" in the OpenAPI document) or in the form (no scheme).
_CLIENT_AUTH: list[dict[str, list[str]]] = [{"client": []}, {}]
# Not a parameter of the OpenAPI document: the "client" security scheme describes it.
BasicCredentials = Annotated[str | None, HeaderParameter(name="Authorization", required=False,
                                                         include_in_schema=False)]


@post("/v1/oauth/token", status_code=200, tags=["partners"], security=_CLIENT_AUTH, responses=_TOKEN_ERRORS,
      summary="Client credentials grant (RFC 6749 §4.4): a short-lived partner access token")
async def token(data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
                partner_access: Access, authorization: BasicCredentials = None) -> Response[AccessToken]:
    try:
        client_id, client_secret = client_credentials(data, authorization)
        issued = await partner_access.issue_token(_single(data, "grant_type"), client_id, client_secret,
                                                  _single(data, "scope"))
    except TokenRefused as refused:
        return _refused(refused)
    return Response(issued, headers=NO_STORE)


@post("/v1/oauth/revoke", status_code=200, tags=["partners"], security=_CLIENT_AUTH, responses=_TOKEN_ERRORS,
      summary="Token revocation (RFC 7009): a partner gives up one of its access tokens, with its credential")
async def revoke_token(data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
                       partner_access: Access, authorization: BasicCredentials = None) -> Response[None]:
    try:
        client_id, client_secret = client_credentials(data, authorization)
        # token_type_hint is only a hint (RFC 7009 §2.1): access tokens are the only kind there is.
        await partner_access.revoke_token(client_id, client_secret, _single(data, "token"))
    except TokenRefused as refused:
        return _refused(refused)  # type: ignore[return-value]
    return Response(None, headers=NO_STORE)


def _refused(refused: TokenRefused) -> Response[TokenError]:
    note_violation(refused.error)  # the partner's, when the client id was known (PartnerAccess)
    headers = {**NO_STORE, **({"WWW-Authenticate": BASIC_CHALLENGE} if refused.status == 401 else {})}
    return Response(TokenError(refused.error, refused.description), status_code=refused.status, headers=headers)


class AuthorizationServerMetadata(Struct):
    """RFC 8414 §2, for the client credentials grant only."""

    issuer: str
    token_endpoint: str
    revocation_endpoint: str
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    grant_types_supported: list[str]
    scopes_supported: list[str]
    # REQUIRED by RFC 8414 §2, though it names what the authorization endpoint answers, and this service has
    # none (no user is redirected here): an empty list says so. Listing "code" or "token" would promise
    # flows that do not exist; a validator insisting on a non-empty list is stricter than the RFC's text.
    response_types_supported: list[str]
    service_documentation: str


_CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


# Nothing secret or personal: caches may keep it, briefly, like the receipt keys (/.well-known/jwks.json).
@get("/.well-known/oauth-authorization-server", tags=["partners"], security=[],
     cache_control=CacheControlHeader(max_age=300, public=True),
     summary="OAuth 2.0 authorization server metadata (RFC 8414): where partners get and revoke tokens, and how "
             "they authenticate (no credentials needed)")
async def authorization_server_metadata(request: Request) -> AuthorizationServerMetadata:
    # The issuer is CONSENT_PUBLIC_URL, else this request's base URL (scheme, host and any root path as this
    # process sees them: behind a proxy, set CONSENT_PUBLIC_URL). For an issuer with a path, RFC 8414 §3.1
    # puts the document at /.well-known/oauth-authorization-server<path>: the proxy maps that here.
    issuer = (request.app.state.container.settings.public_url or str(request.base_url)).rstrip("/")
    return AuthorizationServerMetadata(
        issuer=issuer, token_endpoint=f"{issuer}/v1/oauth/token", revocation_endpoint=f"{issuer}/v1/oauth/revoke",
        token_endpoint_auth_methods_supported=_CLIENT_AUTH_METHODS,
        revocation_endpoint_auth_methods_supported=_CLIENT_AUTH_METHODS,
        grant_types_supported=["client_credentials"], scopes_supported=list(PARTNER_SCOPES),
        response_types_supported=[], service_documentation=f"{issuer}/schema")
