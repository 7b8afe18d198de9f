"""POST /v1/decisions as a thin ASGI layer in front of the Litestar handler.

The decision route is the hot path, and framework machinery on it (signature
modelling, dependency injection, response building) costs a large share of its
throughput (see PERFORMANCE.md). This layer answers the route with the same
Structs, authenticator and service as the Litestar handler in decisions.py, which
stays registered for the OpenAPI document and is what runs when this layer is
turned off (`CONSENT_FAST_DECISIONS=0`). The tests run the decision suite both ways.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.plugins.problem_details import ProblemDetailsException

from consent.api.auth import Authenticator
from consent.api.decisions import DecisionRequest, asking_partner, by_pseudonym
from consent.api.errors import as_problem, problem
from consent.app.decisions import DecisionService, Question

_decode_request = msgspec.json.Decoder(DecisionRequest).decode
_encode = msgspec.json.Encoder().encode
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_PROBLEM_HEADERS = [(b"content-type", b"application/problem+json"), (b"cache-control", b"no-store")]

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def fast_decisions(authenticator: Callable[[], Authenticator],
                   decisions: Callable[[], DecisionService], max_body: int) -> Callable[[ASGIApp], ASGIApp]:
    """`max_body`: the same limit as the app's request_max_body_size (CONSENT_MAX_BODY_BYTES)."""
    def middleware(app: ASGIApp) -> ASGIApp:
        async def handle(scope: dict, receive, send) -> None:
            if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/decisions":
                await app(scope, receive, send)
                return
            await respond(send, lambda: _decide(scope, receive, authenticator(), decisions(), max_body))

        return handle

    return middleware


async def _decide(scope: dict, receive, authenticator: Authenticator, decisions: DecisionService,
                  max_body: int) -> bytes:
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    principal = await authenticator.authenticate(authorization)
    body = await read_body(receive, max_body)
    try:
        request = _decode_request(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise problem(400, "validation_failed", str(error)) from None
    question = Question(subject_id=request.subject_id, purpose=request.purpose, scopes=request.scopes,
                        partner=asking_partner(principal, request.partner, decisions, [request.subject_id]),
                        pseudonymous=by_pseudonym(principal, decisions))
    return _encode(await decisions.decide(question, request.min_position))


async def respond(send, answer: Callable[[], Awaitable[bytes]]) -> None:
    """Send `answer()` as 200 JSON, or what it raised as problem details, as the Litestar routes would."""
    try:
        status, headers, body = 200, _JSON_HEADERS, await answer()
    except ProblemDetailsException as error:
        status, headers, body = _problem_response(error)
    except Exception as error:  # noqa: BLE001 - never a bare 500 without a problem body
        status, headers, body = _problem_response(as_problem(error))
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive, max_body: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise problem(413, "payload_too_large", f"a request body is at most {max_body} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _problem_response(error: ProblemDetailsException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body: dict[str, Any] = {"status": error.status_code, "type": error.type_, "title": error.title,
                            "detail": error.detail}
    if isinstance(error.extra, dict):
        body.update(error.extra)
    headers = _PROBLEM_HEADERS + [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    return error.status_code, headers, _encode(body)
