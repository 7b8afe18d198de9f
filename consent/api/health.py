"""Liveness and readiness (docs/operations.md). No credentials: they reveal nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec


@get("/health/live", tags=["operations"], security=[], summary="The process answers")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready", tags=["operations"], security=[],
     responses={503: ResponseSpec(dict[str, object], generate_examples=False,
                                  description="Not ready: a check failed (the body names it)")},
     summary="The database (and NATS, when configured) answer")
async def ready(readiness: NamedDependency[Callable[[], Awaitable[tuple[dict[str, bool], dict[str, object]]]]],
                ) -> Response[dict[str, object]]:
    checks, details = await readiness()
    ok = all(checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks, **details},
                    status_code=200 if ok else 503)
