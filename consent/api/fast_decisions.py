"""POST /v1/decisions answered before Litestar's router (hot_routes.py).

The decision route is the hot path, and framework machinery on it (signature
modelling, dependency injection, response building) costs a large share of its
throughput (see docs/performance.md). This route answers with the same
Structs, authenticator and service as the Litestar handler in decisions.py, which
stays registered for the OpenAPI document and is what runs when this route is
turned off (`CONSENT_FAST_DECISIONS=0`). The tests run the decision suite both ways.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from consent.api.auth import Authenticator, require_partner_or_admin
from consent.api.decisions import DecisionRequest, asking_partner, by_pseudonym
from consent.api.errors import problem
from consent.api.thin_asgi import HotRoute, read_body, respond
from consent.app.decisions import DecisionService, Question

_decode_request = msgspec.json.Decoder(DecisionRequest).decode
_encode = msgspec.json.Encoder().encode


def decision_route(authenticator: Callable[[], Authenticator], decisions: Callable[[], DecisionService],
                   max_body: int) -> HotRoute:
    """`max_body`: the same limit as the app's request_max_body_size (CONSENT_MAX_BODY_BYTES)."""
    async def answer(scope: dict, receive, send, request_id: bytes) -> int:
        return await respond(send, lambda: _decide(scope, receive, authenticator(), decisions(), max_body),
                             request_id)

    return answer


async def _decide(scope: dict, receive, authenticator: Authenticator, decisions: DecisionService,
                  max_body: int) -> bytes:
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    principal = await authenticator.authenticate(authorization)
    # Who may ask, before the body is read, as the Litestar route's guard decides (guards.py).
    require_partner_or_admin(principal, "decisions:read")
    body = await read_body(receive, max_body)
    try:
        request = _decode_request(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise problem(400, "validation_failed", str(error)) from None
    question = Question(subject_id=request.subject_id, purpose=request.purpose, scopes=request.scopes,
                        partner=asking_partner(principal, request.partner, decisions, [request.subject_id]),
                        pseudonymous=by_pseudonym(principal, decisions))
    return _encode(await decisions.decide(question, request.min_position, request.at))
