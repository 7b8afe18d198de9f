"""openapi/openapi.json is the contract partners read; it must be exactly what the server serves."""

from pathlib import Path

from consent.api.openapi_export import render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


async def test_committed_openapi_matches_served(client):
    served = await client.get("/schema/openapi.json")
    assert served.status_code == 200
    assert render(served.json()) == COMMITTED.read_text(), (
        "openapi/openapi.json is stale: run `make openapi` and commit it")


async def test_contract_paths_are_served(client):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    for path in ("/v1/purposes/{purpose_id}", "/v1/scopes/{scope_id}", "/v1/partners/{partner_id}",
                 "/v1/subjects/{subject_id}/consents", "/v1/subjects/{subject_id}/history",
                 "/health/live", "/health/ready"):
        assert path in paths
