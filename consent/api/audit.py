"""The governance audit trail: what administrators and partners did (admin only)."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import Parameter

from consent.api.deps import Audits
from consent.api.errors import ERRORS
from consent.api.guards import admin
from consent.app.views import AuditView


@get("/v1/audit", tags=["audit"], responses=ERRORS, guards=[admin],
     summary="Catalog, partner, credential and token changes, admin consent changes and admin reads of a "
             "subject's history, oldest first, each with the acting key's id (admin)")
async def audit(audits: Audits,
                after: Annotated[int, Parameter(ge=0, le=2**62)] = 0,
                limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> AuditView:
    return await audits.audit(after, limit)
