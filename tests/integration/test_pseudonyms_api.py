"""Pairwise partners over HTTP, on both backends: they know subjects only by pseudonyms of their own."""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from consent.adapters.tables import pseudonyms
from consent.api.app import create_app
from consent.domain.pseudonyms import pseudonym
from tests.conftest import ADMIN, user_headers
from tests.integration.test_decision_queries import counted_queries
from tests.integration.test_decisions_api import grant, partner_headers, setup_catalog

KEY = "test-pseudonym-key-0123456789abcdef"
REAL = "user-real-7c1e"  # the subject id a pairwise partner must never see


@pytest.fixture(params=[True, False], ids=["fast", "litestar"])
def settings(settings, request):
    return msgspec.structs.replace(settings, pseudonym_key=KEY, fast_decisions=request.param)


async def make_pairwise(client, partner_id: str = "acme", status: str = "active") -> dict:
    answer = await client.put(f"/v1/partners/{partner_id}", headers=ADMIN, json={
        "name": partner_id, "status": status, "data_uses": {"marketing": ["profile", "orders"]},
        "identifiers": "pairwise"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def issued(client, subject_id: str, partner_id: str, headers=ADMIN) -> str:
    answer = await client.get(f"/v1/subjects/{subject_id}/pseudonyms/{partner_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["subject_id"] == subject_id and answer.json()["partner_id"] == partner_id
    return answer.json()["pseudonym"]


def question(subject_id: str, scopes=("orders",)) -> dict:
    return {"subject_id": subject_id, "purpose": "marketing", "scopes": list(scopes)}


async def test_an_admin_sets_a_partner_pairwise_and_an_update_keeps_it(client):
    await setup_catalog(client)
    assert (await client.get("/v1/partners/globex", headers=ADMIN)).json()["identifiers"] == "public"
    assert (await make_pairwise(client))["identifiers"] == "pairwise"
    renamed = await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme Two", "status": "active", "data_uses": {"marketing": ["profile", "orders"]}})
    assert renamed.status_code == 200 and renamed.json()["identifiers"] == "pairwise"
    assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["identifiers"] == "pairwise"
    bad = await client.put("/v1/partners/acme", headers=ADMIN, json={"name": "A", "identifiers": "secret"})
    assert bad.status_code == 400


async def test_without_the_key_no_partner_becomes_pairwise_and_no_pseudonym_is_issued(settings):
    async with AsyncTestClient(create_app(msgspec.structs.replace(settings, pseudonym_key=None,
                                                                      allow_ephemeral_keys=True))) as client:
        await setup_catalog(client)
        refused = await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "acme", "status": "active", "identifiers": "pairwise"})
        assert refused.status_code == 422 and refused.json()["code"] == "pseudonym_key_missing"
        assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["identifiers"] == "public"
        answer = await client.get("/v1/subjects/u-1/pseudonyms/acme", headers=ADMIN)
        assert answer.status_code == 422 and answer.json()["code"] == "pseudonym_key_missing"


async def test_the_subject_and_admins_get_the_pseudonym_others_do_not(client):
    await setup_catalog(client)
    await make_pairwise(client)
    acme, _ = await partner_headers(client, "acme")
    own = await issued(client, REAL, "acme", user_headers(REAL))
    assert own == await issued(client, REAL, "acme") == pseudonym(KEY.encode(), "acme", REAL)
    assert own != await issued(client, REAL, "globex")
    for headers in (user_headers("someone-else"), acme):
        answer = await client.get(f"/v1/subjects/{REAL}/pseudonyms/acme", headers=headers)
        assert answer.status_code == 403 and REAL not in answer.text
    assert (await client.get(f"/v1/subjects/{REAL}/pseudonyms/nobody", headers=ADMIN)).status_code == 404
    assert (await client.get(f"/v1/subjects/{REAL}/pseudonyms/Bad!", headers=ADMIN)).status_code == 422


async def test_a_pairwise_partner_asks_by_pseudonym_and_learns_nothing_else(client):
    await setup_catalog(client)
    await make_pairwise(client)
    await make_pairwise(client, "globex")
    acme, _ = await partner_headers(client, "acme")
    granted = await client.post(f"/v1/subjects/{REAL}/consents", headers=user_headers(REAL), json={
        "changes": [{"purpose": "marketing", "partner": "acme", "scopes": ["orders"], "action": "grant"}]})
    assert granted.status_code == 200, granted.text
    mine, globex_one = await issued(client, REAL, "acme"), await issued(client, REAL, "globex")
    answers = []

    permitted = await client.post("/v1/decisions", headers=acme, json=question(mine, ["orders", "profile"]))
    answers.append(permitted)
    assert permitted.json()["decision"] == "partial" and permitted.json()["permitted"] == ["orders"]
    for stranger in (REAL, globex_one, "pw_" + "A" * 43):
        denied = await client.post("/v1/decisions", headers=acme, json=question(stranger))
        answers.append(denied)
        assert denied.status_code == 200, denied.text
        assert denied.json()["denied"] == [{"scope": "orders", "reason": "no_consent"}]

    batch = await client.post("/v1/decisions/batch", headers=acme, json={
        "items": [question(mine), question(REAL), question(globex_one), question(mine)]})
    answers.append(batch)
    assert [r["decision"] for r in batch.json()["results"]] == ["permit", "deny", "deny", "permit"]

    permissions = await client.get(f"/v1/subjects/{mine}/permissions", headers=acme)
    answers.append(permissions)
    assert [(p["purpose"], p["scopes"]) for p in permissions.json()["permissions"]] == [("marketing", ["orders"])]
    by_real_id = await client.get(f"/v1/subjects/{REAL}/permissions", headers=acme)
    answers.append(by_real_id)
    assert by_real_id.status_code == 200 and by_real_id.json()["permissions"] == []
    assert all(REAL not in answer.text for answer in answers)

    # Admins know the subject: naming the pairwise partner, they ask by the real id.
    admin = await client.post("/v1/decisions", headers=ADMIN, json={**question(REAL), "partner": "acme"})
    assert admin.json()["decision"] == "permit"


async def test_a_grant_records_the_mapping_so_the_partner_can_ask_at_once(client, database_url):
    await setup_catalog(client)
    await make_pairwise(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, REAL, "acme")
    await grant(client, "first-party-only", None)
    # The pseudonym was never asked for: the write itself recorded it, and only for the pairwise partner.
    engine = sa.ext.asyncio.create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(pseudonyms))).all()
    finally:
        await engine.dispose()
    expected = pseudonym(KEY.encode(), "acme", REAL)
    assert [(r.partner_id, r.pseudonym, r.subject_id) for r in rows] == [("acme", expected, REAL)]
    client.app.state.container.subjects.clear()
    answer = await client.post("/v1/decisions", headers=acme, json=question(expected))
    assert answer.json()["decision"] == "permit"


async def mappings(database_url: str) -> list[tuple[str, str, str]]:
    engine = sa.ext.asyncio.create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(
                sa.select(pseudonyms.c.partner_id, pseudonyms.c.pseudonym, pseudonyms.c.subject_id))).all()]
    finally:
        await engine.dispose()


async def test_after_an_erasure_the_pseudonym_issued_again_is_recorded_again(client, database_url):
    await setup_catalog(client)
    await make_pairwise(client)
    first = await issued(client, REAL, "acme")
    assert await mappings(database_url) == [("acme", first, REAL)]
    assert (await client.post(f"/v1/subjects/{REAL}/erase", headers=ADMIN)).status_code == 200
    assert await mappings(database_url) == []
    # This process knew the mapping before the erasure; it must not skip recording it again, or the
    # partner's questions would find nobody behind the pseudonym on every other process.
    assert await issued(client, REAL, "acme", headers=user_headers(REAL)) == first
    assert await mappings(database_url) == [("acme", first, REAL)]
    assert client.app.state.container.subjects.subject_of("acme", first) == REAL


async def test_an_uncached_pseudonym_costs_one_query_and_a_cached_one_none(client):
    await setup_catalog(client)
    await make_pairwise(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, REAL, "acme", ["orders"])
    client.app.state.container.subjects.clear()  # as in a fresh process: neither mapping nor state in memory
    mine = pseudonym(KEY.encode(), "acme", REAL)

    with counted_queries(client) as first:
        assert (await client.post("/v1/decisions", headers=acme, json=question(mine))).json()["decision"] == "permit"
    assert len(first) == 1, first
    with counted_queries(client) as second:
        assert (await client.post("/v1/decisions", headers=acme, json=question(mine))).json()["decision"] == "permit"
    assert second == []


async def test_a_sandbox_pairwise_partner_gets_answers_for_test_subjects_only(client):
    await setup_catalog(client)
    await make_pairwise(client, status="sandbox")
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "sandbox-1", "acme")
    test_subject = await issued(client, "sandbox-1", "acme")
    real_person = await issued(client, REAL, "acme")
    answer = await client.post("/v1/decisions", headers=acme, json=question(test_subject))
    assert answer.json()["decision"] == "permit"
    for refused in (real_person, "pw_" + "B" * 43):
        answer = await client.post("/v1/decisions", headers=acme, json=question(refused))
        assert answer.status_code == 403 and answer.json()["code"] == "sandbox_only"
