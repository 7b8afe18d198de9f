"""Partner credentials (admin) and the OAuth 2.0 token endpoint (partners, with their credential)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, delete, post
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, FromPath
from msgspec import Struct

from consent.api.auth import require_admin
from consent.api.deps import Access, Caller
from consent.api.errors import ERRORS, created
from consent.app.partner_access import AccessToken, IssuedCredential, TokenRefused
from consent.domain.ids import check_slug

# Cache-Control: no-store is set on every answer by the app (consent/api/app.py); RFC 6749 §5.1 adds Pragma.
NO_STORE = {"Pragma": "no-cache"}


class CredentialController(Controller):
    path = "/v1/partners/{partner_id:str}/credentials"
    tags = ["partners"]

    @post("/", status_code=201, responses=created(IssuedCredential),
          summary="Issue a client credential; the secret is shown once (admin)")
    async def create(self, partner_id: FromPath[str], principal: Caller,
                     partner_access: Access) -> Response[IssuedCredential]:
        require_admin(principal)
        check_slug(partner_id, "partner")
        issued = await partner_access.create_credential(partner_id)
        return Response(issued, status_code=201, headers=NO_STORE)

    @delete("/{client_id:str}", status_code=204, responses=ERRORS,
            summary="Revoke a client credential; its tokens stop working at once (admin)")
    async def revoke(self, partner_id: FromPath[str], client_id: FromPath[str], principal: Caller,
                     partner_access: Access) -> None:
        require_admin(principal)
        await partner_access.revoke_credential(partner_id, client_id)


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
    400: ResponseSpec(TokenError, generate_examples=False, description="invalid_request, unsupported_grant_type"),
    401: ResponseSpec(TokenError, generate_examples=False, description="invalid_client"),
}


@post("/v1/oauth/token", status_code=200, tags=["partners"], security=[], responses=_TOKEN_ERRORS,
      summary="Client credentials grant (RFC 6749 §4.4): a short-lived partner access token")
async def token(data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
                partner_access: Access) -> Response[AccessToken]:
    try:
        issued = await partner_access.issue_token(*(_single(data, name) for name in (
            "grant_type", "client_id", "client_secret")))
    except TokenRefused as refused:
        headers = {**NO_STORE, **({"WWW-Authenticate": "Basic"} if refused.status == 401 else {})}
        return Response(TokenError(refused.error, refused.description),  # type: ignore[arg-type]
                        status_code=refused.status, headers=headers)
    return Response(issued, headers=NO_STORE)
