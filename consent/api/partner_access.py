"""Partner credentials (admin) and the OAuth 2.0 token endpoint (partners, with their credential)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, post
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath, JSONBody
from msgspec import Meta, Struct

from consent.api.auth import require_admin
from consent.api.deps import Access, Caller
from consent.api.errors import ERRORS, created
from consent.app.partner_access import PARTNER_SCOPES, AccessToken, IssuedCredential, TokenRefused
from consent.domain.ids import check_slug

# Cache-Control: no-store is set on every answer by the app (consent/api/app.py); RFC 6749 §5.1 adds Pragma.
NO_STORE = {"Pragma": "no-cache"}


class CredentialRequest(Struct, forbid_unknown_fields=True):
    # OAuth scopes the credential's tokens may carry; null = all of PARTNER_SCOPES.
    scopes: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(min_length=1, max_length=16)] | None = None


class CredentialController(Controller):
    path = "/v1/partners/{partner_id:str}/credentials"
    tags = ["partners"]

    @post("/", status_code=201, responses=created(IssuedCredential),
          summary=f"Issue a client credential, limited to some of {', '.join(PARTNER_SCOPES)} if asked; "
                  "the secret is shown once (admin)")
    async def create(self, partner_id: FromPath[str], principal: Caller, partner_access: Access,
                     data: JSONBody[CredentialRequest | None] = None) -> Response[IssuedCredential]:
        require_admin(principal)
        check_slug(partner_id, "partner")
        issued = await partner_access.create_credential(partner_id, data.scopes if data else None, principal.actor)
        return Response(issued, status_code=201, headers=NO_STORE)

    @post("/{client_id:str}/rotate", status_code=201, responses=created(IssuedCredential),
          summary="A new credential with the same scopes; the old one keeps working for the configured "
                  "overlap (CONSENT_CREDENTIAL_OVERLAP), then not (admin)")
    async def rotate(self, partner_id: FromPath[str], client_id: FromPath[str], principal: Caller,
                     partner_access: Access) -> Response[IssuedCredential]:
        require_admin(principal)
        check_slug(partner_id, "partner")
        issued = await partner_access.rotate_credential(partner_id, client_id, principal.actor)
        return Response(issued, status_code=201, headers=NO_STORE)

    @delete("/{client_id:str}", status_code=204, responses=ERRORS,
            summary="Revoke a client credential; its tokens stop working at once (admin)")
    async def revoke(self, partner_id: FromPath[str], client_id: FromPath[str], principal: Caller,
                     partner_access: Access) -> None:
        require_admin(principal)
        await partner_access.revoke_credential(partner_id, client_id, principal.actor)


def _single(form: dict[str, Any], name: str) -> str | None:
    """A parameter sent once; RFC 6749 §3.2 forbids repeating one, so a repeat counts as invalid."""
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise TokenRefused("invalid_request", f"{name} must be sent exactly once")
    return value


class TokenError(Struct):
    """RFC 6749 §5.2."""

    error: str
    error_description: str


_TOKEN_ERRORS = {
    400: ResponseSpec(TokenError, generate_examples=False,
                      description="invalid_request, unsupported_grant_type, invalid_scope, unauthorized_client"),
    401: ResponseSpec(TokenError, generate_examples=False, description="invalid_client"),
}


@post("/v1/oauth/token", status_code=200, tags=["partners"], security=[], responses=_TOKEN_ERRORS,
      summary="Client credentials grant (RFC 6749 §4.4): a short-lived partner access token")
async def token(data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
                partner_access: Access) -> Response[AccessToken]:
    try:
        issued = await partner_access.issue_token(*(_single(data, name) for name in (
            "grant_type", "client_id", "client_secret", "scope")))
    except TokenRefused as refused:
        return _refused(refused)
    return Response(issued, headers=NO_STORE)


@post("/v1/oauth/revoke", status_code=200, tags=["partners"], security=[], responses=_TOKEN_ERRORS,
      summary="Token revocation (RFC 7009): a partner gives up one of its access tokens, with its credential")
async def revoke_token(data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
                       partner_access: Access) -> Response[None]:
    try:
        # token_type_hint is only a hint (RFC 7009 §2.1): access tokens are the only kind there is.
        await partner_access.revoke_token(*(_single(data, name) for name in ("client_id", "client_secret", "token")))
    except TokenRefused as refused:
        return _refused(refused)  # type: ignore[return-value]
    return Response(None, headers=NO_STORE)


def _refused(refused: TokenRefused) -> Response[TokenError]:
    headers = {**NO_STORE, **({"WWW-Authenticate": "Basic"} if refused.status == 401 else {})}
    return Response(TokenError(refused.error, refused.description), status_code=refused.status, headers=headers)
