"""Who may call what (docs/api.md): 401 without valid credentials, 403 outside the caller's rights."""

import asyncio
import base64
import json
import time
import warnings

import jwt
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import events
from consent.api.app import create_app
from consent.api.auth import key_id
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS, USER_TOKEN_SECRET, user_headers

PURPOSE = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P90D"}
SCOPE = {"title": "Profile", "description": "Name", "sensitivity": "low"}
PARTNER = {"name": "Acme", "status": "active", "data_uses": {"marketing": ["profile"]}}
GRANT = {"changes": [{"purpose": "marketing", "action": "grant"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unsigned_token(claims: dict, header: dict | None = None) -> str:
    """A JWT with `alg: none` and an empty signature, as an attacker would forge it."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part(header or {'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def hs512_token() -> str:
    with warnings.catch_warnings():  # the test secret is short for SHA-512; irrelevant here
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims(), USER_TOKEN_SECRET, algorithm="HS512")


def claims(**overrides) -> dict:
    return {"sub": "u-1", "exp": int(time.time()) + 300, **overrides}


async def put_catalog(client) -> None:
    for path, body in (("/v1/purposes/marketing", PURPOSE), ("/v1/scopes/profile", SCOPE),
                       ("/v1/partners/acme", PARTNER)):
        assert (await client.put(path, headers=ADMIN, json=body)).status_code == 201


async def logged(url: str) -> list[tuple[str, str, dict]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(events.c.stream_id, events.c.type, events.c.metadata)
                                      .order_by(events.c.position))
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


def assert_unauthorized(answer) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["code"] == "unauthorized"


def assert_forbidden(answer) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["code"] == "forbidden"


# 401


BAD_CREDENTIALS = {
    "none": {},
    "empty bearer": {"Authorization": "Bearer "},
    "other scheme": {"Authorization": f"Basic {ADMIN_KEY}"},
    "wrong admin key": bearer(ADMIN_KEY + "x"),
    "admin key prefix": bearer(ADMIN_KEY[:-1]),
    "expired user token": user_headers("u-1", ttl=-60),
    "other secret": user_headers("u-1", secret="another-secret-0123456789abcdef0123"),
    "alg none": bearer(unsigned_token(claims())),
    "alg none, partner kid": bearer(unsigned_token(
        claims(cid="c", iss="consent"), {"alg": "none", "typ": "JWT", "kid": "consent-partner"})),
    "HS512 with the right secret": bearer(hs512_token()),
    "no exp": bearer(jwt.encode({"sub": "u-1"}, USER_TOKEN_SECRET, algorithm="HS256")),
    "no sub": bearer(jwt.encode({"exp": int(time.time()) + 300}, USER_TOKEN_SECRET, algorithm="HS256")),
    "overlong sub": bearer(jwt.encode(claims(sub="u" * 129), USER_TOKEN_SECRET, algorithm="HS256")),
    "tampered payload": bearer(".".join([
        jwt.encode(claims(), USER_TOKEN_SECRET, algorithm="HS256").split(".")[0],
        unsigned_token(claims(sub="u-2")).split(".")[1],
        jwt.encode(claims(), USER_TOKEN_SECRET, algorithm="HS256").split(".")[2]])),
    "garbage": bearer("a.b.c"),
}


@pytest.mark.parametrize("headers", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
async def test_bad_credentials_are_401(client, database_url, headers):
    await put_catalog(client)
    before = await logged(database_url)
    for answer in (await client.get("/v1/purposes", headers=headers),
                   await client.get("/v1/subjects/u-1/consents", headers=headers),
                   await client.post("/v1/subjects/u-1/consents", headers=headers, json=GRANT),
                   await client.put("/v1/purposes/marketing", headers=headers, json=PURPOSE | {"title": "X"})):
        assert_unauthorized(answer)
    assert await logged(database_url) == before


async def test_bearer_scheme_is_case_insensitive(client):
    assert (await client.get("/v1/purposes", headers={"Authorization": f"bearer {ADMIN_KEY}"})).status_code == 200


async def test_cached_user_token_stops_at_its_expiry(client):
    # At least a second of life left, so the first request is surely in time.
    token = jwt.encode({"sub": "u-1", "exp": int(time.time()) + 2}, USER_TOKEN_SECRET, algorithm="HS256")
    assert (await client.get("/v1/subjects/u-1/consents", headers=bearer(token))).status_code == 200
    await asyncio.sleep(jwt.decode(token, options={"verify_signature": False})["exp"] - time.time() + 0.05)
    assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=bearer(token)))


async def test_without_admin_keys_admin_calls_are_401(database_url):
    settings = Settings(database_url=database_url, admin_keys=(), user_token_secret=USER_TOKEN_SECRET, **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        assert_unauthorized(await client.put("/v1/purposes/marketing", headers=ADMIN, json=PURPOSE))
        assert_unauthorized(await client.get("/v1/purposes", headers=ADMIN))
        assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=ADMIN))
        # End users are still served.
        assert (await client.get("/v1/purposes", headers=user_headers("u-1"))).status_code == 200
    assert await logged(database_url) == []


async def test_without_user_secret_user_tokens_are_401(database_url):
    settings = Settings(database_url=database_url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        assert_unauthorized(await client.get("/v1/subjects/u-1/consents", headers=user_headers("u-1")))
        assert (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).status_code == 200


# The end user: own subject only, and catalog reads


async def test_end_user_acts_on_own_subject(client, database_url):
    await put_catalog(client)
    user = user_headers("u-1")
    granted = await client.post("/v1/subjects/u-1/consents", headers=user, json=GRANT)
    assert granted.status_code == 200, granted.text
    state = {k: v for k, v in granted.json().items() if k != "receipts"}
    assert (await client.get("/v1/subjects/u-1/consents", headers=user)).json() == state
    history = await client.get("/v1/subjects/u-1/history", headers=user)
    assert [e["type"] for e in history.json()["events"]] == ["subject.granted"]
    # The log names who acted without revealing the admin key or the user's token.
    actors = [metadata["actor"] for _, _, metadata in await logged(database_url)]
    assert actors == [f"admin:{key_id(ADMIN_KEY)}"] * 3 + ["subject"]
    assert ADMIN_KEY not in str(actors)


async def test_end_user_on_another_subject_is_403(client, database_url):
    await put_catalog(client)
    before = await logged(database_url)
    user = user_headers("u-1")
    for answer in (await client.post("/v1/subjects/u-2/consents", headers=user, json=GRANT),
                   await client.get("/v1/subjects/u-2/consents", headers=user),
                   await client.get("/v1/subjects/u-2/history", headers=user),
                   # Prefix and case variants are other subjects too.
                   await client.get("/v1/subjects/u-10/consents", headers=user),
                   await client.get("/v1/subjects/U-1/consents", headers=user)):
        assert_forbidden(answer)
    assert await logged(database_url) == before


async def test_end_user_cannot_write_the_catalog(client, database_url):
    await put_catalog(client)
    before = await logged(database_url)
    user = user_headers("u-1")
    for answer in (await client.put("/v1/purposes/marketing", headers=user, json=PURPOSE | {"title": "Mine"}),
                   await client.put("/v1/purposes/other", headers=user, json=PURPOSE),
                   await client.post("/v1/purposes/marketing/retire", headers=user),
                   await client.put("/v1/scopes/profile", headers=user, json=SCOPE | {"sensitivity": "high"}),
                   await client.put("/v1/partners/acme", headers=user, json=PARTNER | {"name": "Mine"}),
                   await client.put("/v1/partners/mine", headers=user, json=PARTNER),
                   await client.post("/v1/partners/acme/suspend", headers=user),
                   await client.post("/v1/partners/acme/reinstate", headers=user),
                   await client.post("/v1/partners/acme/terminate", headers=user)):
        assert_forbidden(answer)
    assert await logged(database_url) == before
    assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["status"] == "active"


async def test_end_user_cannot_read_partners(client):
    await put_catalog(client)
    user = user_headers("u-1")
    assert_forbidden(await client.get("/v1/partners/acme", headers=user))
    assert_forbidden(await client.get("/v1/partners", headers=user))


@pytest.mark.parametrize("path", ["/v1/purposes", "/v1/purposes/marketing", "/v1/scopes", "/v1/scopes/profile"])
async def test_catalog_reads_are_open_to_every_authenticated_caller(client, path):
    await put_catalog(client)
    by_admin = await client.get(path, headers=ADMIN)
    by_user = await client.get(path, headers=user_headers("u-1"))
    assert by_admin.status_code == by_user.status_code == 200
    assert by_user.json() == by_admin.json()
    assert by_user.json()  # not an empty list
