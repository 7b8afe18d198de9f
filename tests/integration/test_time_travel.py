"""Answers as of a past moment, on both databases: a subject's consents, a purpose, a partner, decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN, FakeClock, user_headers
from tests.integration.test_decisions_api import partner_headers

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MARKETING = {"title": "Marketing", "description": "Offers by email", "legal_basis": "consent", "retention": "P30D"}


def moment(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def history(settings):
    """Scope and purpose at T0; a grant to acme at T0+1h; the purpose revised materially at +2h; acme's data
    uses widened at +3h; the grant withdrawn at +4h. The client, with the clock at +5h."""
    clock = FakeClock(T0)
    async with AsyncTestClient(create_app(settings, clock=clock)) as client:
        for scope in ("profile", "orders"):
            await client.put(f"/v1/scopes/{scope}", headers=ADMIN,
                             json={"title": scope, "description": "", "sensitivity": "low"})
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
        await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile"]}})
        clock.advance(hours=1)
        granted = await client.post("/v1/subjects/ann/consents", headers=ADMIN, json={
            "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}]})
        assert granted.status_code == 200, granted.text
        clock.advance(hours=1)
        await client.put("/v1/purposes/marketing", headers=ADMIN,
                         json={**MARKETING, "description": "Offers by email and post", "material_change": True})
        clock.advance(hours=1)
        await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile", "orders"]}})
        clock.advance(hours=1)
        await client.post("/v1/subjects/ann/consents", headers=ADMIN, json={
            "changes": [{"purpose": "marketing", "partner": "acme", "action": "withdraw"}]})
        clock.advance(hours=1)
        yield client


async def consents_at(client, hours: float, headers=ADMIN) -> dict:
    answer = await client.get(f"/v1/subjects/ann/consents?at={moment(hours)}", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_subjects_consents_as_they_stood(history):
    assert (await consents_at(history, 0.5))["consents"] == [] and (await consents_at(history, 0.5))["version"] == 0
    then = await consents_at(history, 1.5)
    assert then["at"] == moment(1.5)
    assert [(c["status"], c["purpose_version"], c["purpose_version_in_force"]) for c in then["consents"]] == [
        ("granted", 1, 1)]
    assert [(c["status"], c["purpose_version_in_force"]) for c in (await consents_at(history, 2.5))["consents"]] == [
        ("granted", 2)]
    later = await consents_at(history, 4.5)
    assert [c["status"] for c in later["consents"]] == ["withdrawn"] and later["version"] == 2
    now = (await history.get("/v1/subjects/ann/consents", headers=ADMIN)).json()
    assert [c["status"] for c in now["consents"]] == ["withdrawn"] and "at" not in now
    assert (await consents_at(history, 1.5, headers=user_headers("ann")))["version"] == 1  # the subject itself
    assert (await history.get(f"/v1/subjects/ann/consents?at={moment(1.5)}",
                              headers=user_headers("bob"))).status_code == 403


async def test_a_purpose_and_a_partner_as_they_were(history):
    first = (await history.get(f"/v1/purposes/marketing?at={moment(1.5)}", headers=ADMIN)).json()
    revised = (await history.get(f"/v1/purposes/marketing?at={moment(2.5)}", headers=ADMIN)).json()
    assert (first["version"], first["description"]) == (1, "Offers by email")
    assert (revised["version"], revised["description"]) == (2, "Offers by email and post")
    assert (await history.get(f"/v1/purposes/marketing?at={moment(-1)}", headers=ADMIN)).status_code == 404
    narrow = (await history.get(f"/v1/partners/acme?at={moment(2.5)}", headers=ADMIN)).json()
    wide = (await history.get(f"/v1/partners/acme?at={moment(3.5)}", headers=ADMIN)).json()
    assert narrow["data_uses"] == {"marketing": ["profile"]}
    assert wide["data_uses"] == {"marketing": ["orders", "profile"]}
    naive = await history.get("/v1/purposes/marketing?at=2026-03-01T10:00:00", headers=ADMIN)
    assert naive.status_code == 400 and naive.json()["code"] == "validation_failed"


async def test_decisions_as_they_would_have_been_answered(history):
    partner, _ = await partner_headers(history, "acme")
    question = {"subject_id": "ann", "purpose": "marketing", "scopes": ["profile"]}
    answers = {}
    for hours in (0.5, 1.5, 2.5, 4.5):
        answer = await history.post("/v1/decisions", headers=partner, json={**question, "at": moment(hours)})
        assert answer.status_code == 200, answer.text
        answers[hours] = answer.json()
    assert answers[1.5]["decision"] == "permit"
    assert answers[1.5]["retain_until"] == moment(1.5 + 30 * 24)  # 30 days from that moment
    assert answers[1.5]["evaluated_at"] == moment(1.5)
    assert [answers[h]["denied"][0]["reason"] for h in (0.5, 2.5, 4.5)] == [
        "no_consent", "reconsent_required", "consent_withdrawn"]
    batch = await history.post("/v1/decisions/batch", headers=ADMIN, json={
        "items": [question, {**question, "scopes": ["orders"]}], "partner": "acme", "at": moment(1.5)})
    assert [r["decision"] for r in batch.json()["results"]] == ["permit", "deny"]
    now = await history.post("/v1/decisions", headers=partner, json=question)
    assert now.json()["decision"] == "deny"
    about_another = await history.post("/v1/decisions", headers=partner,
                                       json={**question, "partner": "other", "at": moment(1.5)})
    assert about_another.status_code == 403
