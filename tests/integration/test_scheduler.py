"""Expiry and termination: the service records them by itself, once, as events."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN, on_app_loop

MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


@pytest.fixture
def manual_settings(settings):
    return msgspec.structs.replace(settings, scheduler_interval=0)


@pytest.fixture
async def timed_client(manual_settings, clock):
    async with AsyncTestClient(create_app(manual_settings, clock)) as client:
        yield client


async def setup(client) -> None:
    await client.put("/v1/scopes/orders", headers=ADMIN, json={"title": "O", "description": "", "sensitivity": "low"})
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    for partner in ("acme", "globex"):
        await client.put(f"/v1/partners/{partner}", headers=ADMIN,
                         json={"name": partner, "status": "active", "data_uses": {"marketing": ["orders"]}})


async def sweep(client) -> int:
    return await on_app_loop(client, client.app.state.container.scheduler.sweep_once)


async def history_types(client, subject_id: str) -> list[tuple[str, dict]]:
    events = (await client.get(f"/v1/subjects/{subject_id}/history", headers=ADMIN)).json()["events"]
    return [(e["type"], e["data"]) for e in events]


async def test_a_grant_expires_with_an_event(timed_client, clock):
    client = timed_client
    await setup(client)
    expires = clock.now().replace(hour=13).isoformat()
    await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant", "expires_at": expires}]})
    assert await sweep(client) == 0  # not yet due

    clock.advance(hours=1)  # exactly at expires_at
    assert await sweep(client) == 1
    assert await sweep(client) == 0  # once only
    kinds = await history_types(client, "u-1")
    assert [k for k, _ in kinds] == ["subject.granted", "subject.expired"]
    assert kinds[1][1]["source"] == "system" and kinds[1][1]["partner"] == "acme"
    consents = (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()["consents"]
    assert consents[0]["status"] == "expired"
    decision = await client.post("/v1/decisions", headers=ADMIN, json={
        "subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"], "partner": "acme"})
    assert decision.json()["denied"] == [{"scope": "orders", "reason": "consent_expired"}]


async def test_terminating_a_partner_withdraws_its_grants_only(timed_client):
    client = timed_client
    await setup(client)
    for subject in ("t-1", "t-2", "t-3"):
        await client.post(f"/v1/subjects/{subject}/consents", headers=ADMIN, json={"changes": [
            {"purpose": "marketing", "partner": "acme", "action": "grant"},
            {"purpose": "marketing", "partner": "globex", "action": "grant"}]})
    assert (await client.post("/v1/partners/acme/terminate", headers=ADMIN)).status_code == 200
    assert await sweep(client) == 3
    for subject in ("t-1", "t-2", "t-3"):
        kinds = await history_types(client, subject)
        withdrawn = [data for kind, data in kinds if kind == "subject.withdrawn"]
        assert len(withdrawn) == 1
        assert withdrawn[0]["partner"] == "acme" and withdrawn[0]["reason"] == "partner_terminated"
        consents = {c["partner"]: c["status"] for c in
                    (await client.get(f"/v1/subjects/{subject}/consents", headers=ADMIN)).json()["consents"]}
        assert consents == {"acme": "withdrawn", "globex": "granted"}
    assert await sweep(client) == 0


async def test_two_processes_never_expire_the_same_grant_twice(manual_settings, clock):
    async with AsyncTestClient(create_app(manual_settings, clock)) as first, \
            AsyncTestClient(create_app(manual_settings, clock)) as second:
        await setup(first)
        expires = clock.now().replace(hour=13).isoformat()
        for n in range(30):
            await first.post(f"/v1/subjects/c-{n}/consents", headers=ADMIN, json={
                "changes": [{"purpose": "marketing", "action": "grant", "expires_at": expires}]})
        clock.advance(hours=2)
        results = await asyncio.gather(*(sweep(app) for app in (first, second, first, second)),
                                       return_exceptions=True)
        written = sum(r for r in results if isinstance(r, int))
        # A process that lost a race on a subject gets a version conflict, never a second event.
        assert written + sum([await sweep(first) for _ in range(2)]) == 30
        for n in range(30):
            kinds = [k for k, _ in await history_types(first, f"c-{n}")]
            assert kinds == ["subject.granted", "subject.expired"]


async def test_a_partner_is_suspended_when_its_contract_ends(timed_client, clock):
    client = timed_client
    await setup(client)
    ends = clock.now().replace(hour=18).isoformat()
    await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "acme", "status": "active", "data_uses": {"marketing": ["orders"]}, "contract_ends_at": ends})
    assert await sweep(client) == 0
    clock.advance(hours=6)
    await sweep(client)
    partner = (await client.get("/v1/partners/acme", headers=ADMIN)).json()
    assert partner["status"] == "suspended"
    in_memory = await on_app_loop(client, client.app.state.container.catalog_service.catalog.partners.get, "acme")
    assert in_memory.status == "suspended"  # decisions and tokens see it at once
    await sweep(client)  # once: a suspended partner is not suspended again
    assert (await client.get("/v1/partners/acme", headers=ADMIN)).json()["status"] == "suspended"
