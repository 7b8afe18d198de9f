"""Who may call what, for every route the app serves.

The matrix is built from the app's own routes: a route added without a rule here fails
the test, so every endpoint states who may call it and is shown refusing everyone else,
before it reads the body: a malformed body gets a refused caller the same 401 or 403.
"""

from __future__ import annotations

import time

import jwt
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.app.partner_access import ALL_SCOPES
from tests.conftest import ADMIN, USER_TOKEN_SECRET, user_headers
from tests.integration.test_decisions_api import setup_catalog

PUBLIC, ANY, ADMIN_ONLY, OWN_SUBJECT, PARTNER_OR_ADMIN, SELF_PARTNER, SESSION = (
    "public", "any authenticated", "admin", "admin or the subject itself", "admin or a partner",
    "admin or the partner itself", "the subject's privacy center session (a cookie, no header)")

RULES: dict[tuple[str, str], str] = {
    ("GET", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/v1/oauth/token"): PUBLIC,  # the client authenticates with its credential in the body
    ("POST", "/v1/oauth/revoke"): PUBLIC,  # likewise (RFC 7009 §2.1)
    ("GET", "/v1/audit"): ADMIN_ONLY,
    ("POST", "/v1/partners/{partner_id:str}/credentials/{client_id:str}/rotate"): ADMIN_ONLY,
    ("GET", "/v1/purposes"): ANY,
    ("GET", "/v1/purposes/{purpose_id:str}"): ANY,
    ("GET", "/v1/scopes"): ANY,
    ("GET", "/v1/scopes/{scope_id:str}"): ANY,
    ("PUT", "/v1/purposes/{purpose_id:str}"): ADMIN_ONLY,
    ("POST", "/v1/purposes/{purpose_id:str}/retire"): ADMIN_ONLY,
    ("PUT", "/v1/scopes/{scope_id:str}"): ADMIN_ONLY,
    ("PUT", "/v1/partners/{partner_id:str}"): ADMIN_ONLY,
    ("GET", "/v1/partners"): ADMIN_ONLY,
    ("GET", "/v1/partners/{partner_id:str}"): SELF_PARTNER,
    ("POST", "/v1/partners/{partner_id:str}/suspend"): ADMIN_ONLY,
    ("POST", "/v1/partners/{partner_id:str}/reinstate"): ADMIN_ONLY,
    ("POST", "/v1/partners/{partner_id:str}/terminate"): ADMIN_ONLY,
    ("POST", "/v1/partners/{partner_id:str}/credentials"): ADMIN_ONLY,
    ("DELETE", "/v1/partners/{partner_id:str}/credentials/{client_id:str}"): ADMIN_ONLY,
    ("GET", "/v1/subjects/{subject_id:str}/consents"): OWN_SUBJECT,
    ("POST", "/v1/subjects/{subject_id:str}/consents"): OWN_SUBJECT,
    ("GET", "/v1/subjects/{subject_id:str}/history"): OWN_SUBJECT,
    ("POST", "/v1/subjects/{subject_id:str}/erase"): OWN_SUBJECT,
    ("GET", "/v1/subjects/{subject_id:str}/pseudonyms/{partner_id:str}"): OWN_SUBJECT,
    ("GET", "/v1/subjects/{subject_id:str}/receipts/{event_id:uuid}"): OWN_SUBJECT,
    ("GET", "/v1/subjects/{subject_id:str}/export"): OWN_SUBJECT,
    ("GET", "/.well-known/jwks.json"): PUBLIC,  # public keys that verify receipts
    ("GET", "/.well-known/oauth-authorization-server"): PUBLIC,  # where partners get tokens (RFC 8414)
    ("GET", "/"): PUBLIC,  # where to start: addresses only
    ("GET", "/v1/partners/{partner_id:str}/health"): SELF_PARTNER,
    ("GET", "/v1/subjects/{subject_id:str}/permissions"): PARTNER_OR_ADMIN,
    ("POST", "/v1/decisions"): PARTNER_OR_ADMIN,
    ("POST", "/v1/decisions/batch"): PARTNER_OR_ADMIN,
    ("POST", "/v1/subjects/{subject_id:str}/privacy-center/sessions"): OWN_SUBJECT,
    # The privacy center's pages (tests/integration/test_privacy_center.py shows a session getting through).
    ("GET", "/v1/catalog"): ADMIN_ONLY,
    ("POST", "/v1/catalog/plan"): ADMIN_ONLY,
    ("POST", "/v1/catalog/apply"): ADMIN_ONLY,
    ("GET", "/privacy-center/style.css"): PUBLIC,
    ("GET", "/privacy-center/enter/{code:str}"): PUBLIC,  # the single-use code is the credential
    ("GET", "/privacy-center"): SESSION,
    ("POST", "/privacy-center"): SESSION,
    ("POST", "/privacy-center/logout"): SESSION,
    ("GET", "/privacy-center/receipts/{event_id:uuid}"): SESSION,
    ("GET", "/privacy-center/export"): SESSION,
    ("GET", "/privacy-center/erase"): SESSION,
    ("POST", "/privacy-center/erase"): SESSION,
    # Partners' webhooks: the partner's token needs the opt-in scope webhooks:manage (callers() asks for it).
    ("POST", "/v1/partners/{partner_id:str}/webhooks"): SELF_PARTNER,
    ("GET", "/v1/partners/{partner_id:str}/webhooks"): SELF_PARTNER,
    ("GET", "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}"): SELF_PARTNER,
    ("PATCH", "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}"): SELF_PARTNER,
    ("DELETE", "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}"): SELF_PARTNER,
    ("POST", "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}/rotate-secret"): SELF_PARTNER,
    ("GET", "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}/deliveries"): SELF_PARTNER,
    ("POST",
     "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}/deliveries/{delivery_id:int}/retry"): SELF_PARTNER,
    ("POST", "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}/replay"): SELF_PARTNER,
}
SCHEMA_PREFIX = "/schema"  # the OpenAPI document and its viewers: public, no data

CALLERS = ("none", "expired user", "user of another subject", "user", "other partner", "partner",
           "sandbox partner", "suspended partner", "admin")
ALLOWED = {
    PUBLIC: set(CALLERS),
    # A sandbox partner reads the catalog, but asks only about test subjects (u-1 is a real one).
    ANY: {"user of another subject", "user", "other partner", "partner", "sandbox partner", "admin"},
    ADMIN_ONLY: {"admin"},
    OWN_SUBJECT: {"user", "admin"},
    PARTNER_OR_ADMIN: {"other partner", "partner", "admin"},
    SELF_PARTNER: {"partner", "admin"},
    SESSION: set(),
}
BODIES = {
    "/v1/purposes/{purpose_id:str}": {"title": "M", "description": "d", "legal_basis": "consent",
                                      "retention": "P30D"},
    "/v1/scopes/{scope_id:str}": {"title": "O", "description": "", "sensitivity": "low"},
    "/v1/partners/{partner_id:str}": {"name": "acme", "status": "active",
                                      "data_uses": {"marketing": ["profile", "orders"]}},
    "/v1/subjects/{subject_id:str}/consents": {"changes": [{"purpose": "marketing", "action": "grant"}]},
    "/v1/decisions": {"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"]},
    "/v1/decisions/batch": {"items": [{"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"]}]},
    "/v1/partners/{partner_id:str}/credentials": {"scopes": ["catalog:read"]},
    "/v1/catalog/plan": {"scopes": {"orders": {"title": "O", "description": "", "sensitivity": "low"}}},
    "/v1/catalog/apply": {"scopes": {"orders": {"title": "O", "description": "", "sensitivity": "low"}}},
    "/v1/partners/{partner_id:str}/webhooks": {"url": "https://127.0.0.1/hooks"},  # refused (422) when let in
    "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}": {"enabled": False},
    "/v1/partners/{partner_id:str}/webhooks/{webhook_id:str}/replay": {"after_position": 0},
}


def served_routes(app) -> list[tuple[str, str]]:
    return sorted((method, route.path) for route in app.routes for method in route.methods
                  if method not in ("OPTIONS", "HEAD") and not route.path.startswith(SCHEMA_PREFIX))


def handlers(app) -> dict[tuple[str, str], object]:
    """The Litestar handler of each (method, path) the app serves."""
    return {(method, route.path): handler for route in app.routes
            for method, (handler, _) in getattr(route, "route_handler_map", {}).items()}


# Routes that read their body themselves (JSON or YAML), not through a `data` parameter.
RAW_BODY_ROUTES = {("POST", "/v1/catalog/plan"), ("POST", "/v1/catalog/apply")}


def body_routes(app) -> list[tuple[str, str]]:
    """The routes that read a body, other than the public ones (which refuse nobody)."""
    return sorted(key for key, handler in handlers(app).items()
                  if ("data" in handler.parsed_fn_signature.parameters or key in RAW_BODY_ROUTES)
                  and RULES[key] != PUBLIC)


def test_every_route_has_a_rule(client):
    missing = [r for r in served_routes(client.app) if r not in RULES]
    assert missing == [], f"routes without an authorization rule: {missing}"


def test_every_route_with_credentials_decides_in_a_guard(client):
    """Guards run before Litestar reads the body or the parameters (consent/api/guards.py)."""
    unguarded = [key for key, handler in handlers(client.app).items()
                 if key in RULES and RULES[key] != PUBLIC and not handler.resolve_guards()]
    assert unguarded == []
    assert len(body_routes(client.app)) == len(BODIES)  # each has a valid body here


async def partner_headers(client, partner_id: str) -> tuple[dict[str, str], str]:
    """A token of every scope, the opt-in ones included: the matrix is about who, not which scope."""
    credential = (await client.post(f"/v1/partners/{partner_id}/credentials", headers=ADMIN,
                                    json={"scopes": list(ALL_SCOPES)})).json()
    issued = await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": credential["client_id"],
        "client_secret": credential["client_secret"]})
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}, credential["client_id"]


async def callers(client) -> dict[str, dict[str, str]]:
    acme, client_id = await partner_headers(client, "acme")
    globex, _ = await partner_headers(client, "globex")
    for partner, status in (("sandco", "sandbox"), ("initech", "active")):
        answer = await client.put(f"/v1/partners/{partner}", headers=ADMIN, json={
            "name": partner, "status": status, "data_uses": {"marketing": ["profile", "orders"]}})
        assert answer.status_code == 201, answer.text
    sandbox, _ = await partner_headers(client, "sandco")
    suspended, _ = await partner_headers(client, "initech")
    assert (await client.post("/v1/partners/initech/suspend", headers=ADMIN)).status_code == 200
    expired = jwt.encode({"sub": "u-1", "exp": int(time.time()) - 60}, USER_TOKEN_SECRET, algorithm="HS256")
    return {"none": {}, "expired user": {"Authorization": f"Bearer {expired}"},
            "user of another subject": user_headers("u-2"), "user": user_headers("u-1"),
            "other partner": globex, "partner": acme, "sandbox partner": sandbox, "suspended partner": suspended,
            "admin": ADMIN}, client_id


@pytest.mark.parametrize("method, path", sorted(RULES))
async def test_only_the_allowed_callers_get_through(client, method, path):
    await setup_catalog(client)
    headers_by_caller, client_id = await callers(client)
    concrete = (path.replace("{purpose_id:str}", "marketing").replace("{scope_id:str}", "orders")
                .replace("{partner_id:str}", "acme").replace("{subject_id:str}", "u-1")
                .replace("{client_id:str}", "cl_unknown")
                .replace("{event_id:uuid}", "00000000-0000-4000-8000-000000000000")
                .replace("{webhook_id:str}", "wh_unknown").replace("{delivery_id:int}", "1"))
    allowed = ALLOWED[RULES[(method, path)]]
    for caller in CALLERS:
        target = concrete + ("?partner=acme" if "permissions" in concrete and caller == "admin" else "")
        kwargs = {"json": BODIES[path]} if path in BODIES and method in ("PUT", "POST") else {}
        if path == "/v1/oauth/token":
            kwargs = {"data": {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}}
        answer = await client.request(method, target, headers=headers_by_caller[caller], **kwargs)
        refused = answer.status_code in (401, 403)
        if path == "/v1/oauth/token":
            refused = False  # its own RFC 6749 answers; a wrong credential is 401 for everyone alike
        assert refused == (caller not in allowed), (
            f"{method} {path} as {caller}: {answer.status_code} {answer.text[:200]}")
        assert answer.status_code < 500, f"{method} {path} as {caller}: {answer.status_code}"


MALFORMED = {"not JSON": b'{"changes": [', "JSON of another shape": b'{"unexpected": [1]}'}
# Callers refused for what the body asks, not for who they are: a sandbox partner may ask about test
# subjects (u-1 is a real one), so a malformed body is all it can be told about.
REFUSED_FOR_THE_BODY = {("POST", "/v1/decisions"): {"sandbox partner"},
                        ("POST", "/v1/decisions/batch"): {"sandbox partner"}}


@pytest.fixture(params=[True, False], ids=["thin routes", "litestar routes"])
async def either_path(settings, request):
    """POST .../consents and POST /v1/decisions answered by their thin ASGI layers, or by Litestar."""
    chosen = msgspec.structs.replace(settings, fast_writes=request.param, fast_decisions=request.param)
    async with AsyncTestClient(create_app(chosen)) as client:
        yield client


def refusal(answer) -> tuple[int, str | None, str | None]:
    code = answer.json().get("code") if answer.status_code >= 400 else None
    return answer.status_code, code, answer.headers.get("www-authenticate")


@pytest.mark.parametrize("malformed", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_refused_caller_learns_nothing_from_a_malformed_body(either_path, malformed):
    client = either_path
    await setup_catalog(client)
    headers_by_caller, _ = await callers(client)
    for method, path in body_routes(client.app):
        target = (path.replace("{purpose_id:str}", "marketing").replace("{scope_id:str}", "orders")
                  .replace("{partner_id:str}", "acme").replace("{subject_id:str}", "u-1")
                  .replace("{webhook_id:str}", "wh_unknown"))
        allowed = ALLOWED[RULES[(method, path)]]
        for caller in CALLERS:
            headers = headers_by_caller[caller]
            answer = await client.request(method, target, content=malformed,
                                          headers={**headers, "Content-Type": "application/json"})
            where = f"{method} {path} as {caller}: {answer.status_code} {answer.text[:200]}"
            if caller in allowed or caller in REFUSED_FOR_THE_BODY.get((method, path), ()):
                # Let through: only now is the body read, and found malformed.
                assert answer.status_code == 400 and answer.json()["code"] == "validation_failed", where
                continue
            valid = await client.request(method, target, json=BODIES[path], headers=headers)
            assert valid.status_code in (401, 403), where
            assert refusal(answer) == refusal(valid), where
