from tests.conftest import ADMIN


async def test_grant_then_read_back(client):
    await client.put("/v1/purposes/marketing", headers=ADMIN, json={
        "title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P90D"})
    answer = await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "action": "grant"}], "source": "web"})
    assert answer.status_code == 200, answer.text
    read = await client.get("/v1/subjects/u-1/consents", headers=ADMIN)
    assert read.json()["consents"][0]["status"] == "granted"
    assert read.json()["position"] == answer.json()["position"] == 2
