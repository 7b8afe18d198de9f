"""Who may call each route, decided by Litestar guards before the route reads its body or its parameters.

A caller that may not use a route learns nothing about it: not what its body should look like (it gets
401 or 403, never 400 for a malformed body), nor whether what it names exists. Litestar runs a route's
guards before it parses anything else (consent/api/app.py registers the routes; the authorization matrix
test checks the order on every route). The guard authenticates the caller once and leaves it in the
request's scope, where the `principal` dependency finds it: a partner's rate limit counts each request
once. What depends on the body (the partner a decision names, sandbox subjects) is still the handler's.

The two hot routes (hot_routes.py: fast_consents.py, fast_decisions.py) are answered before Litestar's router,
so no guard runs for them; they call the same require_* checks of auth.py before they read the body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from consent.api.auth import (
    Principal,
    require_admin,
    require_partner_or_admin,
    require_scope,
    require_subject_access,
)

Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]
_PRINCIPAL = "consent.principal"  # the scope key under which a request's authenticated caller is kept


async def caller(connection: ASGIConnection) -> Principal:
    """The request's authenticated caller: 401 without valid credentials; authenticated once per request."""
    principal = connection.scope.get(_PRINCIPAL)  # type: ignore[call-overload]
    if principal is None:
        authenticator = connection.app.state.container.authenticator
        principal = await authenticator.authenticate(connection.headers.get("authorization"))
        connection.scope[_PRINCIPAL] = principal  # type: ignore[literal-required]
    return principal


async def principal(request: Request) -> Principal:
    """The `principal` dependency of the routes: the caller their guard has already let through."""
    return await caller(request)


async def admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    require_admin(await caller(connection))


async def own_subject(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The subject in the path, or an admin."""
    require_subject_access(await caller(connection), connection.path_params["subject_id"])


def any_caller(partner_scope: str) -> Guard:
    """Every authenticated caller; a partner's token must carry `partner_scope`."""
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        require_scope(await caller(connection), partner_scope)

    return guard


def partner_or_admin(partner_scope: str) -> Guard:
    """Partners whose token carries `partner_scope`, and admins."""
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        require_partner_or_admin(await caller(connection), partner_scope)

    return guard


def own_partner_or_admin(partner_scope: str) -> Guard:
    """The partner in the path, with a token carrying `partner_scope`, or an admin."""
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = await caller(connection)
        if not (principal.kind == "partner" and principal.id == connection.path_params["partner_id"]):
            require_admin(principal)
        require_scope(principal, partner_scope)

    return guard
