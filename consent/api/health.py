"""Liveness and readiness (API.md "Operations"). No credentials: they reveal nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Response, get
from litestar.di import NamedDependency


@get("/health/live", tags=["operations"], summary="The process answers")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready", tags=["operations"], summary="The database (and NATS, when configured) answer")
async def ready(readiness: NamedDependency[Callable[[], Awaitable[tuple[dict[str, bool], dict[str, object]]]]],
                ) -> Response[dict[str, object]]:
    checks, details = await readiness()
    ok = all(checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks, **details},
                    status_code=200 if ok else 503)
