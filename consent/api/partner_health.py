"""GET /v1/partners/{partner_id}/health: a partner's traffic over a window, summed over every replica.

Admins, and the partner itself with a token carrying catalog:read (its own record, like GET
/v1/partners/{partner_id}); the guard decides before anything is read.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter

from consent.adapters.partner_health_store import PartnerHealthReader
from consent.api.catalog import CATALOG_READ
from consent.api.deps import Catalogs
from consent.api.errors import ERRORS, problem
from consent.api.guards import own_partner_or_admin
from consent.app.partner_health import DEFAULT_WINDOW, WINDOWS, PartnerHealth
from consent.domain.errors import NotFound

Window = Annotated[str | None, Parameter(
    required=False, schema_extra={"enum": list(WINDOWS)},
    description=f"ISO 8601 duration: {', '.join(WINDOWS)} (default {DEFAULT_WINDOW})")]


class PartnerHealthController(Controller):
    path = "/v1/partners/{partner_id:str}/health"
    tags = ["partners"]

    @get("/", responses=ERRORS, security=CATALOG_READ, guards=[own_partner_or_admin("catalog:read")],
         summary="A partner's decisions, denials, policy violations, requests and latency over a window, from "
                 "every replica, at most CONSENT_METRICS_FLUSH_INTERVAL seconds behind (admin, or the partner "
                 "itself)")
    async def health(self, partner_id: FromPath[str], catalogs: Catalogs,
                     partner_health: NamedDependency[PartnerHealthReader], window: Window = None) -> PartnerHealth:
        window = window or DEFAULT_WINDOW
        if window not in WINDOWS:
            raise problem(400, "invalid_window", f"window is one of {', '.join(WINDOWS)}")
        if partner_id not in catalogs.catalog.partners:
            raise NotFound("partner", partner_id)
        return await partner_health.read(partner_id, window)
