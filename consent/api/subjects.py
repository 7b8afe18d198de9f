"""Consent routes: an end user for their own subject, or an admin (guards.py decides, before the body is read)."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter

from consent.api.auth import Principal
from consent.api.deps import Audits, Caller, Catalogs, Subjects
from consent.api.errors import ERRORS, problem
from consent.api.guards import own_subject
from consent.api.schemas import ConsentRequest
from consent.api.time_travel import At, past_moment
from consent.app.subject_service import SubjectService
from consent.app.views import (
    ConsentChangeView,
    HistoryView,
    SubjectConsentsAtView,
    SubjectConsentsView,
    SubjectErasureView,
    subject_view_at,
)
from consent.domain.events import Evidence
from consent.domain.ids import check_subject
from consent.domain.subject import Change

# `"3"`, `W/"3"` or a bare `3`; quotes must pair, so `"3` is malformed, not version 3.
_ETAG = re.compile(r'(?:W/)?("?)(\d{1,10})\1')

# Longest accepted value of each header this route reads (also checked by the thin layer, fast_consents.py).
HEADER_LIMITS = {"Idempotency-Key": 200, "If-Match": 40, "Sec-GPC": 8}
IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=HEADER_LIMITS[
    "Idempotency-Key"], required=False)]
IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", max_length=HEADER_LIMITS["If-Match"],
                                                required=False)]
SecGpc = Annotated[str | None, HeaderParameter(name="Sec-GPC", max_length=HEADER_LIMITS["Sec-GPC"], required=False)]


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    match = _ETAG.fullmatch(if_match.strip())
    if match is None:
        raise problem(400, "validation_failed", 'If-Match must be the subject version in quotes, e.g. "3"')
    return int(match.group(2))


def _gpc(principal: Principal, sec_gpc: str | None) -> bool:
    """Global Privacy Control counts when the end user's own agent sends it."""
    return principal.kind == "user" and (sec_gpc or "").strip() == "1"


async def change_consents(subjects: SubjectService, principal: Principal, subject_id: str, data: ConsentRequest,
                          idempotency_key: str | None, if_match: str | None, sec_gpc: str | None) -> ConsentChangeView:
    """POST /v1/subjects/{subject_id}/consents, for the Litestar route and its thin ASGI layer (fast_consents.py),
    once they have let the caller through (the route's guard, or the layer's own check)."""
    check_subject(subject_id)
    expected = _expected_version(if_match)
    gpc = _gpc(principal, sec_gpc)
    idempotency = None
    if idempotency_key is not None:
        scope = f"{principal.kind}:{principal.id}:{subject_id}:{idempotency_key}"
        request = msgspec.json.encode([data, expected, gpc])
        idempotency = (hashlib.sha256(scope.encode()).hexdigest(), hashlib.sha256(request).hexdigest())
    changes = [Change(purpose=c.purpose, action=c.action, partner=c.partner,
                      scopes=tuple(c.scopes) if c.scopes is not None else None, expires_at=c.expires_at)
               for c in data.changes]
    evidence = Evidence(**msgspec.structs.asdict(data.evidence)) if data.evidence else None
    return await subjects.change_consents(
        subject_id, changes, data.source, evidence, principal.actor,
        expected_version=expected, idempotency=idempotency, global_opt_out=gpc)


class SubjectController(Controller):
    path = "/v1/subjects/{subject_id:str}"
    tags = ["consents"]
    guards = [own_subject]

    @post("/consents", status_code=200, responses=ERRORS,
          summary="Change consents, all or nothing (the subject, or admin)")
    async def change_consents(self, subject_id: FromPath[str], data: JSONBody[ConsentRequest], principal: Caller,
                              subjects: Subjects, idempotency_key: IdempotencyKey = None,
                              if_match: IfMatch = None, sec_gpc: SecGpc = None) -> ConsentChangeView:
        return await change_consents(subjects, principal, subject_id, data, idempotency_key, if_match, sec_gpc)

    @get("/consents", summary="Current consents (the subject, or admin)", responses=ERRORS)
    async def get_consents(self, subject_id: FromPath[str], principal: Caller, subjects: Subjects,
                           catalogs: Catalogs, sec_gpc: SecGpc = None,
                           at: At = None) -> SubjectConsentsView | SubjectConsentsAtView:
        check_subject(subject_id)
        if _gpc(principal, sec_gpc):
            await subjects.record_global_opt_out(subject_id, principal.actor)
        if at is not None:
            moment = past_moment(at)
            return subject_view_at(await subjects.state_at(subject_id, moment), moment,
                                   await catalogs.catalog_at(moment))
        return await subjects.subject_consents(subject_id)

    @post("/erase", status_code=200, responses=ERRORS,
          summary="Erase the subject's personal data for good; decisions deny from then on (the subject, or admin)")
    async def erase(self, subject_id: FromPath[str], principal: Caller, subjects: Subjects) -> SubjectErasureView:
        check_subject(subject_id)
        return await subjects.erase_subject(subject_id, principal.actor)

    @get("/history", summary="The subject's consent events, oldest first (the subject, or admin)", responses=ERRORS)
    async def history(self, subject_id: FromPath[str],
                principal: Caller, subjects: Subjects, audits: Audits,
                      after: Annotated[int, Parameter(ge=0, le=2**62)] = 0,
                      limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> HistoryView:
        check_subject(subject_id)
        if principal.kind == "admin":
            await audits.record_history_read(subject_id, principal.actor)
        return await subjects.history(subject_id, after, limit)
