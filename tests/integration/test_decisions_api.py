"""Partner credentials, tokens and decisions over HTTP, on both backends."""

from __future__ import annotations

import urllib.parse

import msgspec
import pytest

from tests.conftest import ADMIN, user_headers


@pytest.fixture(params=[True, False], ids=["fast", "litestar"])
def settings(settings, request):
    """Every test here runs against both answers to POST /v1/decisions: the thin ASGI layer and Litestar's."""
    return msgspec.structs.replace(settings, fast_decisions=request.param)

MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


async def setup_catalog(client) -> None:
    for scope in ("profile", "orders"):
        await client.put(f"/v1/scopes/{scope}", headers=ADMIN,
                         json={"title": scope, "description": "", "sensitivity": "low"})
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    for partner in ("acme", "globex"):
        answer = await client.put(f"/v1/partners/{partner}", headers=ADMIN, json={
            "name": partner, "status": "active", "data_uses": {"marketing": ["profile", "orders"]}})
        assert answer.status_code == 201, answer.text


async def partner_headers(client, partner_id: str) -> tuple[dict[str, str], str]:
    credential = await client.post(f"/v1/partners/{partner_id}/credentials", headers=ADMIN)
    assert credential.status_code == 201, credential.text
    body = credential.json()
    issued = await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": body["client_id"], "client_secret": body["client_secret"]})
    assert issued.status_code == 200, issued.text
    assert issued.json()["token_type"] == "Bearer" and issued.json()["expires_in"] == 900
    return {"Authorization": f"Bearer {issued.json()['access_token']}"}, body["client_id"]


async def grant(client, subject_id: str, partner: str | None, scopes: list[str] | None = None) -> dict:
    answer = await client.post(f"/v1/subjects/{subject_id}/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "partner": partner, "scopes": scopes, "action": "grant"}]})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_partner_decision_permits_what_was_granted(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    written = await grant(client, "u-1", "acme", ["profile"])
    answer = await client.post("/v1/decisions", headers=acme, json={
        "subject_id": "u-1", "purpose": "marketing", "scopes": ["profile", "orders"],
        "min_position": written["position"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["decision"] == "partial"
    assert body["permitted"] == ["profile"]
    assert body["denied"] == [{"scope": "orders", "reason": "no_consent"}]
    assert body["position"] >= written["position"]
    assert body["retain_until"] is not None and body["purpose_version"] == 1


async def test_withdrawal_is_seen_by_the_next_decision(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "u-2", None)
    question = {"subject_id": "u-2", "purpose": "marketing", "scopes": ["orders"]}
    assert (await client.post("/v1/decisions", headers=acme, json=question)).json()["decision"] == "permit"
    await client.post("/v1/subjects/u-2/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "withdraw"}]})
    denied = (await client.post("/v1/decisions", headers=acme, json=question)).json()
    assert denied["denied"] == [{"scope": "orders", "reason": "consent_withdrawn"}]


async def test_batch_and_permissions(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "u-3", "acme", ["orders"])
    batch = await client.post("/v1/decisions/batch", headers=acme, json={"items": [
        {"subject_id": "u-3", "purpose": "marketing", "scopes": ["orders"]},
        {"subject_id": "u-4", "purpose": "marketing", "scopes": ["orders"]},
    ]})
    assert batch.status_code == 200, batch.text
    assert [r["decision"] for r in batch.json()["results"]] == ["permit", "deny"]
    permissions = await client.get("/v1/subjects/u-3/permissions", headers=acme)
    assert permissions.status_code == 200, permissions.text
    assert permissions.json()["permissions"][0]["purpose"] == "marketing"
    assert permissions.json()["permissions"][0]["scopes"] == ["orders"]


async def test_batch_limit(client):
    await setup_catalog(client)
    item = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}
    assert (await client.post("/v1/decisions/batch", headers=ADMIN,
                              json={"items": [item] * 1000, "partner": "acme"})).status_code == 200
    refused = await client.post("/v1/decisions/batch", headers=ADMIN, json={"items": [item] * 1001})
    assert refused.status_code in (400, 422) and refused.json()["code"] == "validation_failed"


async def test_partner_cannot_ask_as_another_partner(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "partner": "globex"}
    assert (await client.post("/v1/decisions", headers=acme, json=question)).status_code == 403
    batch = {"items": [{"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "partner": "globex"}]}
    assert (await client.post("/v1/decisions/batch", headers=acme, json=batch)).status_code == 403
    assert (await client.get("/v1/subjects/u/permissions?partner=globex", headers=acme)).status_code == 403


async def test_end_user_cannot_call_decisions(client):
    await setup_catalog(client)
    user = user_headers("u")
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "partner": "acme"}
    assert (await client.post("/v1/decisions", headers=user, json=question)).status_code == 403
    assert (await client.get("/v1/subjects/u/permissions?partner=acme", headers=user)).status_code == 403


@pytest.mark.parametrize("path", ["/v1/subjects/u/consents", "/v1/subjects/u/history", "/v1/partners"])
async def test_partner_token_never_reaches_admin_or_consent_routes(client, path):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    assert (await client.get(path, headers=acme)).status_code == 403
    assert (await client.put("/v1/purposes/marketing", headers=acme, json=MARKETING)).status_code == 403
    assert (await client.post("/v1/partners/acme/credentials", headers=acme)).status_code == 403


async def test_revoked_credential_and_suspended_partner_are_refused_at_once(client):
    await setup_catalog(client)
    acme, client_id = await partner_headers(client, "acme")
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}
    assert (await client.post("/v1/decisions", headers=acme, json=question)).status_code == 200

    assert (await client.post("/v1/partners/acme/suspend", headers=ADMIN)).status_code == 200
    assert (await client.post("/v1/decisions", headers=acme, json=question)).status_code == 401
    assert (await client.post("/v1/partners/acme/reinstate", headers=ADMIN)).status_code == 200
    assert (await client.post("/v1/decisions", headers=acme, json=question)).status_code == 200

    deleted = await client.delete(f"/v1/partners/acme/credentials/{client_id}", headers=ADMIN)
    assert deleted.status_code == 204
    assert (await client.post("/v1/decisions", headers=acme, json=question)).status_code == 401


async def test_terminated_partner_loses_every_token(client):
    await setup_catalog(client)
    acme, client_id = await partner_headers(client, "acme")
    assert (await client.post("/v1/partners/acme/terminate", headers=ADMIN)).status_code == 200
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}
    assert (await client.post("/v1/decisions", headers=acme, json=question)).status_code == 401
    again = await client.post("/v1/partners/acme/credentials", headers=ADMIN)
    assert again.status_code == 409 and again.json()["code"] == "partner_terminated"


@pytest.mark.parametrize("form, status, error", [
    ({"grant_type": "password", "client_id": "x", "client_secret": "y"}, 400, "unsupported_grant_type"),
    ({"client_id": "x", "client_secret": "y"}, 400, "invalid_request"),
    ({"grant_type": "client_credentials", "client_id": "x"}, 400, "invalid_request"),
    ({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "y"}, 401, "invalid_client"),
])
async def test_token_errors_follow_rfc6749(client, form, status, error):
    answer = await client.post("/v1/oauth/token", data=form)
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert answer.headers["cache-control"] == "no-store"


async def test_wrong_secret_is_refused(client):
    await setup_catalog(client)
    credential = (await client.post("/v1/partners/acme/credentials", headers=ADMIN)).json()
    answer = await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": credential["client_id"], "client_secret": "wrong"})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"


async def test_admin_first_party_and_named_partner(client):
    await setup_catalog(client)
    await grant(client, "u-5", "globex", ["orders"])
    named = {"subject_id": "u-5", "purpose": "marketing", "scopes": ["orders"], "partner": "globex"}
    assert (await client.post("/v1/decisions", headers=ADMIN, json=named)).json()["decision"] == "permit"
    named["partner"] = "acme"
    assert (await client.post("/v1/decisions", headers=ADMIN, json=named)).json()["decision"] == "deny"
    unknown = {**named, "partner": "nobody"}
    assert (await client.post("/v1/decisions", headers=ADMIN, json=unknown)).json()["denied"][0]["reason"] == (
        "unknown_partner")


@pytest.mark.parametrize("body, headers, status, code", [
    (b"{not json", ADMIN, 400, "validation_failed"),
    (b'{"subject_id": 5, "purpose": "marketing", "scopes": ["orders"]}', ADMIN, 400, "validation_failed"),
    (b'{"subject_id": "u", "purpose": "marketing", "scopes": []}', ADMIN, 400, "validation_failed"),
    (b'{"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "extra": 1}', ADMIN, 400,
     "validation_failed"),
    (b'{"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "min_position": -1}', ADMIN, 400,
     "validation_failed"),
    (b'{"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}', {}, 401, "unauthorized"),
    (b'{"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}', {"Authorization": "Bearer nope"}, 401,
     "unauthorized"),
    (b'{"subject_id": "u", "purpose": "marketing", "scopes": ["orders"], "min_position": 999999}', ADMIN, 422,
     "unknown_position"),
])
async def test_bad_decision_requests_get_the_same_problem_either_way(client, body, headers, status, code):
    answer = await client.post("/v1/decisions", content=body,
                               headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code and answer.json()["status"] == status
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"


async def test_end_user_is_forbidden_either_way(client):
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}
    answer = await client.post("/v1/decisions", headers=user_headers("u"), json=question)
    assert answer.status_code == 403 and answer.json()["code"] == "forbidden"


@pytest.mark.parametrize("subject_id", ["a\u0000b", "a\u0007b", "x" * 129])
async def test_subject_ids_that_are_not_printable_or_too_long_are_422(client, subject_id):
    question = {"subject_id": subject_id, "purpose": "marketing", "scopes": ["orders"], "partner": "acme"}
    single = await client.post("/v1/decisions", headers=ADMIN, json=question)
    batch = await client.post("/v1/decisions/batch", headers=ADMIN, json={"items": [question]})
    for answer in (single, batch):
        assert answer.status_code in (400, 422), answer.text
        assert answer.json()["code"] == "validation_failed"
    if len(subject_id) <= 128:
        path = "/v1/subjects/" + urllib.parse.quote(subject_id, safe="") + "/permissions?partner=acme"
        permissions = await client.get(path, headers=ADMIN)
        assert permissions.status_code == 422 and permissions.json()["code"] == "validation_failed"


async def test_a_sandbox_partner_asks_only_about_test_subjects(client):
    await setup_catalog(client)
    await client.put("/v1/partners/labs", headers=ADMIN, json={
        "name": "labs", "status": "sandbox", "data_uses": {"marketing": ["orders"]}})
    labs, _ = await partner_headers(client, "labs")
    await grant(client, "sandbox-alice", "labs", ["orders"])
    test_subject = {"subject_id": "sandbox-alice", "purpose": "marketing", "scopes": ["orders"]}
    assert (await client.post("/v1/decisions", headers=labs, json=test_subject)).json()["decision"] == "permit"
    real = {"subject_id": "alice", "purpose": "marketing", "scopes": ["orders"]}
    for answer in (await client.post("/v1/decisions", headers=labs, json=real),
                   await client.post("/v1/decisions/batch", headers=labs, json={"items": [test_subject, real]}),
                   await client.get("/v1/subjects/alice/permissions", headers=labs)):
        assert answer.status_code == 403 and answer.json()["code"] == "sandbox_only"
    # Promoted to active, the same partner reaches real subjects.
    await client.put("/v1/partners/labs", headers=ADMIN, json={
        "name": "labs", "status": "active", "data_uses": {"marketing": ["orders"]}})
    assert (await client.post("/v1/decisions", headers=labs, json=real)).status_code == 200
