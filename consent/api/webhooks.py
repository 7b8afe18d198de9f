"""Webhook routes: a partner's endpoints and their delivery ledger (docs/webhooks.md). An admin, or the partner
itself with a token carrying `webhooks:manage`; the guard decides before the body is read, and another partner
is refused (403) whatever it names."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from msgspec import UNSET, Meta, Struct, UnsetType

from consent.api.deps import Caller
from consent.api.errors import ERRORS, created
from consent.api.guards import own_partner_or_admin
from consent.app.webhook_views import CreatedWebhook, Delivery, DeliveryPage, ReplayResult, RotatedSecret, WebhookView
from consent.app.webhooks import MAX_DESCRIPTION, WebhookService
from consent.domain.ids import check_slug

Webhooks = NamedDependency[WebhookService]
SCOPE = "webhooks:manage"
# Admins with their key; partners with a token carrying the opt-in scope (the `webhooks` scheme).
SECURITY = [{"bearer": []}, {"webhooks": [SCOPE]}]
NO_STORE = {"Pragma": "no-cache"}  # a secret is in the answer

Url = Annotated[str, Meta(min_length=1, max_length=2048, description="https:// (http:// only where the operator "
                                                                       "allows it); no user name or fragment")]
EventTypes = Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(min_length=1, max_length=20, description=(
    "Event types wanted (`subject.withdrawn` or `io.consent.v1.subject.withdrawn`); null: every type"))]
Description = Annotated[str, Meta(max_length=MAX_DESCRIPTION)]


class WebhookIn(Struct, forbid_unknown_fields=True):
    url: Url
    events: EventTypes | None = None
    description: Description | None = None


class WebhookPatch(Struct, forbid_unknown_fields=True):
    url: Url | UnsetType = UNSET
    events: EventTypes | None | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    description: Description | None | UnsetType = UNSET


class ReplayIn(Struct, forbid_unknown_fields=True):
    after_position: Annotated[int, Meta(ge=0, description="Events after this log position are sent again")]


class WebhookController(Controller):
    path = "/v1/partners/{partner_id:str}/webhooks"
    tags = ["webhooks"]
    guards = [own_partner_or_admin(SCOPE)]
    security = SECURITY

    @post("/", status_code=201, responses=created(CreatedWebhook),
          summary="Register a webhook; the signing secret is in this answer only (admin or the partner)")
    async def create(self, partner_id: FromPath[str], data: JSONBody[WebhookIn], principal: Caller,
                     webhooks: Webhooks) -> Response[CreatedWebhook]:
        check_slug(partner_id, "partner")
        made = await webhooks.register(partner_id, data.url, data.events, data.description, principal.actor)
        return Response(made, status_code=201, headers=NO_STORE)

    @get("/", responses=ERRORS, summary="The partner's webhooks, without secrets (admin or the partner)")
    async def list_webhooks(self, partner_id: FromPath[str], webhooks: Webhooks) -> list[WebhookView]:
        return await webhooks.list(partner_id)

    @get("/{webhook_id:str}", responses=ERRORS, summary="One webhook, without its secret (admin or the partner)")
    async def read(self, partner_id: FromPath[str], webhook_id: FromPath[str], webhooks: Webhooks) -> WebhookView:
        return await webhooks.get(partner_id, webhook_id)

    @patch("/{webhook_id:str}", responses=ERRORS,
           summary="Change a webhook's url, events, description or enabled (admin or the partner)")
    async def change(self, partner_id: FromPath[str], webhook_id: FromPath[str], data: JSONBody[WebhookPatch],
                     principal: Caller, webhooks: Webhooks) -> WebhookView:
        changes = {f: getattr(data, f) for f in data.__struct_fields__ if getattr(data, f) is not UNSET}
        return await webhooks.update(partner_id, webhook_id, changes, principal.actor)

    @delete("/{webhook_id:str}", status_code=204, responses=ERRORS,
            summary="Delete a webhook and its delivery ledger (admin or the partner)")
    async def remove(self, partner_id: FromPath[str], webhook_id: FromPath[str], principal: Caller,
                     webhooks: Webhooks) -> None:
        await webhooks.delete(partner_id, webhook_id, principal.actor)

    @post("/{webhook_id:str}/rotate-secret", status_code=201, responses=created(RotatedSecret),
          summary="A new signing secret; the previous one keeps signing beside it for CONSENT_CREDENTIAL_OVERLAP "
                  "seconds (admin or the partner)")
    async def rotate_secret(self, partner_id: FromPath[str], webhook_id: FromPath[str], principal: Caller,
                            webhooks: Webhooks) -> Response[RotatedSecret]:
        rotated = await webhooks.rotate_secret(partner_id, webhook_id, principal.actor)
        return Response(rotated, status_code=201, headers=NO_STORE)

    @get("/{webhook_id:str}/deliveries", responses=ERRORS,
         summary="The delivery ledger: each event sent or to send, with every attempt (admin or the partner)")
    async def deliveries(self, partner_id: FromPath[str], webhook_id: FromPath[str], webhooks: Webhooks,
                         status: FromQuery[Literal["pending", "delivered", "failed", "dead"] | None] = None,
                         after: Annotated[int, Parameter(ge=0, le=2**62)] = 0,
                         limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> DeliveryPage:
        return await webhooks.deliveries(partner_id, webhook_id, status, after, limit)

    @post("/{webhook_id:str}/deliveries/{delivery_id:int}/retry", status_code=200, responses=ERRORS,
          summary="Attempt a delivery again now, whatever its state (admin or the partner)")
    async def retry(self, partner_id: FromPath[str], webhook_id: FromPath[str], delivery_id: FromPath[int],
                    principal: Caller, webhooks: Webhooks) -> Delivery:
        return await webhooks.retry(partner_id, webhook_id, delivery_id, principal.actor)

    @post("/{webhook_id:str}/replay", status_code=200, responses=ERRORS,
          summary="Send the partner's events after a log position again, up to 10,000 positions a call "
                  "(admin or the partner)")
    async def replay(self, partner_id: FromPath[str], webhook_id: FromPath[str], data: JSONBody[ReplayIn],
                     principal: Caller, webhooks: Webhooks) -> ReplayResult:
        return await webhooks.replay(partner_id, webhook_id, data.after_position, principal.actor)
