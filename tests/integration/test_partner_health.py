"""GET /v1/partners/{partner_id}/health: per-partner figures summed over every replica, surviving restarts."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import partner_health
from consent.api.app import create_app
from consent.app.partner_health import KEEP
from consent.config import Settings
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    SHARED_KEYS,
    USER_TOKEN_SECRET,
    empty_tables,
    on_app_loop,
    user_headers,
)
from tests.integration.test_decisions_api import grant, partner_headers, setup_catalog

PERMITTED = {"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"]}  # u-1 grants it below
NO_CONSENT = {"subject_id": "u-2", "purpose": "marketing", "scopes": ["orders"]}
NOT_APPROVED = {"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders", "history"]}


@pytest.fixture
def manual(settings):
    """Flushes only when a test asks, and at shutdown (the loop's interval is an hour)."""
    return msgspec.structs.replace(settings, metrics_flush_interval=3600.0)


async def flush(client) -> int:
    return await on_app_loop(client, client.app.state.container.health_flusher.flush_once)


async def health(client, partner: str = "acme", headers=ADMIN, **params) -> dict:
    answer = await client.get(f"/v1/partners/{partner}/health", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def decide(client, headers, question: dict, times: int = 1) -> None:
    for _ in range(times):
        assert (await client.post("/v1/decisions", headers=headers, json=question)).status_code == 200


async def test_replicas_add_up_and_the_figures_survive_a_restart(postgresql_url, clock):
    """Two app instances on one PostgreSQL database, as two replicas are; then a third, as after a restart."""
    await empty_tables(postgresql_url)
    manual = Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,), user_token_secret=USER_TOKEN_SECRET,
                      metrics_flush_interval=3600.0, **SHARED_KEYS)
    async with AsyncTestClient(create_app(manual, clock)) as a:
        await setup_catalog(a)
        await grant(a, "u-1", "acme")
        acme, _ = await partner_headers(a, "acme")  # the token request counts as one of acme's (200)
        async with AsyncTestClient(create_app(manual, clock)) as b:  # started after the catalog: it loads it
            await decide(a, acme, PERMITTED, times=2)
            await decide(b, acme, PERMITTED)
            await decide(b, acme, NO_CONSENT)
            await decide(a, acme, NOT_APPROVED)
            refused = await b.post("/v1/decisions", headers=acme, json={**PERMITTED, "partner": "globex"})
            assert refused.status_code == 403
            assert await flush(a) > 0 and await flush(b) > 0
            both = await health(b)
            assert both["decisions"] == {"permit": 3, "deny": 1, "partial": 1}
            assert {k: v for k, v in both["denials"].items() if v} == {"no_consent": 1, "scope_not_approved": 1}
            assert {k: v for k, v in both["violations"].items() if v} == {"scope_not_approved": 1}
            assert both["requests"] == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 1, "5xx": 0}
            assert both["latency"]["count"] == 7 and both["latency"]["p50_ms"] > 0
            assert both["latency"]["mean_ms"] > 0
            assert (await health(a))["decisions"] == both["decisions"]  # the same from either replica
            assert both["flush_interval"] == 3600.0
            await decide(b, acme, NO_CONSENT)  # not flushed by the test: b flushes it as it stops
        after_b = await health(a)
        assert after_b["decisions"] == {"permit": 3, "deny": 2, "partial": 1}
    async with AsyncTestClient(create_app(manual, clock)) as restarted:  # a restart: nothing counted here yet
        assert (await health(restarted))["decisions"] == {"permit": 3, "deny": 2, "partial": 1}
        await decide(restarted, acme, PERMITTED)
        await flush(restarted)
        kept = await health(restarted)
        assert kept["decisions"] == {"permit": 4, "deny": 2, "partial": 1}
        assert kept["requests"]["2xx"] == 8


async def test_the_window_counts_the_recent_minutes_only_and_old_rows_are_pruned(manual, clock, database_url):
    async with AsyncTestClient(create_app(manual, clock)) as client:
        await setup_catalog(client)
        acme, _ = await partner_headers(client, "acme")
        await decide(client, acme, NO_CONSENT)
        await flush(client)
        clock.advance(hours=2)
        await decide(client, acme, NO_CONSENT, times=2)
        assert await flush(client) > 0
        assert await flush(client) == 0  # nothing new: nothing written
        recent, day, week = [await health(client, window=window) for window in ("PT1H", "P1D", "P7D")]
        assert (recent["decisions"]["deny"], day["decisions"]["deny"], week["decisions"]["deny"]) == (2, 3, 3)
        assert recent["window"] == "PT1H" and recent["since"].endswith(":00Z")
        assert (await health(client))["decisions"]["deny"] == 2  # PT1H by default
        clock.advance(days=2)
        assert (await health(client, window="P1D"))["decisions"]["deny"] == 0
        assert (await health(client, window="P7D"))["decisions"]["deny"] == 3

        clock.advance(days=6)  # the first rows are now older than the longest window and its margin
        await decide(client, acme, NO_CONSENT)
        await flush(client)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            starts = {row[0] for row in await conn.execute(sa.select(partner_health.c.bucket_start).distinct())}
    finally:
        await engine.dispose()
    assert starts and all(start >= clock.now() - KEEP for start in starts)


async def test_only_admins_and_the_partner_itself_read_it(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    globex, _ = await partner_headers(client, "globex")
    assert (await client.get("/v1/partners/acme/health", headers=acme)).status_code == 200
    for headers, status in ((globex, 403), (user_headers("u-1"), 403), ({}, 401)):
        # Refused before the window is read: a bad one changes nothing.
        for params in ({}, {"window": "P1Y"}):
            answer = await client.get("/v1/partners/acme/health", headers=headers, params=params)
            assert answer.status_code == status, answer.text
    catalog_only = await client.post("/v1/partners/acme/credentials", headers=ADMIN,
                                     json={"scopes": ["decisions:read"]})
    issued = (await client.post("/v1/oauth/token", data={"grant_type": "client_credentials", **{
        k: catalog_only.json()[k] for k in ("client_id", "client_secret")}})).json()["access_token"]
    lacking = await client.get("/v1/partners/acme/health", headers={"Authorization": f"Bearer {issued}"})
    assert lacking.status_code == 403 and lacking.json()["code"] == "insufficient_scope"


async def test_an_unknown_partner_or_window_is_a_problem(client):
    await setup_catalog(client)
    unknown = await client.get("/v1/partners/nobody/health", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    for window in ("P1Y", "PT1h", "", "x" * 500):
        bad = await client.get("/v1/partners/acme/health", headers=ADMIN, params={"window": window})
        if window == "":  # an empty value is no value: the default window
            assert bad.status_code == 200
            continue
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_window", bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")


async def one_denied_decision(client) -> None:
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await decide(client, acme, NO_CONSENT)


async def test_the_background_flush_reaches_the_database_within_its_interval(settings, clock):
    quick = msgspec.structs.replace(settings, metrics_flush_interval=0.2)
    async with AsyncTestClient(create_app(quick, clock)) as client:
        await one_denied_decision(client)
        for _ in range(50):
            if (answer := await health(client))["decisions"]["deny"] == 1:
                break
            await asyncio.sleep(0.1)
        assert answer["decisions"]["deny"] == 1 and answer["flush_interval"] == 0.2


async def test_no_flushes_when_turned_off(settings, clock):
    off = msgspec.structs.replace(settings, metrics_flush_interval=0)
    async with AsyncTestClient(create_app(off, clock)) as client:
        await one_denied_decision(client)
        await asyncio.sleep(0.3)
    async with AsyncTestClient(create_app(off, clock)) as client:
        assert (await health(client))["decisions"]["deny"] == 0  # not even at shutdown
