"""Partner credentials (admin) and the OAuth 2.0 token endpoint (partners, with their credential)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath

from consent.api.auth import require_admin
from consent.api.deps import Access, Caller
from consent.api.errors import ERRORS, created
from consent.app.partner_access import AccessToken, IssuedCredential, TokenRefused
from consent.domain.ids import check_slug

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


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


@post("/v1/oauth/token", status_code=200, tags=["partners"], security=[],
      summary="Client credentials grant (RFC 6749 §4.4): a short-lived partner access token")
async def token(data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
                partner_access: Access) -> Response[AccessToken]:
    try:
        issued = await partner_access.issue_token(data.get("grant_type"), data.get("client_id"),
                                                  data.get("client_secret"))
    except TokenRefused as refused:
        headers = {**NO_STORE, **({"WWW-Authenticate": "Basic"} if refused.status == 401 else {})}
        return Response({"error": refused.error, "error_description": refused.description},  # type: ignore[arg-type]
                        status_code=refused.status, headers=headers)
    return Response(issued, headers=NO_STORE)
