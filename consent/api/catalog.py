"""Catalog routes: purposes, scopes, partners. Admins write; any authenticated caller reads (guards.py)."""

from __future__ import annotations

from litestar import Controller, Response, get, post, put
from litestar.params import FromPath, JSONBody

from consent.api.auth import Principal
from consent.api.deps import Caller, Catalogs
from consent.api.errors import ERRORS, created
from consent.api.guards import admin, any_caller, own_partner_or_admin
from consent.api.schemas import PartnerIn, PurposeIn, ScopeIn
from consent.api.time_travel import At, past_moment
from consent.app.catalog_service import CatalogService, Written
from consent.app.views import PartnerView, PurposeView, ScopeView, partner_view, purpose_view, scope_view
from consent.domain import catalog as cat
from consent.domain.errors import DomainError, NotFound
from consent.domain.ids import check_scope, check_slug
from consent.domain.streams import PARTNER, PURPOSE, SCOPE, stream_of

# The log names a scope's stream `scope:<id>` in a 200-character column, shorter than the 255
# check_scope allows: a longer id would fail in PostgreSQL (503) instead of being refused.
MAX_SCOPE_ID = 200 - len(stream_of(SCOPE, ""))


# Partners need the catalog:read scope; other callers authenticate as usual.
CATALOG_READ = [{"bearer": []}, {"partner": ["catalog:read"]}]
READER = any_caller("catalog:read")

def _written(written: Written, view) -> Response:
    return Response(view(written.entity), status_code=201 if written.created else 200)


class PurposeController(Controller):
    path = "/v1/purposes"
    tags = ["catalog"]

    @put("/{purpose_id:str}", summary="Define or revise a purpose (admin)",
         responses=created(PurposeView), status_code=200, guards=[admin])
    async def put_purpose(self, purpose_id: FromPath[str], data: JSONBody[PurposeIn], principal: Caller,
                          catalogs: Catalogs) -> Response[PurposeView]:
        check_slug(purpose_id, "purpose")
        spec = cat.PurposeSpec(title=data.title, description=data.description, legal_basis=data.legal_basis,
                               retention=data.retention, sale_or_sharing=data.sale_or_sharing)
        written = await catalogs.put_purpose(purpose_id, spec, data.material_change, principal.actor)
        return _written(written, purpose_view)

    @get("/", summary="List purposes (any authenticated caller)", responses=ERRORS,
         security=CATALOG_READ, guards=[READER])
    async def list_purposes(self, catalogs: Catalogs) -> list[PurposeView]:
        return [purpose_view(p) for _, p in sorted(catalogs.catalog.purposes.items())]

    @get("/{purpose_id:str}", summary="Read a purpose (any authenticated caller)", responses=ERRORS,
         security=CATALOG_READ, guards=[READER])
    async def get_purpose(self, purpose_id: FromPath[str], catalogs: Catalogs, at: At = None) -> PurposeView:
        if at is not None:
            past = await catalogs.catalog_at(past_moment(at), only=stream_of(PURPOSE, purpose_id))
            return purpose_view(past.purpose(purpose_id))  # 404 when it did not exist yet
        return purpose_view(catalogs.catalog.purpose(purpose_id))

    @post("/{purpose_id:str}/retire", summary="Retire a purpose (admin)", status_code=200,
          responses=ERRORS, guards=[admin])
    async def retire_purpose(self, purpose_id: FromPath[str],
                principal: Caller, catalogs: Catalogs) -> PurposeView:
        check_slug(purpose_id, "purpose")
        return purpose_view((await catalogs.retire_purpose(purpose_id, principal.actor)).entity)


class ScopeController(Controller):
    path = "/v1/scopes"
    tags = ["catalog"]

    @put("/{scope_id:str}", summary="Define a scope (admin)", responses=created(ScopeView), status_code=200,
         guards=[admin])
    async def put_scope(self, scope_id: FromPath[str], data: JSONBody[ScopeIn], principal: Caller,
                        catalogs: Catalogs) -> Response[ScopeView]:
        check_scope(scope_id)
        if len(scope_id) > MAX_SCOPE_ID:
            raise DomainError("validation_failed", f"scope id must be at most {MAX_SCOPE_ID} characters")
        spec = cat.ScopeSpec(title=data.title, description=data.description, sensitivity=data.sensitivity)
        return _written(await catalogs.put_scope(scope_id, spec, principal.actor), scope_view)

    @get("/", summary="List scopes (any authenticated caller)", responses=ERRORS,
         security=CATALOG_READ, guards=[READER])
    async def list_scopes(self, catalogs: Catalogs) -> list[ScopeView]:
        return [scope_view(s) for _, s in sorted(catalogs.catalog.scopes.items())]

    @get("/{scope_id:str}", summary="Read a scope (any authenticated caller)", responses=ERRORS,
         security=CATALOG_READ, guards=[READER])
    async def get_scope(self, scope_id: FromPath[str], catalogs: Catalogs) -> ScopeView:
        scope = catalogs.catalog.scopes.get(scope_id)
        if scope is None:
            raise NotFound("scope", scope_id)
        return scope_view(scope)


class PartnerController(Controller):
    path = "/v1/partners"
    tags = ["partners"]

    @put("/{partner_id:str}", summary="Register or update a partner (admin)", responses=created(PartnerView),
         status_code=200, guards=[admin])
    async def put_partner(self, partner_id: FromPath[str], data: JSONBody[PartnerIn], principal: Caller,
                          catalogs: Catalogs) -> Response[PartnerView]:
        check_slug(partner_id, "partner")
        spec = cat.PartnerSpec(name=data.name, status=data.status,
                               data_uses={k: tuple(v) for k, v in data.data_uses.items()},
                               contract_ends_at=data.contract_ends_at, identifiers=data.identifiers,
                               rate_limit=data.rate_limit)
        return _written(await catalogs.put_partner(partner_id, spec, principal.actor), partner_view)

    @get("/", summary="List partners (admin)", responses=ERRORS, guards=[admin])
    async def list_partners(self, catalogs: Catalogs) -> list[PartnerView]:
        return [partner_view(p) for _, p in sorted(catalogs.catalog.partners.items())]

    @get("/{partner_id:str}", summary="Read a partner (admin, or the partner itself)", responses=ERRORS,
         security=CATALOG_READ, guards=[own_partner_or_admin("catalog:read")])
    async def get_partner(self, partner_id: FromPath[str], catalogs: Catalogs, at: At = None) -> PartnerView:
        if at is not None:
            past = await catalogs.catalog_at(past_moment(at), only=stream_of(PARTNER, partner_id))
            return partner_view(past.partner(partner_id))
        return partner_view(catalogs.catalog.partner(partner_id))

    @post("/{partner_id:str}/suspend", summary="Suspend a partner (admin)", status_code=200,
          responses=ERRORS, guards=[admin])
    async def suspend(self, partner_id: FromPath[str],
                principal: Caller, catalogs: Catalogs) -> PartnerView:
        return await _change_status(partner_id, "suspend", principal, catalogs)

    @post("/{partner_id:str}/reinstate", summary="Reinstate a suspended partner (admin)", status_code=200,
          responses=ERRORS, guards=[admin])
    async def reinstate(self, partner_id: FromPath[str],
                principal: Caller, catalogs: Catalogs) -> PartnerView:
        return await _change_status(partner_id, "reinstate", principal, catalogs)

    @post("/{partner_id:str}/terminate", summary="Terminate a partner, finally (admin)", status_code=200,
          responses=ERRORS, guards=[admin])
    async def terminate(self, partner_id: FromPath[str],
                principal: Caller, catalogs: Catalogs) -> PartnerView:
        return await _change_status(partner_id, "terminate", principal, catalogs)


async def _change_status(partner_id: str, command, principal: Principal, catalogs: CatalogService) -> PartnerView:
    check_slug(partner_id, "partner")
    return partner_view((await catalogs.change_partner_status(partner_id, command, principal.actor)).entity)
