"""The outermost ASGI layer: a request id on every answer, HTTP metrics by route template, the access line.

It wraps Litestar's whole handler (consent/api/app.py), so it sees every request: the two hot routes, which
it answers itself (hot_routes.py), Litestar's routes, paths that match no route, errors. After the request
it reads the route's template (from the hot route, or from the scope, where Litestar's router puts it), never
the raw path, which would carry subject ids.

The request id is the caller's `X-Request-Id` when it is well formed (1 to 64 of A-Z a-z 0-9 . _ -),
else one made here: a random prefix per process and a counter (no random bytes a request).

Hot path: the decision route answers in ~80 us of CPU, so the layer does little per request: two clock
reads, one header scan, one small object, dict and list increments, a bisect; no `send` wrapper for the
hot routes (they send the request id themselves); the access line only when it is on (CONSENT_ACCESS_LOG).
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from time import perf_counter

from consent.api.hot_routes import HotRoutes
from consent.api.thin_asgi import ASGIApp
from consent.app.telemetry import (
    METHODS,
    OTHER_METHOD,
    UNMATCHED,
    RequestFacts,
    Telemetry,
    begin_request,
    end_request,
)
from consent.logs import ACCESS_LOGGER, AccessRecord, AccessWriter, direct_access_writer

REQUEST_ID_HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._-]{1,64}").fullmatch
_access_log = logging.getLogger(ACCESS_LOGGER)


def request_ids():
    """Request ids unique to this process and, by the random prefix, across processes and restarts."""
    prefix = secrets.token_hex(6).encode()
    return (b"%s-%x" % (prefix, n) for n in itertools.count(1))


def observed(app: ASGIApp, telemetry: Telemetry, access_log: bool = True,
             hot_routes: HotRoutes | None = None) -> ASGIApp:
    new_request_id = request_ids().__next__
    # Chosen at the first request, once whoever hosts the app has set up logging (consent/logs.py).
    write_access: AccessWriter | None = None
    writer_chosen = False

    async def observe(scope: dict, receive, send) -> None:
        nonlocal write_access, writer_chosen
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = perf_counter()
        request_id = None
        browser = False
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _WELL_FORMED(value):
                    request_id = value
            elif name == b"origin":
                browser = True
        if request_id is None:
            request_id = new_request_id()
        facts = RequestFacts(request_id)
        status = 500  # if the app fails before it answers
        token = begin_request(facts)
        hot = None if hot_routes is None or (browser and hot_routes.cors) else hot_routes.route(scope)
        try:
            if hot is not None:
                status = await hot[1](scope, receive, send, request_id)  # it sends the request id itself
            else:
                header = (REQUEST_ID_HEADER, request_id)

                async def send_with_request_id(message: dict) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        message["headers"] = [*message.get("headers", ()), header]
                    await send(message)

                await app(scope, receive, send_with_request_id)
        finally:
            end_request(token)
            seconds = perf_counter() - started
            # The template, e.g. /v1/subjects/{subject_id}/consents (Litestar's, when it routed); none when no
            # route matched.
            route = hot[0] if hot is not None else scope.get("path_template") or UNMATCHED
            method = scope["method"]
            if method not in METHODS:
                method = OTHER_METHOD
            telemetry.request_done(route, method, status, seconds, facts)
            if access_log:
                if not writer_chosen:
                    write_access, writer_chosen = direct_access_writer(), True
                if write_access is not None:
                    write_access(request_id, route, method, status, seconds, facts.partner)
                elif _access_log.isEnabledFor(logging.INFO):
                    _access_log.handle(AccessRecord(request_id, route, method, status, seconds, facts.partner))

    return observe

