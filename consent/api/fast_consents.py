"""POST /v1/subjects/{subject_id}/consents answered before Litestar's router (hot_routes.py).

The consent write is the hot path of writes, and Litestar's machinery on it (signature modelling,
dependency injection, response building) cost a quarter to a half of a write's server CPU in the
measured runs (BENCHMARKS.md, issue 3).
Like POST /v1/decisions (fast_decisions.py), this layer answers the route with the same Structs,
authenticator, header limits and handler body (`subjects.change_consents`); the Litestar route stays
for the OpenAPI document and is what runs when the layer is off (`CONSENT_FAST_WRITES=0`). The tests
run the consent suites both ways.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from consent.api.auth import Authenticator, require_subject_access
from consent.api.errors import problem
from consent.api.schemas import ConsentRequest
from consent.api.subjects import HEADER_LIMITS, change_consents
from consent.api.thin_asgi import HotRoute, read_body, respond
from consent.app.subject_service import SubjectService

_decode_request = msgspec.json.Decoder(ConsentRequest).decode
_encode = msgspec.json.Encoder().encode
_HEADERS = {name.lower().encode(): name for name in ("Authorization", *HEADER_LIMITS)}


def consent_route(authenticator: Callable[[], Authenticator], subjects: Callable[[], SubjectService],
                  max_body: int) -> HotRoute:
    """`max_body`: the same limit as the app's request_max_body_size (CONSENT_MAX_BODY_BYTES)."""
    async def answer(scope: dict, receive, send, request_id: bytes) -> int:
        subject_id = scope["path_params"]["subject_id"]  # hot_routes.py parsed it
        return await respond(send, lambda: _change(scope, receive, subject_id, authenticator(), subjects(), max_body),
                             request_id)

    return answer


async def _change(scope: dict, receive, subject_id: str, authenticator: Authenticator, subjects: SubjectService,
                  max_body: int) -> bytes:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _HEADERS:
            headers[_HEADERS[name]] = value.decode("latin-1")
    principal = await authenticator.authenticate(headers.get("Authorization"))
    # Who may call, before the headers' values or the body are looked at, as the route's guard decides (guards.py).
    require_subject_access(principal, subject_id)
    for name, limit in HEADER_LIMITS.items():
        if len(headers.get(name, "")) > limit:
            raise problem(400, "validation_failed", f"the {name} header is at most {limit} characters")
    body = await read_body(receive, max_body)
    try:
        request = _decode_request(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise problem(400, "validation_failed", str(error)) from None
    return _encode(await change_consents(subjects, principal, subject_id, request, headers.get("Idempotency-Key"),
                                         headers.get("If-Match"), headers.get("Sec-GPC")))
