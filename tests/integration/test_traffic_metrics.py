"""GET /metrics per partner and per route template: decisions, denials, violations, HTTP requests and latency."""

from __future__ import annotations

import time

import jwt
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consent.app.partner_access import TOKEN_ISSUER, TOKEN_KID
from tests.conftest import ADMIN, TOKEN_SIGNING_KEY, user_headers
from tests.integration.test_decisions_api import grant, partner_headers, setup_catalog

SUBJECT = "person-4711"


@pytest.fixture(params=[True, False], ids=["thin", "litestar"])
def settings(settings, request):
    """POST /v1/decisions and POST consents answered by the thin ASGI layers, and by Litestar's routes."""
    return msgspec.structs.replace(settings, fast_decisions=request.param, fast_writes=request.param)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the Prometheus text: (name, its labels) -> value."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def expired_token(partner: str, key: str = TOKEN_SIGNING_KEY) -> dict[str, str]:
    claims = {"iss": TOKEN_ISSUER, "sub": partner, "cid": "cl_x", "jti": "j", "exp": int(time.time()) - 60}
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='HS256', headers={'kid': TOKEN_KID})}"}


async def test_partner_labelled_counters_and_route_templates(client):
    await setup_catalog(client)
    await client.put("/v1/partners/sandco", headers=ADMIN, json={
        "name": "sandco", "status": "sandbox", "data_uses": {"marketing": ["orders"]}})
    await client.put("/v1/partners/initech", headers=ADMIN, json={
        "name": "initech", "status": "active", "data_uses": {"marketing": ["orders"]}, "rate_limit": 1})
    acme, acme_client = await partner_headers(client, "acme")
    sandbox, _ = await partner_headers(client, "sandco")
    initech, _ = await partner_headers(client, "initech")  # its one request a second is spent on nothing yet
    await grant(client, SUBJECT, "acme")
    question = {"subject_id": SUBJECT, "purpose": "marketing", "scopes": ["orders"]}

    assert (await client.post("/v1/decisions", headers=acme, json=question)).json()["decision"] == "permit"
    assert (await client.post("/v1/decisions", headers=acme, json={**question, "subject_id": "nobody"}
                              )).json()["decision"] == "deny"
    assert (await client.post("/v1/decisions", headers=acme, json={**question, "scopes": ["orders", "history"]}
                              )).json()["decision"] == "partial"
    assert (await client.post("/v1/decisions", headers=ADMIN, json=question)).json()["decision"] == "deny"  # 1st party
    assert (await client.post("/v1/decisions", headers=ADMIN, json={**question, "partner": "no-such"})
            ).json()["denied"][0]["reason"] == "unknown_partner"
    assert (await client.post("/v1/decisions", headers=sandbox, json=question)).json()["code"] == "sandbox_only"
    statuses = [(await client.post("/v1/decisions", headers=initech, json=question)).status_code for _ in range(3)]
    assert 429 in statuses
    assert (await client.post("/v1/decisions", headers=expired_token("acme"), json=question)).status_code == 401
    assert (await client.post("/v1/decisions", headers=expired_token("acme", "another-signing-key-0123456789abcdef"),
                              json=question)).status_code == 401
    narrow = (await client.post("/v1/partners/acme/credentials", headers=ADMIN, json={"scopes": ["catalog:read"]}
                                )).json()
    wrong_secret = await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": narrow["client_id"], "client_secret": "wrong"})
    assert wrong_secret.status_code == 401
    narrow_token = (await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": narrow["client_id"],
        "client_secret": narrow["client_secret"]})).json()["access_token"]
    lacking = await client.post("/v1/decisions", headers={"Authorization": f"Bearer {narrow_token}"}, json=question)
    assert lacking.json()["code"] == "insufficient_scope"
    assert (await client.get(f"/v1/subjects/{SUBJECT}/consents", headers=user_headers(SUBJECT))).status_code == 200
    assert (await client.get(f"/nowhere/{SUBJECT}")).status_code == 404

    text = (await client.get("/metrics")).text
    found = samples(text)
    decisions = {outcome: value(found, "consent_partner_decisions_total", partner="acme", outcome=outcome)
                 for outcome in ("permit", "deny", "partial")}
    assert decisions == {"permit": 1, "deny": 1, "partial": 1}
    assert value(found, "consent_partner_denials_total", partner="acme", reason="no_consent") == 1
    assert value(found, "consent_partner_denials_total", partner="acme", reason="scope_not_approved") == 1
    assert value(found, "consent_partner_decisions_total", partner="_first_party", outcome="deny") == 1
    # A partner id the catalog does not know is no label of its own.
    assert value(found, "consent_partner_denials_total", partner="_unknown", reason="unknown_partner") == 1
    assert "no-such" not in text
    violations = {(stats_partner, kind): value(found, "consent_partner_violations_total", partner=stats_partner,
                                               kind=kind)
                  for stats_partner, kind in (("acme", "scope_not_approved"), ("sandco", "sandbox_only"),
                                              ("acme", "invalid_token"),
                                              ("_unknown", "invalid_token"), ("acme", "invalid_client"),
                                              ("acme", "insufficient_scope"))}
    assert violations == dict.fromkeys(violations, 1)
    assert value(found, "consent_partner_violations_total", partner="initech", kind="rate_limited") == \
        statuses.count(429)
    # acme's requests: the token, 3 decisions, the refused expired token, the wrong secret, the narrow token,
    # the decision it lacked the scope for.
    assert value(found, "consent_partner_requests_total", partner="acme", status_class="2xx") == 5
    assert value(found, "consent_partner_requests_total", partner="acme", status_class="4xx") == 3
    assert value(found, "consent_partner_request_duration_seconds_count", partner="acme") == 8

    answered = 5 + statuses.count(200)  # acme's 3, the admin's 2, initech's within its rate
    assert value(found, "consent_http_requests_total", route="/v1/decisions", method="POST", code="200") == answered
    assert value(found, "consent_http_requests_total", route="/v1/decisions", method="POST", code="429") == \
        statuses.count(429)
    assert value(found, "consent_http_requests_total", route="/v1/subjects/{subject_id}/consents", method="POST",
                 code="200") == 1
    assert value(found, "consent_http_requests_total", route="/v1/subjects/{subject_id}/consents", method="GET",
                 code="200") == 1
    assert value(found, "consent_http_requests_total", route="unmatched", method="GET", code="404") == 1
    assert value(found, "consent_http_request_duration_seconds_count", route="/v1/decisions", method="POST",
                 status_class="2xx") == answered
    assert value(found, "consent_http_request_duration_seconds_bucket", route="/v1/decisions", method="POST",
                 status_class="2xx", le="+Inf") == answered
    assert value(found, "consent_http_request_duration_seconds_bucket", route="/v1/decisions", method="POST",
                 status_class="2xx", le="0.0005") <= answered
    assert value(found, "consent_decisions_total", decision="deny") == 3 + statuses.count(200)  # all partners
    assert SUBJECT not in text and "nowhere" not in text and "Bearer" not in text
