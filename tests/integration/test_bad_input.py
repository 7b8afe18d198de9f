"""Bad input (docs/design.md, "What done means"): a clear 4xx problem document, never a 5xx, and nothing written."""

import json

import msgspec
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import events
from tests.conftest import ADMIN

PURPOSE = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P90D"}
SCOPE = {"title": "Profile", "description": "Name", "sensitivity": "low"}
PARTNER = {"name": "Acme", "status": "active", "data_uses": {"marketing": ["profile"]}}
CONSENTS = "/v1/subjects/u-1/consents"


@pytest.fixture(params=[True, False], ids=["fast", "litestar"])
def settings(settings, request):
    """Every test here runs against both answers to POST .../consents: the thin ASGI layer and Litestar's."""
    return msgspec.structs.replace(settings, fast_writes=request.param)


def grant(**fields) -> dict:
    return {"purpose": "marketing", "action": "grant", **fields}


def consents(*changes: dict, **body) -> dict:
    return {"changes": list(changes or [grant()]), **body}


# (id, method, path, JSON body or raw bytes, extra headers, expected status)
CASES = [
    # Not JSON, or not the right JSON
    ("malformed json", "post", CONSENTS, b'{"changes": [', {}, 400),
    ("empty body", "post", CONSENTS, b"", {}, 400),
    ("array body", "post", CONSENTS, b"[]", {}, 400),
    ("lone surrogate", "put", "/v1/purposes/marketing", b'{"title": "\\ud800", "description": "d", '
                                                         b'"legal_basis": "consent", "retention": "P1D"}', {}, 400),
    ("changes is a string", "post", CONSENTS, {"changes": "grant"}, {}, 400),
    ("purpose is a number", "post", CONSENTS, consents(grant(purpose=7)), {}, 400),
    ("scopes is a string", "post", CONSENTS, consents(grant(scopes="profile")), {}, 400),
    ("unknown action", "post", CONSENTS, consents(grant(action="revoke")), {}, 400),
    ("unknown source", "post", CONSENTS, consents(source="email"), {}, 400),
    ("unknown field", "post", CONSENTS, consents(note="x"), {}, 400),
    ("unknown field in change", "post", CONSENTS, consents(grant(note="x")), {}, 400),
    ("unknown field in evidence", "post", CONSENTS, consents(evidence={"ip": "10.0.0.1"}), {}, 400),
    ("unknown field in purpose", "put", "/v1/purposes/marketing", PURPOSE | {"owner": "me"}, {}, 400),
    ("unknown legal basis", "put", "/v1/purposes/marketing", PURPOSE | {"legal_basis": "whim"}, {}, 400),
    ("unknown sensitivity", "put", "/v1/scopes/profile", SCOPE | {"sensitivity": "extreme"}, {}, 400),
    ("partner put as suspended", "put", "/v1/partners/acme", PARTNER | {"status": "suspended"}, {}, 400),
    ("empty title", "put", "/v1/purposes/marketing", PURPOSE | {"title": ""}, {}, 400),
    # PostgreSQL refuses NUL in text and JSONB; it must be refused before it gets there.
    ("NUL in title", "put", "/v1/purposes/marketing", PURPOSE | {"title": "Mar\u0000keting"}, {}, 400),
    ("NUL in partner name", "put", "/v1/partners/acme", PARTNER | {"name": "Ac\u0000me"}, {}, 400),
    ("NUL in evidence", "post", CONSENTS, consents(evidence={"text_shown": "Offers\u0000?"}), {}, 400),
    # Unknown or malformed ids
    ("unknown purpose", "post", CONSENTS, consents(grant(purpose="nope")), {}, 422),
    ("unknown partner", "post", CONSENTS, consents(grant(partner="nope")), {}, 422),
    ("unknown scope", "post", CONSENTS, consents(grant(scopes=["nope"])), {}, 422),
    ("empty scopes", "post", CONSENTS, consents(grant(scopes=[])), {}, 422),
    ("malformed scope", "post", CONSENTS, consents(grant(scopes=["Profile!"])), {}, 422),
    ("purpose id 65 chars in change", "post", CONSENTS, consents(grant(purpose="p" * 65)), {}, 422),
    ("partner id with a dot in change", "post", CONSENTS, consents(grant(partner="acme.eu")), {}, 422),
    ("purpose id 65 chars", "put", "/v1/purposes/" + "p" * 65, PURPOSE, {}, 422),
    ("purpose id with a dot", "put", "/v1/purposes/bad.id", PURPOSE, {}, 422),
    ("purpose id in capitals", "put", "/v1/purposes/Marketing", PURPOSE, {}, 422),
    ("partner id with a space", "put", "/v1/partners/has%20space", PARTNER, {}, 422),
    ("scope id with a space", "put", "/v1/scopes/has%20space", SCOPE, {}, 422),
    ("scope id with empty part", "put", "/v1/scopes/profile..email", SCOPE, {}, 422),
    # Longer than the log's stream ids can hold (PostgreSQL would refuse it with a 503).
    ("scope id 195 chars", "put", "/v1/scopes/" + ".".join(["s" * 64, "s" * 64, "s" * 65]), SCOPE, {}, 422),
    ("subject id 129 chars", "post", "/v1/subjects/" + "u" * 129 + "/consents", consents(), {}, 422),
    ("subject id 129 chars, read", "get", "/v1/subjects/" + "u" * 129 + "/consents", None, {}, 422),
    ("subject id 129 chars, history", "get", "/v1/subjects/" + "u" * 129 + "/history", None, {}, 422),
    ("subject id with a newline", "post", "/v1/subjects/u%0A1/consents", consents(), {}, 422),
    ("data use of unknown purpose", "put", "/v1/partners/acme", PARTNER | {"data_uses": {"nope": ["profile"]}},
     {}, 422),
    # Values
    ("retention in words", "put", "/v1/purposes/marketing", PURPOSE | {"retention": "90 days"}, {}, 422),
    ("retention empty", "put", "/v1/purposes/marketing", PURPOSE | {"retention": ""}, {}, 400),
    ("empty changes", "post", CONSENTS, {"changes": []}, {}, 400),
    ("101 changes", "post", CONSENTS, {"changes": [grant()] * 101}, {}, 400),
    ("expires_at not a time", "post", CONSENTS, consents(grant(expires_at="tomorrow")), {}, 400),
    ("expires_at naive", "post", CONSENTS, consents(grant(expires_at="2999-01-01T00:00:00")), {}, 422),
    ("expires_at in the past", "post", CONSENTS, consents(grant(expires_at="2001-01-01T00:00:00Z")), {}, 422),
    # Year 9999 at -01:00 is year 10000 in UTC: no store can hold it.
    ("expires_at past year 9999 in UTC", "post", CONSENTS,
     consents(grant(expires_at="9999-12-31T23:30:00-01:00")), {}, 400),
    ("contract end naive", "put", "/v1/partners/acme", PARTNER | {"contract_ends_at": "2030-01-01T00:00:00"},
     {}, 422),
    ("contract end before year 1 in UTC", "put", "/v1/partners/acme",
     PARTNER | {"contract_ends_at": "0001-01-01T00:30:00+01:00"}, {}, 400),
    # Headers and query
    ("malformed If-Match", "post", CONSENTS, consents(), {"If-Match": "three"}, 400),
    ("overlong Idempotency-Key", "post", CONSENTS, consents(), {"Idempotency-Key": "k" * 201}, 400),
    ("history limit 0", "get", "/v1/subjects/u-1/history?limit=0", None, {}, 400),
    ("history limit 1001", "get", "/v1/subjects/u-1/history?limit=1001", None, {}, 400),
    ("body over 1 MiB", "post", CONSENTS, consents(evidence={"text_shown": "x" * 1_100_000}), {}, 413),
    ("method not allowed", "delete", "/v1/purposes/marketing", None, {}, 405),
    ("no such route", "get", "/v1/nothing", None, {}, 404),
]


async def put_catalog(client) -> None:
    for path, body in (("/v1/purposes/marketing", PURPOSE), ("/v1/scopes/profile", SCOPE),
                       ("/v1/partners/acme", PARTNER)):
        answer = await client.put(path, headers=ADMIN, json=body)
        assert answer.status_code == 201, answer.text


async def event_count(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
async def test_bad_input_is_a_4xx_problem_and_writes_nothing(client, database_url, method, path, body, headers,
                                                              status):
    await put_catalog(client)
    before = await event_count(database_url)
    assert before == 3
    kwargs: dict = {"headers": {**ADMIN, **headers}}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"]["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["content"] = json.dumps(body)
        kwargs["headers"]["Content-Type"] = "application/json"
    answer = await client.request(method.upper(), path, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert {"status", "title", "detail", "code"} <= set(problem)
    assert problem["status"] == status
    assert problem["code"] and problem["code"] == problem["code"].lower()
    assert await event_count(database_url) == before
    # The catalog and the subject are as they were.
    assert (await client.get("/v1/purposes/marketing", headers=ADMIN)).json()["title"] == "Marketing"
    assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["name"] == "Acme"
    assert (await client.get(CONSENTS, headers=ADMIN)).json()["version"] == 0
