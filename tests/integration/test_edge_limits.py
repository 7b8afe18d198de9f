"""Limits at the edge (issue 6, item 7): request body size and strict CORS."""

from __future__ import annotations

import json

import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS, USER_TOKEN_SECRET, on_app_loop, user_headers

LIMIT = 4096
ORIGIN = "https://privacy.example"
JSON = {"Content-Type": "application/json"}
PURPOSE = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P90D"}


@pytest.fixture(params=[True, False], ids=["fast decisions", "litestar decisions"])
def settings(database_url: str, request: pytest.FixtureRequest) -> Settings:
    return Settings(database_url=database_url, admin_keys=(ADMIN_KEY,), user_token_secret=USER_TOKEN_SECRET,
                    max_body_bytes=LIMIT, cors_origins=(ORIGIN, "http://localhost:3000"),
                    fast_decisions=request.param, **SHARED_KEYS)


def assert_too_large(answer) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["code"] == "payload_too_large" and problem["status"] == 413
    assert problem["type"] == "urn:consent:problem:payload_too_large"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.text = status, headers, body.decode()

    def json(self):
        return json.loads(self.text)


async def streamed(client: AsyncTestClient, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
    """The body in chunks and without a Content-Length, so only counting what arrives can enforce the limit.

    Straight to the ASGI app (on its own loop): the test client always sends a Content-Length.
    """
    pieces = [body[start:start + 1000] for start in range(0, len(body), 1000)]
    sent: list[dict] = []

    async def receive() -> dict:
        chunk = pieces.pop(0) if pieces else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pieces)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    await on_app_loop(client, client.app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], answer_headers, b"".join(m.get("body", b"") for m in sent[1:]))


# Body size


async def test_oversized_body_is_413_on_litestar_routes_and_nothing_is_written(client):
    body = PURPOSE | {"description": "x" * LIMIT}
    assert_too_large(await client.put("/v1/purposes/marketing", headers=ADMIN, json=body))
    assert_too_large(await streamed(client, "PUT", "/v1/purposes/marketing", ADMIN | JSON,
                                    json.dumps(body).encode()))
    assert (await client.get("/v1/purposes/marketing", headers=ADMIN)).status_code == 404
    grant = {"changes": [{"purpose": "marketing", "action": "grant"}], "source": "web",
             "evidence": {"collection_point": "p", "text_shown": "y" * LIMIT}}
    assert_too_large(await client.post("/v1/subjects/u-1/consents", headers=user_headers("u-1"), json=grant))


async def test_oversized_decision_request_is_413(client):
    body = b'{"subject_id": "u-1", "purpose": "marketing", "scopes": [' + b'"profile",' * LIMIT + b'"x"]}'
    assert_too_large(await client.post("/v1/decisions", headers=ADMIN | JSON, content=body))
    assert_too_large(await streamed(client, "POST", "/v1/decisions", ADMIN | JSON, body))


async def test_a_body_within_the_limit_is_served(client):
    # Not far below the limit, so that a stricter hidden limit (the fast path had 64 KiB of its own) would show.
    body = PURPOSE | {"description": "x" * (LIMIT - 200)}
    assert (await client.put("/v1/purposes/marketing", headers=ADMIN, json=body)).status_code == 201
    decision = {"subject_id": "u-1", "purpose": "marketing", "scopes": ["p" * 40] * ((LIMIT - 200) // 43)}
    answer = await client.post("/v1/decisions", headers=ADMIN, json=decision | {"partner": "nobody"})
    assert answer.status_code == 200, answer.text


def test_the_limit_is_a_setting():
    assert Settings.from_env({}).max_body_bytes == 1_048_576
    assert Settings.from_env({"CONSENT_MAX_BODY_BYTES": "2048"}).max_body_bytes == 2048
    with pytest.raises(ValueError, match="CONSENT_MAX_BODY_BYTES"):
        Settings.from_env({"CONSENT_MAX_BODY_BYTES": "0"})


# CORS


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, if-match"}


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/subjects/u-1/consents"])
async def test_preflight_from_an_allowed_origin_gets_the_headers(client, path):
    answer = await client.options(path, headers=preflight(ORIGIN))
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    allowed_headers = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "if-match", "sec-gpc"} <= allowed_headers
    assert set(answer.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST", "PUT", "DELETE"}
    assert "access-control-allow-credentials" not in answer.headers
    assert "Origin" in answer.headers["vary"]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://privacy.example.evil.example",
                                    "http://privacy.example", "https://privacy.example:8443", "null"])
async def test_preflight_from_another_origin_does_not(client, origin):
    answer = await client.options("/v1/decisions", headers=preflight(origin))
    assert answer.status_code >= 400
    assert "access-control-allow-origin" not in answer.headers


async def test_preflight_for_a_method_the_api_does_not_use_is_refused(client):
    answer = await client.options("/v1/decisions", headers=preflight(ORIGIN, "PATCH"))
    assert answer.status_code >= 400
    assert "access-control-allow-origin" not in answer.headers


async def test_answers_name_only_the_allowed_origin(client):
    for answer in (await client.get("/v1/purposes", headers=ADMIN | {"Origin": ORIGIN}),
                   await client.post("/v1/decisions", headers=ADMIN | {"Origin": ORIGIN},
                                     json={"subject_id": "u-1", "purpose": "marketing", "scopes": ["p"],
                                           "partner": "nobody"})):
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in answer.headers["access-control-expose-headers"].lower()
    other = await client.get("/v1/purposes", headers=ADMIN | {"Origin": "https://evil.example"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


async def test_without_origins_no_cors_headers_at_all(database_url):
    settings = Settings(database_url=database_url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        for answer in (await client.options("/v1/decisions", headers=preflight(ORIGIN)),
                       await client.get("/v1/purposes", headers=ADMIN | {"Origin": ORIGIN})):
            assert not [name for name in answer.headers if name.lower().startswith("access-control-")]


@pytest.mark.parametrize("origins", ["*", "https://*.example", "https://privacy.example/", "privacy.example",
                                     "https://Privacy.example", "https://privacy.example, null"])
def test_only_exact_origins_are_accepted(origins):
    with pytest.raises(ValueError, match="CONSENT_CORS_ORIGINS"):
        Settings.from_env({"CONSENT_CORS_ORIGINS": origins})
    assert Settings.from_env({"CONSENT_CORS_ORIGINS": " https://a.example , http://localhost:3000"}).cors_origins == (
        "https://a.example", "http://localhost:3000")
