"""Catalog over HTTP (docs/api.md, "Catalog"): purposes, scopes and partners, on both backends."""

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import events
from tests.conftest import ADMIN


def purpose(**overrides):
    return {"title": "Marketing", "description": "Offers by email", "legal_basis": "consent",
            "retention": "P90D", **overrides}


def scope(**overrides):
    return {"title": "Profile", "description": "Name and email", "sensitivity": "medium", **overrides}


def partner(**overrides):
    return {"name": "Acme", "status": "active", "data_uses": {"marketing": ["profile"]}, **overrides}


async def logged(url: str) -> list[tuple[str, str]]:
    """(stream, type) of every event in the log, oldest first: the subject-independent view of writes."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(events.c.stream_id, events.c.type).order_by(events.c.position))
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


async def put_catalog(client) -> None:
    for path, body in (("/v1/purposes/marketing", purpose()), ("/v1/scopes/profile", scope()),
                       ("/v1/scopes/orders", scope(title="Orders", sensitivity="low")),
                       ("/v1/partners/acme", partner())):
        answer = await client.put(path, headers=ADMIN, json=body)
        assert answer.status_code == 201, answer.text


# Purposes


async def test_put_purpose_answers_201_then_200(client, database_url):
    created = await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose(sale_or_sharing=True))
    assert created.status_code == 201, created.text
    assert created.json() == {"id": "marketing", "title": "Marketing", "description": "Offers by email",
                              "legal_basis": "consent", "retention": "P90D", "sale_or_sharing": True,
                              "version": 1, "status": "active"}
    updated = await client.put("/v1/purposes/marketing", headers=ADMIN,
                               json=purpose(title="Marketing offers", sale_or_sharing=True))
    assert updated.status_code == 200
    assert (updated.json()["title"], updated.json()["version"]) == ("Marketing offers", 2)
    assert await logged(database_url) == [("purpose:marketing", "purpose.defined"),
                                          ("purpose:marketing", "purpose.revised")]


async def test_same_purpose_body_again_is_200_without_version_or_event(client, database_url):
    first = await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose())
    before = await logged(database_url)
    again = await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose())
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await logged(database_url) == before == [("purpose:marketing", "purpose.defined")]
    # Flagging a change material changes nothing when nothing changed.
    flagged = await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose(material_change=True))
    assert (flagged.status_code, flagged.json()["version"]) == (200, 1)
    assert await logged(database_url) == before


@pytest.mark.parametrize("change", [{"title": "Offers"}, {"description": "Offers by post"},
                                    {"retention": "P30D"}])
async def test_changed_text_or_retention_bumps_version(client, change):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose())
    revised = await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose(**change))
    assert revised.status_code == 200
    assert revised.json()["version"] == 2
    read = await client.get("/v1/purposes/marketing", headers=ADMIN)
    assert read.json() == revised.json()


async def decide(client, subject_id: str) -> dict:
    """A first-party decision, asked by an admin."""
    answer = await client.post("/v1/decisions", headers=ADMIN, json={
        "subject_id": subject_id, "purpose": "marketing", "scopes": ["profile"]})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_material_change_asks_earlier_grants_for_reconsent(client, database_url):
    await put_catalog(client)
    granted = await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})
    assert granted.json()["consents"][0]["purpose_version"] == 1
    # A revision not flagged material keeps earlier grants good.
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose(title="Offers"))
    assert (await decide(client, "u-1"))["decision"] == "permit"

    revised = await client.put("/v1/purposes/marketing", headers=ADMIN,
                               json=purpose(title="Offers", description="Offers by email and post",
                                            material_change=True))
    assert (revised.status_code, revised.json()["version"]) == (200, 3)
    assert (await client.get("/v1/purposes/marketing", headers=ADMIN)).json()["version"] == 3
    # The earlier grant still names the version the user saw, and no longer counts.
    consents = (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()["consents"]
    assert consents[0]["purpose_version"] == 1
    denied = await decide(client, "u-1")
    assert (denied["decision"], denied["denied"], denied["purpose_version"]) == (
        "deny", [{"scope": "profile", "reason": "reconsent_required"}], 3)
    await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})
    assert (await decide(client, "u-1"))["decision"] == "permit"

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            revisions = (await conn.execute(sa.select(events.c.data).where(events.c.type == "purpose.revised")
                                            .order_by(events.c.position))).scalars().all()
    finally:
        await engine.dispose()
    assert [(r["version"], r["material"]) for r in revisions] == [(2, False), (3, True)]


async def test_retire_purpose(client, database_url):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose())
    await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})
    retired = await client.post("/v1/purposes/marketing/retire", headers=ADMIN)
    assert retired.status_code == 200
    assert (retired.json()["status"], retired.json()["version"]) == ("retired", 1)
    assert (await client.get("/v1/purposes/marketing", headers=ADMIN)).json()["status"] == "retired"

    refused = await client.post("/v1/subjects/u-2/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})
    assert refused.status_code == 422
    assert refused.json()["code"] == "purpose_retired"
    # Users can still take back what they gave.
    withdrawn = await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "withdraw"}]})
    assert withdrawn.status_code == 200
    assert withdrawn.json()["consents"][0]["status"] == "withdrawn"

    before = await logged(database_url)
    assert before.count(("purpose:marketing", "purpose.retired")) == 1
    again = await client.post("/v1/purposes/marketing/retire", headers=ADMIN)
    assert (again.status_code, again.json()["status"]) == (200, "retired")
    revised = await client.put("/v1/purposes/marketing", headers=ADMIN, json=purpose(title="Back"))
    assert (revised.status_code, revised.json()["code"]) == (409, "purpose_retired")
    assert await logged(database_url) == before


async def test_unknown_purpose_is_404(client):
    for answer in (await client.get("/v1/purposes/nope", headers=ADMIN),
                   await client.post("/v1/purposes/nope/retire", headers=ADMIN)):
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"


async def test_list_purposes_sorted(client):
    for purpose_id in ("support", "analytics"):
        await client.put(f"/v1/purposes/{purpose_id}", headers=ADMIN, json=purpose(title=purpose_id))
    listed = await client.get("/v1/purposes", headers=ADMIN)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()] == ["analytics", "support"]


# Scopes


async def test_put_and_list_scopes(client, database_url):
    assert (await client.put("/v1/scopes/profile", headers=ADMIN, json=scope())).status_code == 201
    child = await client.put("/v1/scopes/profile.email", headers=ADMIN, json=scope(title="Email"))
    assert child.status_code == 201
    assert child.json() == {"id": "profile.email", "title": "Email", "description": "Name and email",
                            "sensitivity": "medium"}
    same = await client.put("/v1/scopes/profile", headers=ADMIN, json=scope())
    assert same.status_code == 200
    changed = await client.put("/v1/scopes/profile", headers=ADMIN, json=scope(sensitivity="high"))
    assert (changed.status_code, changed.json()["sensitivity"]) == (200, "high")
    assert [t for _, t in await logged(database_url)] == ["scope.defined"] * 3

    listed = await client.get("/v1/scopes", headers=ADMIN)
    assert [(s["id"], s["sensitivity"]) for s in listed.json()] == [("profile", "high"), ("profile.email", "medium")]
    assert (await client.get("/v1/scopes/profile.email", headers=ADMIN)).json()["title"] == "Email"
    missing = await client.get("/v1/scopes/nope", headers=ADMIN)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


# Partners


async def test_put_and_get_partner(client):
    await put_catalog(client)
    # A sub-scope of a defined scope is known; data uses are kept sorted and without repeats.
    updated = await client.put("/v1/partners/acme", headers=ADMIN, json=partner(
        data_uses={"marketing": ["profile.email", "orders", "orders"]}, contract_ends_at="2030-01-01T00:00:00Z"))
    assert updated.status_code == 200, updated.text
    expected = {"id": "acme", "name": "Acme", "status": "active",
                "data_uses": {"marketing": ["orders", "profile.email"]}, "contract_ends_at": "2030-01-01T00:00:00Z",
                "identifiers": "public", "rate_limit": None}
    assert updated.json() == expected
    read = await client.get("/v1/partners/acme", headers=ADMIN)
    assert (read.status_code, read.json()) == (200, expected)
    listed = await client.get("/v1/partners", headers=ADMIN)
    assert listed.json() == [expected]


@pytest.mark.parametrize(("data_uses", "code"), [
    ({"nope": ["profile"]}, "unknown_purpose"),
    ({"marketing": ["nope"]}, "unknown_scope"),
    ({"marketing": ["profile", "nope.email"]}, "unknown_scope"),
])
async def test_partner_with_unknown_data_use_is_refused(client, database_url, data_uses, code):
    await put_catalog(client)
    before = await logged(database_url)
    for partner_id in ("acme", "newco"):  # an update and a registration
        refused = await client.put(f"/v1/partners/{partner_id}", headers=ADMIN, json=partner(data_uses=data_uses))
        assert refused.status_code == 422
        assert refused.json()["code"] == code
    assert await logged(database_url) == before
    assert (await client.get("/v1/partners/newco", headers=ADMIN)).status_code == 404


async def test_partner_lifecycle(client, database_url):
    await put_catalog(client)
    suspended = await client.post("/v1/partners/acme/suspend", headers=ADMIN)
    assert (suspended.status_code, suspended.json()["status"]) == (200, "suspended")
    # An update while suspended does not lift the suspension.
    renamed = await client.put("/v1/partners/acme", headers=ADMIN, json=partner(name="Acme Ltd"))
    assert (renamed.json()["name"], renamed.json()["status"]) == ("Acme Ltd", "suspended")
    reinstated = await client.post("/v1/partners/acme/reinstate", headers=ADMIN)
    assert (reinstated.status_code, reinstated.json()["status"]) == (200, "active")
    terminated = await client.post("/v1/partners/acme/terminate", headers=ADMIN)
    assert (terminated.status_code, terminated.json()["status"]) == (200, "terminated")
    assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["status"] == "terminated"
    assert [t for s, t in await logged(database_url) if s == "partner:acme"] == [
        "partner.registered", "partner.suspended", "partner.updated", "partner.reinstated", "partner.terminated"]

    before = await logged(database_url)
    for method, path, body in (("post", "/v1/partners/acme/suspend", None),
                               ("post", "/v1/partners/acme/reinstate", None),
                               ("put", "/v1/partners/acme", partner())):
        kwargs = {"json": body} if body is not None else {}
        refused = await getattr(client, method)(path, headers=ADMIN, **kwargs)
        assert refused.status_code == 409, path
        assert refused.json()["code"] == "partner_terminated"
    again = await client.post("/v1/partners/acme/terminate", headers=ADMIN)
    assert (again.status_code, again.json()["status"]) == (200, "terminated")
    assert await logged(database_url) == before


async def test_sandbox_partner_reinstates_to_sandbox(client):
    await put_catalog(client)
    await client.put("/v1/partners/beta", headers=ADMIN, json=partner(status="sandbox"))
    await client.post("/v1/partners/beta/suspend", headers=ADMIN)
    reinstated = await client.post("/v1/partners/beta/reinstate", headers=ADMIN)
    assert reinstated.json()["status"] == "sandbox"


async def test_unknown_partner_is_404(client):
    for answer in (await client.get("/v1/partners/nope", headers=ADMIN),
                   await client.post("/v1/partners/nope/suspend", headers=ADMIN),
                   await client.post("/v1/partners/nope/reinstate", headers=ADMIN),
                   await client.post("/v1/partners/nope/terminate", headers=ADMIN)):
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
