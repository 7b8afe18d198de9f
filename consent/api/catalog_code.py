"""Catalog as code (admin): plan and apply a whole catalog document, in JSON or YAML (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import yaml
from litestar import Request, get, post
from litestar.params import Parameter

from consent.api.deps import Caller
from consent.api.errors import ERRORS, problem
from consent.api.guards import admin
from consent.api.schemas import CatalogDocument, PartnerIn, PurposeIn, ScopeIn
from consent.app.catalog_documents import CatalogApplied, CatalogPlan
from consent.app.catalog_plan import Desired
from consent.domain import catalog as cat
from consent.domain.ids import check_scope, check_slug

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class _PlainYaml(yaml.SafeLoader):
    """YAML without anchors and aliases: a catalog needs none, and nested aliases expand a small body into
    an enormous document (a "billion laughs")."""

    def fetch_alias(self) -> None:
        raise yaml.YAMLError("aliases (*name) are not accepted in a catalog document")

    def fetch_anchor(self) -> None:
        raise yaml.YAMLError("anchors (&name) are not accepted in a catalog document")


def read_document(body: bytes, content_type: str) -> Desired:
    """The document as domain specs; a 400 problem for anything malformed, as the catalog routes answer."""
    try:
        if content_type.split(";")[0].strip().lower() in YAML_TYPES:
            raw: Any = yaml.load(body.decode("utf-8"), Loader=_PlainYaml) or {}  # noqa: S506 - a SafeLoader
            document = msgspec.convert(raw, CatalogDocument)
        else:
            document = msgspec.json.decode(body, type=CatalogDocument)
    except (msgspec.ValidationError, msgspec.DecodeError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise problem(400, "validation_failed", f"the catalog document: {error}"[:1000]) from None
    for purpose_id in document.purposes:
        check_slug(purpose_id, "purpose")
    for partner_id in document.partners:
        check_slug(partner_id, "partner")
    for scope_id in document.scopes:
        check_scope(scope_id)
    return Desired(
        scopes={i: cat.ScopeSpec(title=s.title, description=s.description, sensitivity=s.sensitivity)
                for i, s in document.scopes.items()},
        purposes={i: (cat.PurposeSpec(title=p.title, description=p.description, legal_basis=p.legal_basis,
                                      retention=p.retention, sale_or_sharing=p.sale_or_sharing), p.material_change)
                  for i, p in document.purposes.items()},
        partners={i: cat.PartnerSpec(name=p.name, status=p.status,
                                     data_uses={k: tuple(v) for k, v in p.data_uses.items()},
                                     contract_ends_at=p.contract_ends_at, identifiers=p.identifiers,
                                     rate_limit=p.rate_limit)
                  for i, p in document.partners.items()})


@get("/v1/catalog", tags=["catalog"], guards=[admin], responses=ERRORS,
     summary="The live catalog as one document, which an apply reproduces exactly (admin)")
async def export_catalog(request: Request, principal: Caller) -> CatalogDocument:
    catalog = request.app.state.container.catalog_service.catalog
    return CatalogDocument(
        scopes={s.id: ScopeIn(title=s.title, description=s.description, sensitivity=s.sensitivity)
                for s in sorted(catalog.scopes.values(), key=lambda s: s.id)},
        # Retiring, suspending and terminating are commands of their own: a document holds what a PUT sets
        # (a retired purpose's text, a suspended partner's sandbox or active status). A terminated partner
        # can never change again: it is left out, and a plan lists it as unmanaged.
        purposes={p.id: PurposeIn(title=p.title, description=p.description, legal_basis=p.legal_basis,
                                  retention=p.retention, sale_or_sharing=p.sale_or_sharing)
                  for p in sorted(catalog.purposes.values(), key=lambda p: p.id)},
        partners={p.id: PartnerIn(name=p.name, status=p.base_status, data_uses={k: list(v) for k, v in
                                                                                p.data_uses.items()},
                                  contract_ends_at=p.contract_ends_at, identifiers=p.identifiers,
                                  rate_limit=p.rate_limit)
                  for p in sorted(catalog.partners.values(), key=lambda p: p.id) if p.status != "terminated"})


YAML_TOO = "The body is a CatalogDocument as application/json, or the same document as application/yaml."


@post("/v1/catalog/plan", tags=["catalog"], guards=[admin], status_code=200, responses=ERRORS,
      summary="What a catalog document would change, and whom it would affect; writes nothing (admin)",
      description=YAML_TOO)
async def plan_catalog(request: Request, principal: Caller) -> CatalogPlan:
    # The body is read here (JSON or YAML), after the guard; the OpenAPI document describes it as a
    # CatalogDocument (consent/api/request_examples.py, BODY_SCHEMAS).
    desired = read_document(await request.body(), request.headers.get("content-type", ""))
    return await request.app.state.container.catalog_documents.plan(desired)


@post("/v1/catalog/apply", tags=["catalog"], guards=[admin], status_code=200, responses=ERRORS,
      summary="Apply a catalog document: every change in one transaction, or none (admin)", description=YAML_TOO)
async def apply_catalog(request: Request, principal: Caller,
                        expected_catalog_position: Annotated[int | None, Parameter(ge=0, le=2**62, description=(
                            "A plan's catalog_position: 409 catalog_changed if the catalog moved since"))] = None,
                        ) -> CatalogApplied:
    desired = read_document(await request.body(), request.headers.get("content-type", ""))
    return await request.app.state.container.catalog_documents.apply(desired, principal.actor,
                                                                      expected_catalog_position)
