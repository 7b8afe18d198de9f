"""What the hot routes (fast_decisions.py, fast_consents.py, dispatched by hot_routes.py) share: reading a
body within the limit, and answering JSON or problem details with the headers and error mapping of the
Litestar routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.plugins.problem_details import ProblemDetailsException

from consent.api.errors import as_problem, problem

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
# A hot route's answer to one request: (scope, receive, send, request id) -> the status it sent.
HotRoute = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]], bytes], Awaitable[int]]

_encode = msgspec.json.Encoder().encode
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_PROBLEM_HEADERS = [(b"content-type", b"application/problem+json"), (b"cache-control", b"no-store")]


async def respond(send, answer: Callable[[], Awaitable[bytes]], request_id: bytes) -> int:
    """Send `answer()` as 200 JSON, or what it raised as problem details, as the Litestar routes would, with
    the request's id (consent/api/observability.py); the status sent."""
    try:
        status, headers, body = 200, _JSON_HEADERS, await answer()
    except ProblemDetailsException as error:
        status, headers, body = _problem_response(error)
    except Exception as error:  # noqa: BLE001 - never a bare 500 without a problem body
        status, headers, body = _problem_response(as_problem(error))
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id)]})
    await send({"type": "http.response.body", "body": body})
    return status


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
