"""Partner governance: token scopes, RFC 7009 revocation, credential rotation, the audit trail."""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import events
from consent.api.app import create_app
from consent.api.auth import key_id
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, user_headers
from tests.integration.test_decisions_api import grant, setup_catalog

QUESTION = {"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"]}


@pytest.fixture
async def governed(settings: Settings, clock) -> AsyncTestClient:
    async with AsyncTestClient(create_app(msgspec.structs.replace(settings, credential_overlap=600), clock)) as c:
        yield c


async def credential(client, partner: str = "acme", scopes: list[str] | None = None) -> dict:
    answer = await client.post(f"/v1/partners/{partner}/credentials", headers=ADMIN,
                               json={"scopes": scopes} if scopes is not None else None)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def token(client, issued: dict, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", "client_id": issued["client_id"],
            "client_secret": issued["client_secret"], **({"scope": scope} if scope is not None else {})}
    answer = await client.post("/v1/oauth/token", data=form)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def reach(client, access_token: str) -> dict[str, int]:
    """The status of one request per partner scope."""
    headers = bearer(access_token)
    return {
        "decisions:read": (await client.post("/v1/decisions", headers=headers, json=QUESTION)).status_code,
        "permissions:read": (await client.get("/v1/subjects/u-1/permissions", headers=headers)).status_code,
        "catalog:read": (await client.get("/v1/purposes", headers=headers)).status_code,
    }


async def test_a_token_reaches_only_the_routes_of_its_scopes(governed):
    await setup_catalog(governed)
    full = await credential(governed)
    assert full["scopes"] == ["decisions:read", "permissions:read", "catalog:read"]
    assert await reach(governed, await token(governed, full)) == {
        "decisions:read": 200, "permissions:read": 200, "catalog:read": 200}

    limited = await credential(governed, scopes=["decisions:read"])
    access_token = await token(governed, limited)
    assert await reach(governed, access_token) == {"decisions:read": 200, "permissions:read": 403, "catalog:read": 403}
    refused = await governed.get("/v1/subjects/u-1/permissions", headers=bearer(access_token))
    assert refused.json()["code"] == "insufficient_scope"
    assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="permissions:read"'
    batch = await governed.post("/v1/decisions/batch", headers=bearer(access_token), json={"items": [QUESTION]})
    assert batch.status_code == 200

    # A client may ask for less than its credential allows, never more.
    narrowed = await token(governed, full, scope="catalog:read")
    assert await reach(governed, narrowed) == {"decisions:read": 403, "permissions:read": 403, "catalog:read": 200}
    widened = await governed.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": limited["client_id"],
        "client_secret": limited["client_secret"], "scope": "decisions:read permissions:read"})
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("scopes", [[], ["decisions:write"], ["admin"]])
async def test_a_credential_takes_only_known_scopes(governed, scopes):
    await setup_catalog(governed)
    answer = await governed.post("/v1/partners/acme/credentials", headers=ADMIN, json={"scopes": scopes})
    assert answer.status_code in (400, 422) and answer.json()["code"] == "validation_failed"


async def test_a_partner_revokes_its_own_token_rfc7009(governed):
    await setup_catalog(governed)
    issued = await credential(governed)
    kept, revoked = await token(governed, issued), await token(governed, issued)
    form = {"client_id": issued["client_id"], "client_secret": issued["client_secret"], "token": revoked}
    answer = await governed.post("/v1/oauth/revoke", data=form)
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert (await governed.post("/v1/decisions", headers=bearer(revoked), json=QUESTION)).status_code == 401
    assert (await governed.get("/v1/purposes", headers=bearer(revoked))).status_code == 401
    assert (await governed.post("/v1/decisions", headers=bearer(kept), json=QUESTION)).status_code == 200
    # Again, or a token that is no token: nothing to do, and not an error (RFC 7009 §2.2).
    assert (await governed.post("/v1/oauth/revoke", data=form)).status_code == 200
    assert (await governed.post("/v1/oauth/revoke", data={**form, "token": "not-a-token"})).status_code == 200


async def test_revocation_needs_the_client_the_token_was_issued_to(governed):
    await setup_catalog(governed)
    acme, globex = await credential(governed, "acme"), await credential(governed, "globex")
    acme_token = await token(governed, acme)
    foreign = await governed.post("/v1/oauth/revoke", data={
        "client_id": globex["client_id"], "client_secret": globex["client_secret"], "token": acme_token})
    assert foreign.status_code == 400 and foreign.json()["error"] == "unauthorized_client"
    wrong_secret = await governed.post("/v1/oauth/revoke", data={
        "client_id": acme["client_id"], "client_secret": "wrong", "token": acme_token})
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    missing = await governed.post("/v1/oauth/revoke", data={"client_id": acme["client_id"],
                                                            "client_secret": acme["client_secret"]})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert (await governed.post("/v1/decisions", headers=bearer(acme_token), json=QUESTION)).status_code == 200


async def test_a_revoked_token_stays_revoked_after_a_restart(settings, clock):
    async with AsyncTestClient(create_app(settings, clock)) as first:
        await setup_catalog(first)
        issued = await credential(first)
        revoked = await token(first, issued)
        await first.post("/v1/oauth/revoke", data={"client_id": issued["client_id"],
                                                   "client_secret": issued["client_secret"], "token": revoked})
    # Partner tokens outlive a restart only when the signing key is shared.
    shared = msgspec.structs.replace(settings, token_signing_key="shared-signing-key-0123456789abcdef")
    async with AsyncTestClient(create_app(shared, clock)) as second:
        revoked = await token(second, issued)
        await second.post("/v1/oauth/revoke", data={"client_id": issued["client_id"],
                                                    "client_secret": issued["client_secret"], "token": revoked})
        kept = await token(second, issued)
    async with AsyncTestClient(create_app(shared, clock)) as third:
        assert (await third.post("/v1/decisions", headers=bearer(revoked), json=QUESTION)).status_code == 401
        assert (await third.post("/v1/decisions", headers=bearer(kept), json=QUESTION)).status_code == 200


async def test_rotation_keeps_the_old_credential_for_the_overlap_then_not(governed, clock):
    await setup_catalog(governed)
    old = await credential(governed, scopes=["decisions:read"])
    old_token = await token(governed, old)
    rotated = await governed.post(f"/v1/partners/acme/credentials/{old['client_id']}/rotate", headers=ADMIN)
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["client_id"] != old["client_id"] and new["replaces"] == old["client_id"]
    assert new["scopes"] == ["decisions:read"]
    new_token = await token(governed, new)

    clock.advance(seconds=599)  # within the overlap both work, and the old one still gets tokens
    assert (await governed.post("/v1/decisions", headers=bearer(old_token), json=QUESTION)).status_code == 200
    late_token = await token(governed, old)
    assert (await governed.post("/v1/decisions", headers=bearer(new_token), json=QUESTION)).status_code == 200

    clock.advance(seconds=2)  # past it, only the new one
    for stale in (old_token, late_token):
        assert (await governed.post("/v1/decisions", headers=bearer(stale), json=QUESTION)).status_code == 401
    refused = await governed.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": old["client_id"], "client_secret": old["client_secret"]})
    assert refused.status_code == 401
    assert (await governed.post("/v1/decisions", headers=bearer(new_token), json=QUESTION)).status_code == 200
    again = await governed.post(f"/v1/partners/acme/credentials/{old['client_id']}/rotate", headers=ADMIN)
    assert again.status_code == 404


async def test_rotation_of_another_partners_credential_is_not_found(governed):
    await setup_catalog(governed)
    acme = await credential(governed, "acme")
    answer = await governed.post(f"/v1/partners/globex/credentials/{acme['client_id']}/rotate", headers=ADMIN)
    assert answer.status_code == 404
    assert (await governed.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", **{k: acme[k] for k in ("client_id", "client_secret")}})).status_code == 200


async def test_the_audit_trail_names_who_did_what(governed, database_url):
    await setup_catalog(governed)
    issued = await credential(governed)
    access_token = await token(governed, issued)
    await governed.post("/v1/oauth/revoke", data={"client_id": issued["client_id"],
                                                  "client_secret": issued["client_secret"], "token": access_token})
    await governed.delete(f"/v1/partners/acme/credentials/{issued['client_id']}", headers=ADMIN)
    await grant(governed, "u-admin", "acme")  # an admin changing a subject's consents
    user_change = await governed.post("/v1/subjects/u-self/consents", headers=user_headers("u-self"), json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})
    assert user_change.status_code == 200
    assert (await governed.get("/v1/subjects/u-self/history", headers=user_headers("u-self"))).status_code == 200
    assert (await governed.get("/v1/subjects/u-self/history", headers=ADMIN)).status_code == 200

    answer = await governed.get("/v1/audit", headers=ADMIN)
    assert answer.status_code == 200
    trail = answer.json()["events"]
    admin = f"admin:{key_id(ADMIN_KEY)}"
    assert [(e["type"], e["actor"]) for e in trail] == [
        ("scope.defined", admin), ("scope.defined", admin), ("purpose.defined", admin),
        ("partner.registered", admin), ("partner.registered", admin),
        ("credential.issued", admin), ("token.revoked", "partner:acme"), ("credential.revoked", admin),
        ("subject.granted", admin), ("audit.subject_history_read", admin)]
    assert trail[-1]["data"]["subject_id"] == "u-self" and trail[-1]["stream_id"] == f"audit:{key_id(ADMIN_KEY)}"
    assert trail[5]["data"]["client_id"] == issued["client_id"]
    positions = [e["position"] for e in trail]
    assert positions == sorted(positions)
    text = answer.text
    assert ADMIN_KEY not in text and issued["client_secret"] not in text and access_token not in text

    page = (await governed.get("/v1/audit", headers=ADMIN, params={"limit": 4})).json()
    assert [e["position"] for e in page["events"]] == positions[:4] and page["next_after"] == positions[3]
    rest = (await governed.get("/v1/audit", headers=ADMIN, params={"after": page["next_after"]})).json()
    assert [e["position"] for e in rest["events"]] == positions[4:] and rest["next_after"] is None

    # The log holds the same, and nothing of the secret or the token.
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            logged = (await conn.execute(sa.select(events.c.data, events.c.metadata))).all()
    finally:
        await engine.dispose()
    assert not any(issued["client_secret"] in str(row) or access_token in str(row) for row in logged)


async def test_audit_refuses_everyone_but_admins(governed):
    await setup_catalog(governed)
    access_token = await token(governed, await credential(governed))
    assert (await governed.get("/v1/audit", headers=bearer(access_token))).status_code == 403
    assert (await governed.get("/v1/audit", headers=user_headers("u-1"))).status_code == 403
    assert (await governed.get("/v1/audit")).status_code == 401
    bad = await governed.get("/v1/audit", headers=ADMIN, params={"limit": 1001})
    assert bad.status_code == 400


async def test_the_openapi_scopes_are_the_ones_enforced(governed):
    """Every route the document marks with a partner scope refuses tokens without it, and only those routes."""
    await setup_catalog(governed)
    document = (await governed.get("/schema/openapi.json")).json()
    assert set(document["components"]["securitySchemes"]["partner"]["flows"]["clientCredentials"]["scopes"]) == {
        "decisions:read", "permissions:read", "catalog:read"}
    tokens = {scope: await token(governed, await credential(governed, scopes=[scope]))
              for scope in ("decisions:read", "permissions:read", "catalog:read")}
    bodies = {"/v1/decisions": QUESTION, "/v1/decisions/batch": {"items": [QUESTION]}}
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            needed = [s["partner"] for s in operation.get("security", []) if "partner" in s]
            if not needed:
                continue
            concrete = path.replace("{subject_id}", "u-1").replace("{purpose_id}", "marketing") \
                .replace("{scope_id}", "orders").replace("{partner_id}", "acme")
            for scope, access_token in tokens.items():
                answer = await governed.request(method.upper(), concrete, headers=bearer(access_token),
                                                json=bodies.get(path) if method == "post" else None)
                lacking = answer.status_code == 403 and answer.json().get("code") == "insufficient_scope"
                assert lacking == (scope not in needed[0]), f"{method} {path} with {scope}: {answer.status_code}"
            checked += 1
    assert checked == 9  # decisions, batch, permissions, five catalog reads and the partner's health


async def test_secrets_are_compared_in_constant_time(governed, monkeypatch):
    """Admin keys through hmac.compare_digest, client secrets through argon2's verify (constant time by design)."""
    import hmac

    import consent.api.auth as auth
    import consent.app.partner_access as partner_access

    compared, verified = [], []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: compared.append(1) or real_compare(a, b))
    real_verify = partner_access._verify  # argon2's PasswordHasher.verify, for a known or a dummy hash
    monkeypatch.setattr(partner_access, "_verify", lambda h, s: verified.append(1) or real_verify(h, s))
    await setup_catalog(governed)
    assert compared, "the admin key was not compared with hmac.compare_digest"
    issued = await credential(governed)
    await token(governed, issued)
    wrong = await governed.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "cl_unknown", "client_secret": "guess"})
    assert wrong.status_code == 401
    # Known and unknown clients alike go through one argon2 verification: no timing tells them apart.
    assert len(verified) == 2


async def test_an_admin_reading_a_receipt_or_export_is_audited_and_the_subject_is_not(governed):
    await setup_catalog(governed)
    change = await governed.post("/v1/subjects/u-7/consents", headers=user_headers("u-7"), json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})
    event_id = change.json()["receipts"][0]["event_id"]
    for headers in (user_headers("u-7"), ADMIN):
        assert (await governed.get(f"/v1/subjects/u-7/receipts/{event_id}", headers=headers)).status_code == 200
        assert (await governed.get("/v1/subjects/u-7/export", headers=headers)).status_code == 200
    reads = [e for e in (await governed.get("/v1/audit", headers=ADMIN)).json()["events"]
             if e["type"] == "audit.subject_history_read"]
    assert [(e["data"]["subject_id"], e["actor"]) for e in reads] == [("u-7", f"admin:{key_id(ADMIN_KEY)}")] * 2
