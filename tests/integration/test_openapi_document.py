"""The OpenAPI document tells the truth a client needs: who needs a token, which errors each operation can
answer, stable operation ids, request examples that work, the problem codes and the OAuth forms."""

from __future__ import annotations

import re
from collections import Counter

import jsonschema_rs
import msgspec
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.api.openapi_doc import BEARER_SCHEMES, NO_DATABASE, OPERATION_IDS, declares_public
from consent.api.request_examples import BODY_SCHEMAS, REQUEST_EXAMPLES
from consent.config import Settings
from consent.domain.errors import PROBLEM_CODES
from tests.conftest import ADMIN

# Callable without a bearer token: the first five with no credentials at all, the OAuth endpoints with the
# client's own credential (HTTP Basic or the form).
NO_CREDENTIALS = {"getLiveness", "getReadiness", "getMetrics", "getReceiptKeys", "getAuthorizationServerMetadata"}
CLIENT_CREDENTIALS = {"issueToken", "revokeToken"}
RATE_LIMIT_HEADERS = {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def app():
    return create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))


@pytest.fixture(scope="module")
def document(app) -> dict:
    return app.openapi_schema.to_schema()


def operations(document: dict) -> dict[str, tuple[str, dict]]:
    """operationId -> ("METHOD /path", operation)."""
    return {operation["operationId"]: (f"{method.upper()} {path}", operation)
            for path, item in document["paths"].items() for method, operation in item.items()}


def handlers(app) -> dict[str, object]:
    """"METHOD /path" -> the route handler, for the routes in the document."""
    return {f"{method} {route.path_format}": handler for route in app.routes if isinstance(route, HTTPRoute)
            for method, (handler, _) in route.route_handler_map.items()
            if method not in ("HEAD", "OPTIONS") and handler.resolve_include_in_schema()}


def needs_bearer(document: dict, operation: dict) -> bool:
    requirements = operation.get("security", document.get("security", []))
    return any(BEARER_SCHEMES & requirement.keys() for requirement in requirements)


def test_public_routes_say_so(app, document):
    served = operations(document)
    assert NO_CREDENTIALS | CLIENT_CREDENTIALS <= served.keys()
    for operation_id, (route, operation) in served.items():
        if operation_id in NO_CREDENTIALS:
            assert operation.get("security") == [], route
        elif operation_id in CLIENT_CREDENTIALS:
            assert {} in operation["security"] and not needs_bearer(document, operation), route
        else:
            assert needs_bearer(document, operation), f"{route} is documented as needing no token"
    # The mechanism, not a list: every handler that declares `security=[]` is public in the document.
    declared = {OPERATION_IDS[route] for route, handler in handlers(app).items() if declares_public(handler)}
    assert declared == {operation_id for operation_id, (_, operation) in served.items()
                        if operation.get("security") == []}


def test_rate_limit_body_size_and_outage_answers_are_documented(document):
    for operation_id, (route, operation) in operations(document).items():
        responses = operation["responses"]
        expected = ({"429"} if needs_bearer(document, operation) else set()) | (
            {"413"} if "requestBody" in operation else set()) | (set() if operation_id in NO_DATABASE else {"503"})
        assert expected <= responses.keys(), route
        for status in expected:
            assert list(responses[status]["content"]) == [PROBLEM_JSON], (route, status)
        if "429" in expected:
            assert RATE_LIMIT_HEADERS == responses["429"]["headers"].keys(), route
        if "503" in expected:
            assert "Retry-After" in responses["503"]["headers"], route
    assert NO_DATABASE <= operations(document).keys(), "NO_DATABASE names an operation that does not exist"


@pytest.fixture
async def limited(settings):
    limits = msgspec.structs.replace(settings, partner_rate_limit=1, max_body_bytes=2048)
    async with AsyncTestClient(create_app(limits)) as client:
        yield client


async def test_the_documented_429_and_413_are_what_the_service_answers(limited, document):
    served = operations(document)
    _, decide = served["decide"]
    await limited.put("/v1/scopes/orders.history", headers=ADMIN, json=REQUEST_EXAMPLES["putScope"])
    await limited.put("/v1/purposes/marketing", headers=ADMIN, json=REQUEST_EXAMPLES["putPurpose"])
    assert (await limited.put("/v1/partners/acme", headers=ADMIN, json={
        **REQUEST_EXAMPLES["putPartner"], "rate_limit": None})).status_code == 201
    partner = await partner_token(limited)
    answers = [await limited.post("/v1/decisions", headers=partner, json=REQUEST_EXAMPLES["decide"])
               for _ in range(3)]
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.headers["content-type"].startswith(PROBLEM_JSON)
    assert {name.lower() for name in decide["responses"]["429"]["headers"]} <= refused.headers.keys()
    assert refused.json()["code"] == "rate_limited"
    too_large = await limited.post("/v1/decisions", headers={**ADMIN, "Content-Type": "application/json"},
                                   content=b"{" + b" " * 4096 + b"}")
    assert too_large.status_code == 413 and too_large.headers["content-type"].startswith(PROBLEM_JSON)
    assert too_large.json()["code"] in problem_codes(document)


def test_every_operation_has_a_stable_readable_id(app, document):
    served = operations(document)
    ids = Counter(operation["operationId"] for item in document["paths"].values() for operation in item.values())
    assert [operation_id for operation_id, count in ids.items() if count > 1] == []
    assert [i for i in ids if not re.fullmatch(r"[a-z][A-Za-z0-9]+", i)] == []
    named = {route: operation_id for operation_id, (route, _) in served.items()}
    routes = set(handlers(app))
    assert routes == named.keys()
    unlisted = sorted(routes - OPERATION_IDS.keys())
    assert unlisted == [], f"name these operations in OPERATION_IDS (consent/api/openapi_doc.py): {unlisted}"
    assert all(named[route] == OPERATION_IDS[route] for route in routes)
    assert sorted(OPERATION_IDS.keys() - routes) == [], "OPERATION_IDS names routes that are not served"


def test_every_request_body_has_an_example_valid_against_its_schema(app, document):
    types = {OPERATION_IDS[route]: handler.parsed_fn_signature.parameters["data"].annotation
             for route, handler in handlers(app).items() if "data" in handler.parsed_fn_signature.parameters}
    types |= {operation_id: typed for operation_id, typed in BODY_SCHEMAS.items() if operation_id not in types}
    bodies = {operation_id: operation["requestBody"] for operation_id, (_, operation) in operations(document).items()
              if "requestBody" in operation}
    assert bodies.keys() == types.keys() and bodies
    for operation_id, body in bodies.items():
        for media_type, media in body["content"].items():
            example = media["example"]
            schema = {"allOf": [media["schema"]], "components": document["components"]}
            errors = [error.message for error in jsonschema_rs.validator_for(schema).iter_errors(example)]
            assert errors == [], (operation_id, errors)
            # Decoded as the service decodes it: msgspec checks what JSON Schema cannot say.
            target = BODY_SCHEMAS.get(operation_id) or types[operation_id]
            if media_type == "application/json" or operation_id in BODY_SCHEMAS:
                msgspec.json.decode(msgspec.json.encode(example), type=target)


def test_the_oauth_forms_are_typed(document):
    _, token = operations(document)["issueToken"]
    _, revoke = operations(document)["revokeToken"]
    schemas = document["components"]["schemas"]
    for operation, name, fields, required in (
            (token, "TokenRequest", {"grant_type", "client_id", "client_secret", "scope"}, ["grant_type"]),
            (revoke, "RevocationRequest", {"token", "token_type_hint", "client_id", "client_secret"}, ["token"])):
        media = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
        assert media["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert schemas[name]["properties"].keys() == fields and schemas[name]["required"] == required
        assert all(schemas[name]["properties"][field].get("type") == "string" for field in fields - {"grant_type"})


def problem_codes(document: dict) -> list[str]:
    return document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]


def test_the_problem_codes_are_listed_with_their_meaning(document):
    code = document["components"]["schemas"]["Problem"]["properties"]["code"]
    assert problem_codes(document) == list(PROBLEM_CODES)
    assert all(f"`{name}`: {meaning}" in code["description"] for name, meaning in PROBLEM_CODES.items())


async def partner_token(client, scope: str = "decisions:read") -> dict[str, str]:
    credential = await client.post("/v1/partners/acme/credentials", headers=ADMIN,
                                   json=REQUEST_EXAMPLES["createCredential"])
    assert credential.status_code == 201, credential.text
    form = {**REQUEST_EXAMPLES["issueToken"], "scope": scope,
            "client_id": credential.json()["client_id"], "client_secret": credential.json()["client_secret"]}
    issued = await client.post("/v1/oauth/token", data=form)
    assert issued.status_code == 200, issued.text
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}


async def test_the_examples_tell_a_story_that_works(client):
    """Run in order on an empty service, every example succeeds: what the viewer offers can be tried."""
    for path, operation_id in (("/v1/scopes/orders.history", "putScope"), ("/v1/purposes/marketing", "putPurpose"),
                               ("/v1/partners/acme", "putPartner")):
        answer = await client.put(path, headers=ADMIN, json=REQUEST_EXAMPLES[operation_id])
        assert answer.status_code == 201, (operation_id, answer.text)
    credential = await client.post("/v1/partners/acme/credentials", headers=ADMIN,
                                   json=REQUEST_EXAMPLES["createCredential"])
    assert credential.status_code == 201, credential.text
    own = {"client_id": credential.json()["client_id"], "client_secret": credential.json()["client_secret"]}
    issued = await client.post("/v1/oauth/token", data={**REQUEST_EXAMPLES["issueToken"], **own})
    assert issued.status_code == 200, issued.text
    access_token = issued.json()["access_token"]
    partner = {"Authorization": f"Bearer {access_token}"}
    changed = await client.post("/v1/subjects/u-12345/consents", headers=ADMIN,
                                json=REQUEST_EXAMPLES["changeConsents"])
    assert changed.status_code == 200, changed.text
    decided = await client.post("/v1/decisions", headers=partner, json=REQUEST_EXAMPLES["decide"])
    assert decided.status_code == 200 and decided.json()["permitted"] == ["orders.history"], decided.text
    batch = await client.post("/v1/decisions/batch", headers=partner, json=REQUEST_EXAMPLES["decideBatch"])
    assert batch.status_code == 200 and len(batch.json()["results"]) == 2, batch.text
    revoked = await client.post("/v1/oauth/revoke", data={**REQUEST_EXAMPLES["revokeToken"], **own,
                                                          "token": access_token})
    assert revoked.status_code == 200, revoked.text
    assert (await client.post("/v1/decisions", headers=partner, json=REQUEST_EXAMPLES["decide"])).status_code == 401
