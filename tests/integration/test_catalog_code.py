"""Catalog as code over HTTP, on both databases: plan, apply, idempotence, atomicity, 409, impact, unmanaged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema_rs
import msgspec
import yaml

from consent.api.openapi_export import catalog_schema
from tests.conftest import ADMIN, user_headers

MARKETING = {"title": "Marketing", "description": "Offers by email", "legal_basis": "consent", "retention": "P30D"}
DOCUMENT = {
    "scopes": {"profile": {"title": "Profile", "description": "", "sensitivity": "low"},
               "orders": {"title": "Orders", "description": "", "sensitivity": "medium"}},
    "purposes": {"marketing": MARKETING},
    "partners": {"acme": {"name": "Acme", "status": "active", "data_uses": {"marketing": ["profile", "orders"]}},
                 "globex": {"name": "Globex", "status": "active", "data_uses": {"marketing": ["profile"]}}},
}


def with_changes(**purpose_fields) -> dict:
    document = msgspec.json.decode(msgspec.json.encode(DOCUMENT))
    document["purposes"]["marketing"].update(purpose_fields)
    return document


async def head(client) -> int:
    return (await client.post("/v1/catalog/plan", headers=ADMIN, json={})).json()["catalog_position"]


async def test_a_plan_writes_nothing_and_an_apply_writes_it_all_once(client):
    planned = await client.post("/v1/catalog/plan", headers=ADMIN, json=DOCUMENT)
    assert planned.status_code == 200, planned.text
    body = planned.json()
    assert body["catalog_position"] == 0 and body["unmanaged"] == []
    assert [(c["kind"], c["id"], c["action"]) for c in body["changes"]] == [
        ("scope", "orders", "create"), ("scope", "profile", "create"), ("purpose", "marketing", "create"),
        ("partner", "acme", "create"), ("partner", "globex", "create")]
    assert body["changes"][2]["fields"]["retention"] == [None, "P30D"]
    assert (await client.get("/v1/purposes", headers=ADMIN)).json() == []
    applied = await client.post("/v1/catalog/apply", headers=ADMIN, json=DOCUMENT)
    assert applied.status_code == 200, applied.text
    assert applied.json()["position"] > 0 and applied.json()["changes"] == body["changes"]
    assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["data_uses"] == {
        "marketing": ["orders", "profile"]}
    position = await head(client)
    assert position == applied.json()["position"]
    again = await client.post("/v1/catalog/apply", headers=ADMIN, json=DOCUMENT)
    assert {c["action"] for c in again.json()["changes"]} == {"unchanged"}
    assert again.json()["position"] == position == await head(client)  # no event


async def test_yaml_is_the_same_document(client):
    answer = await client.post("/v1/catalog/apply", headers={**ADMIN, "Content-Type": "application/yaml"},
                               content=yaml.safe_dump(DOCUMENT).encode())
    assert answer.status_code == 200, answer.text
    replayed = await client.post("/v1/catalog/plan", headers=ADMIN, json=DOCUMENT)
    assert {c["action"] for c in replayed.json()["changes"]} == {"unchanged"}
    broken = await client.post("/v1/catalog/plan", headers={**ADMIN, "Content-Type": "application/yaml"},
                               content=b"purposes: [unclosed")
    assert broken.status_code == 400 and broken.json()["code"] == "validation_failed"


async def test_a_document_refused_anywhere_writes_nothing(client):
    bad = msgspec.json.decode(msgspec.json.encode(DOCUMENT))
    bad["partners"]["globex"]["data_uses"] = {"no-such-purpose": ["profile"]}
    refused = await client.post("/v1/catalog/apply", headers=ADMIN, json=bad)
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_purpose"
    assert (await client.get("/v1/scopes", headers=ADMIN)).json() == []
    assert await head(client) == 0
    unknown_field = await client.post("/v1/catalog/plan", headers=ADMIN, json={"purposes": {}, "extra": {}})
    assert unknown_field.status_code == 400


async def test_an_apply_after_the_catalog_moved_is_refused(client):
    await client.post("/v1/catalog/apply", headers=ADMIN, json=DOCUMENT)
    plan = (await client.post("/v1/catalog/plan", headers=ADMIN, json=with_changes(title="Offers"))).json()
    await client.put("/v1/scopes/extra", headers=ADMIN, json={"title": "X", "description": "", "sensitivity": "low"})
    stale = await client.post(f"/v1/catalog/apply?expected_catalog_position={plan['catalog_position']}",
                              headers=ADMIN, json=with_changes(title="Offers"))
    assert stale.status_code == 409 and stale.json()["code"] == "catalog_changed"
    assert (await client.get("/v1/purposes/marketing", headers=ADMIN)).json()["title"] == "Marketing"
    fresh = await client.post(f"/v1/catalog/apply?expected_catalog_position={await head(client)}", headers=ADMIN,
                              json=with_changes(title="Offers"))
    assert fresh.status_code == 200 and fresh.json()["unmanaged"] == [{"kind": "scope", "id": "extra"}]


async def grant(client, subject_id: str, partner: str | None, expires_at: str | None = None,
                scopes: list[str] | None = None) -> None:
    answer = await client.post(f"/v1/subjects/{subject_id}/consents", headers=ADMIN, json={"changes": [{
        "purpose": "marketing", "partner": partner, "scopes": scopes, "action": "grant", "expires_at": expires_at}]})
    assert answer.status_code == 200, answer.text


async def test_a_material_revision_counts_who_will_be_asked_again(client):
    await client.post("/v1/catalog/apply", headers=ADMIN, json=DOCUMENT)
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await grant(client, "ann", None)
    await grant(client, "ann", "acme")  # the same subject twice: counted once in all
    await grant(client, "bob", "acme")
    await grant(client, "cy", "globex", expires_at=soon)
    await grant(client, "dee", None)
    await client.post("/v1/subjects/dee/consents", headers=ADMIN,
                      json={"changes": [{"purpose": "marketing", "action": "withdraw"}]})  # not counted
    material = await client.post("/v1/catalog/plan", headers=ADMIN,
                                 json=with_changes(description="Offers by email and post", material_change=True))
    (change,) = [c for c in material.json()["changes"] if c["kind"] == "purpose"]
    assert change["action"] == "update" and change["material"] is True
    assert change["fields"]["version"] == [1, 2]
    assert change["impact"] == {"subjects": 3, "by_partner": {"acme": 2, "globex": 1}}
    minor = await client.post("/v1/catalog/plan", headers=ADMIN, json=with_changes(description="Offers, by email"))
    (change,) = [c for c in minor.json()["changes"] if c["kind"] == "purpose"]
    assert change["material"] is False and change["impact"] is None
    applied = await client.post("/v1/catalog/apply", headers=ADMIN,
                                json=with_changes(description="Offers by email and post", material_change=True))
    assert [c["impact"] for c in applied.json()["changes"] if c["kind"] == "purpose"] == [
        {"subjects": 3, "by_partner": {"acme": 2, "globex": 1}}]
    # Now asked again: nobody holds a grant to an older version of the text just shown.
    after = await client.post("/v1/catalog/plan", headers=ADMIN,
                              json=with_changes(description="Offers by email and post"))
    assert {c["action"] for c in after.json()["changes"]} == {"unchanged"}


async def test_narrower_data_uses_count_the_grants_they_stop_covering(client):
    await client.post("/v1/catalog/apply", headers=ADMIN, json=DOCUMENT)
    await grant(client, "ann", "acme")  # profile and orders
    await grant(client, "bob", "acme", scopes=["profile"])  # still covered
    narrower = msgspec.json.decode(msgspec.json.encode(DOCUMENT))
    narrower["partners"]["acme"]["data_uses"] = {"marketing": ["profile"]}
    planned = await client.post("/v1/catalog/plan", headers=ADMIN, json=narrower)
    (change,) = [c for c in planned.json()["changes"] if c["id"] == "acme"]
    assert change["fields"]["data_uses"] == [{"marketing": ["orders", "profile"]}, {"marketing": ["profile"]}]
    assert change["impact"] == {"subjects": 1, "by_partner": {"acme": 1}}


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"
SCHEMA = Path(__file__).resolve().parents[2] / "openapi" / "catalog.schema.json"


def test_the_committed_json_schema_is_the_servers():
    assert json.loads(SCHEMA.read_text()) == catalog_schema(), "run `make openapi` and commit the schema"


async def test_the_schema_and_the_server_agree_on_the_example_and_on_a_broken_document(client):
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    example = yaml.safe_load(EXAMPLE.read_text())
    assert validator.is_valid(json.loads(json.dumps(example, default=str)))
    applied = await client.post("/v1/catalog/apply", headers={**ADMIN, "Content-Type": "application/yaml"},
                                content=EXAMPLE.read_bytes())
    assert applied.status_code == 200, applied.text
    broken = {"purposes": {"x": {"title": "X", "description": "", "legal_basis": "whim", "retention": "P1D"}}}
    assert not validator.is_valid(broken)
    assert (await client.post("/v1/catalog/plan", headers=ADMIN, json=broken)).status_code == 400


async def test_the_export_is_a_document_an_apply_leaves_unchanged(client):
    await client.post("/v1/catalog/apply", headers={**ADMIN, "Content-Type": "application/yaml"},
                      content=EXAMPLE.read_bytes())
    await client.post("/v1/partners/acme/suspend", headers=ADMIN)
    exported = await client.get("/v1/catalog", headers=ADMIN)
    assert exported.json()["partners"]["acme"]["status"] == "active"  # what a PUT sets; suspension is apart
    replanned = await client.post("/v1/catalog/plan", headers=ADMIN, json=exported.json())
    assert {c["action"] for c in replanned.json()["changes"]} == {"unchanged"}
    assert (await client.get("/v1/catalog", headers=user_headers("u-1"))).status_code == 403


async def test_yaml_aliases_are_refused(client):
    laughs = b"a: &a [x, x]\nb: &b [*a, *a]\npurposes: {}\n"
    answer = await client.post("/v1/catalog/plan", headers={**ADMIN, "Content-Type": "application/yaml"},
                               content=laughs)
    assert answer.status_code == 400 and "not accepted" in answer.json()["detail"]
