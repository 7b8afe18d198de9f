"""Decision routes: a partner asks about itself; an admin may name any partner, or none (first party).

This is the hot path: a thin handler, a cached token check, no database round trip
when the subject's state is cached.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody, Parameter
from msgspec import Meta, Struct

from consent.api.auth import Principal
from consent.api.deps import Caller, Decisions
from consent.api.errors import ERRORS, forbidden
from consent.api.guards import partner_or_admin
from consent.app.decisions import DecisionAnswer, DecisionService, Permissions, Question

SubjectId = Annotated[str, Meta(min_length=1, max_length=128)]
Slug = Annotated[str, Meta(min_length=1, max_length=64)]
Scopes = Annotated[list[Annotated[str, Meta(min_length=1, max_length=255)]], Meta(min_length=1, max_length=200)]
MinPosition = Annotated[int, Meta(ge=0)]
BATCH_LIMIT = 1000


class DecisionRequest(Struct, forbid_unknown_fields=True):
    subject_id: SubjectId
    purpose: Slug
    scopes: Scopes
    partner: Slug | None = None
    min_position: MinPosition | None = None
    # The answer as it would have been given then (admin; a partner about itself): the log up to that moment.
    at: datetime | None = None


class BatchItem(Struct, forbid_unknown_fields=True):
    subject_id: SubjectId
    purpose: Slug
    scopes: Scopes
    partner: Slug | None = None


class BatchRequest(Struct, forbid_unknown_fields=True):
    items: Annotated[list[BatchItem], Meta(min_length=1, max_length=BATCH_LIMIT)]
    partner: Slug | None = None
    min_position: MinPosition | None = None
    at: datetime | None = None  # every item as of that moment


class BatchAnswer(Struct):
    results: list[DecisionAnswer]
    position: int


def asking_partner(principal: Principal, named: str | None, decisions: DecisionService,
                   subject_ids: list[str]) -> str | None:
    """The partner a question is about: a partner's own id; for an admin, the one it names.
    The caller was let through already, scope included (the route's guard, or the thin layer's check)."""
    if principal.kind == "partner":
        if named is not None and named != principal.id:
            raise forbidden("a partner asks only about itself; only an admin may name `partner`")
        decisions.check_sandbox(principal.id, subject_ids)
        return principal.id
    if principal.kind == "admin":
        return named
    raise forbidden("decisions are for partners and administrators")


def by_pseudonym(principal: Principal, decisions: DecisionService) -> bool:
    """A pairwise partner names subjects by its pseudonyms; an admin naming that partner, by real ids."""
    return principal.kind == "partner" and decisions.is_pairwise(principal.id)


class DecisionController(Controller):
    path = "/v1/decisions"
    tags = ["decisions"]
    guards = [partner_or_admin("decisions:read")]

    @post("/", status_code=200, responses=ERRORS, security=[{"bearer": []}, {"partner": ["decisions:read"]}],
          summary="May this partner use these scopes of this subject for this purpose, and until when?")
    async def decide(self, data: JSONBody[DecisionRequest], principal: Caller,
                     decisions: Decisions) -> DecisionAnswer:
        partner = asking_partner(principal, data.partner, decisions, [data.subject_id])
        question = Question(subject_id=data.subject_id, purpose=data.purpose, scopes=data.scopes, partner=partner,
                            pseudonymous=by_pseudonym(principal, decisions))
        return await decisions.decide(question, data.min_position, data.at)

    @post("/batch", status_code=200, responses=ERRORS, security=[{"bearer": []}, {"partner": ["decisions:read"]}],
          summary=f"Up to {BATCH_LIMIT} decisions in one request")
    async def decide_batch(self, data: JSONBody[BatchRequest], principal: Caller,
                           decisions: Decisions) -> BatchAnswer:
        subject_ids = [item.subject_id for item in data.items]
        default = asking_partner(principal, data.partner, decisions, subject_ids)
        pseudonymous = by_pseudonym(principal, decisions)
        questions = [
            Question(subject_id=item.subject_id, purpose=item.purpose, scopes=item.scopes,
                     partner=default if item.partner is None
                     else asking_partner(principal, item.partner, decisions, [item.subject_id]),
                     pseudonymous=pseudonymous)
            for item in data.items
        ]
        results = await decisions.decide_many(questions, data.min_position, data.at)
        return BatchAnswer(results=results, position=max(r.position for r in results))


class PermissionController(Controller):
    path = "/v1/subjects/{subject_id:str}/permissions"
    tags = ["decisions"]
    guards = [partner_or_admin("permissions:read")]

    @get("/", responses=ERRORS, security=[{"bearer": []}, {"partner": ["permissions:read"]}],
         summary="What this partner may do with this subject's data, by purpose")
    async def permissions(self, subject_id: FromPath[str], principal: Caller,
                          decisions: Decisions,
                          partner: Annotated[str | None, Parameter(max_length=64, required=False)] = None,
                          min_position: Annotated[int | None, Parameter(ge=0, required=False)] = None,
                          ) -> Permissions:
        partner_id = asking_partner(principal, partner, decisions, [subject_id])
        if partner_id is None:
            raise forbidden("an admin names the partner: ?partner=<id>")
        return await decisions.permissions(partner_id, subject_id, min_position,
                                           pseudonymous=by_pseudonym(principal, decisions))
