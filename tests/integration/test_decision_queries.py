"""The hot path's database cost: one query for an uncached subject, none once cached."""

from __future__ import annotations

import asyncio
import contextlib

import sqlalchemy as sa

from tests.conftest import ADMIN
from tests.integration.test_decisions_api import grant, partner_headers, setup_catalog


@contextlib.contextmanager
def counted_queries(client):
    database = client.app.state.container.database
    engines = {database.engine.sync_engine, database.autocommit_engine.sync_engine}
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        task = asyncio.current_task()
        if task is None or not task.get_name().startswith("consent-"):  # not a background loop's (BackgroundLoop)
            statements.append(statement)

    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", count)


async def test_one_query_when_uncached_and_none_when_cached(client):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "cold", "acme", ["orders"])
    # A fresh app: nothing cached yet.
    client.app.state.container.subjects.clear()
    question = {"subject_id": "cold", "purpose": "marketing", "scopes": ["orders", "profile"]}

    with counted_queries(client) as first:
        assert (await client.post("/v1/decisions", headers=acme, json=question)).json()["decision"] == "partial"
    assert len(first) == 1, first

    with counted_queries(client) as second:
        assert (await client.post("/v1/decisions", headers=acme, json=question)).json()["decision"] == "partial"
    assert second == []


async def test_batch_loads_all_its_subjects_in_one_query(client):
    await setup_catalog(client)
    for n in range(5):
        await grant(client, f"b-{n}", None)
    client.app.state.container.subjects.clear()
    items = [{"subject_id": f"b-{n}", "purpose": "marketing", "scopes": ["orders"]} for n in range(8)]
    with counted_queries(client) as statements:
        answer = await client.post("/v1/decisions/batch", headers=ADMIN, json={"items": items, "partner": "acme"})
    assert [r["decision"] for r in answer.json()["results"]] == ["permit"] * 5 + ["deny"] * 3
    assert len(statements) == 1, statements


async def test_min_position_beyond_the_log_is_refused(client):
    await setup_catalog(client)
    written = await grant(client, "p", None)
    question = {"subject_id": "p", "purpose": "marketing", "scopes": ["orders"], "partner": "acme"}
    fresh = await client.post("/v1/decisions", headers=ADMIN, json={**question, "min_position": written["position"]})
    assert fresh.json()["position"] >= written["position"]
    ahead = await client.post("/v1/decisions", headers=ADMIN,
                              json={**question, "min_position": written["position"] + 1000})
    assert ahead.status_code == 422 and ahead.json()["code"] == "unknown_position"
