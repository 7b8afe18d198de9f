"""Operations: rate limits per partner, no caching of answers, metrics without personal data."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN, user_headers
from tests.integration.test_decisions_api import grant, partner_headers, setup_catalog


@pytest.fixture
async def limited_client(settings):
    async with AsyncTestClient(create_app(msgspec.structs.replace(settings, partner_rate_limit=3))) as client:
        yield client


async def test_a_partner_over_its_rate_gets_429_with_retry_after(limited_client):
    client = limited_client
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}
    statuses = [(await client.post("/v1/decisions", headers=acme, json=question)) for _ in range(5)]
    assert [s.status_code for s in statuses[:3]] == [200, 200, 200]
    refused = statuses[3]
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1 and refused.headers["ratelimit-limit"] == "3"
    # Admins are not partners: never limited.
    for _ in range(5):
        assert (await client.post("/v1/decisions", headers=ADMIN, json={**question, "partner": "acme"})
                ).status_code == 200


async def test_a_partners_own_rate_overrides_the_default(limited_client):
    client = limited_client
    await setup_catalog(client)
    for partner, rate in (("acme", 5), ("globex", 0)):
        answer = await client.put(f"/v1/partners/{partner}", headers=ADMIN, json={
            "name": partner, "status": "active", "data_uses": {"marketing": ["profile", "orders"]},
            "rate_limit": rate})
        assert answer.status_code == 200 and answer.json()["rate_limit"] == rate
    question = {"subject_id": "u", "purpose": "marketing", "scopes": ["orders"]}
    acme, _ = await partner_headers(client, "acme")
    statuses = [(await client.post("/v1/decisions", headers=acme, json=question)).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    globex, _ = await partner_headers(client, "globex")  # 0: no limit at all
    for _ in range(10):
        assert (await client.post("/v1/decisions", headers=globex, json=question)).status_code == 200
    # Back to the default once the override is removed.
    await client.put("/v1/partners/globex", headers=ADMIN, json={
        "name": "globex", "status": "active", "data_uses": {"marketing": ["profile", "orders"]}})
    statuses = [(await client.post("/v1/decisions", headers=globex, json=question)).status_code for _ in range(4)]
    assert statuses[-1] == 429


async def test_answers_with_personal_data_are_not_cacheable(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "u-1", None)
    for answer in (await client.get("/v1/subjects/u-1/consents", headers=ADMIN),
                   await client.get("/v1/subjects/u-1/consents", headers=user_headers("u-1")),
                   await client.post("/v1/decisions", headers=acme,
                                     json={"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"]}),
                   await client.post("/v1/partners/acme/credentials", headers=ADMIN)):
        assert answer.status_code in (200, 201)
        assert "no-store" in answer.headers["cache-control"]


async def test_metrics_count_without_personal_data(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "person-4711", None)
    await client.post("/v1/decisions", headers=acme,
                      json={"subject_id": "person-4711", "purpose": "marketing", "scopes": ["orders"]})
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    text = answer.text
    assert 'consent_decisions_total{decision="permit"} 1.0' in text
    assert 'consent_events_total{type="subject.granted"} 1.0' in text
    assert "person-4711" not in text and acme["Authorization"][7:] not in text
