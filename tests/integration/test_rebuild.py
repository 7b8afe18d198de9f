"""`consent projections rebuild`: the read models rebuilt from the log equal the live ones."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.database import Database
from consent.adapters.rebuild import READ_MODELS, rebuild_projections
from consent.adapters.tables import consents
from tests.conftest import ADMIN, SHARED_KEYS


async def snapshot(url: str) -> dict[str, list]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return {t.name: sorted(map(tuple, (await conn.execute(sa.select(t))).all()), key=repr)
                    for t in READ_MODELS}
    finally:
        await engine.dispose()


async def build_history(client) -> None:
    for scope in ("profile", "orders", "orders.history"):
        await client.put(f"/v1/scopes/{scope}", headers=ADMIN,
                         json={"title": scope, "description": "", "sensitivity": "low"})
    await client.put("/v1/purposes/marketing", headers=ADMIN, json={
        "title": "M", "description": "d", "legal_basis": "consent", "retention": "P30D", "sale_or_sharing": True})
    await client.put("/v1/purposes/marketing", headers=ADMIN, json={
        "title": "M2", "description": "d", "legal_basis": "consent", "retention": "P30D", "sale_or_sharing": True,
        "material_change": True})
    await client.put("/v1/purposes/fraud", headers=ADMIN, json={
        "title": "F", "description": "d", "legal_basis": "legitimate_interest", "retention": "P1Y"})
    await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme", "status": "active", "data_uses": {"marketing": ["orders", "profile"], "fraud": ["orders"]}})
    await client.post("/v1/partners/acme/suspend", headers=ADMIN)
    await client.post("/v1/partners/acme/reinstate", headers=ADMIN)
    for n in range(25):
        changes = [{"purpose": "marketing", "partner": "acme", "action": "grant",
                    "scopes": ["orders", "profile"] if n % 3 else ["orders"]}]
        if n % 4 == 0:
            changes.append({"purpose": "fraud", "action": "object"})
        if n % 5 == 0:
            changes.append({"purpose": "marketing", "action": "grant", "expires_at": "2099-01-01T00:00:00Z"})
        await client.post(f"/v1/subjects/s-{n}/consents", headers=ADMIN, json={"changes": changes})
        if n % 2:
            await client.post(f"/v1/subjects/s-{n}/consents", headers=ADMIN, json={
                "changes": [{"purpose": "marketing", "partner": "acme", "action": "withdraw", "scopes": ["orders"]}]})
    # Streams without a read model of their own: a credential, a revoked token, an admin's read.
    credential = (await client.post("/v1/partners/acme/credentials", headers=ADMIN)).json()
    form = {"client_id": credential["client_id"], "client_secret": credential["client_secret"]}
    issued = (await client.post("/v1/oauth/token", data={"grant_type": "client_credentials", **form})).json()
    assert (await client.post("/v1/oauth/revoke", data={**form, "token": issued["access_token"]})).status_code == 200
    assert (await client.get("/v1/subjects/s-1/history", headers=ADMIN)).status_code == 200


async def test_rebuilt_read_models_equal_the_live_ones(client, database_url):
    await build_history(client)
    live = await snapshot(database_url)
    assert len(live["consents"]) > 25

    # Damage the read models: the log alone must restore them.
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.delete(consents).where(consents.c.subject_id.in_(["s-1", "s-2"])))
        await conn.execute(sa.update(consents).values(status="granted"))
    await engine.dispose()
    assert await snapshot(database_url) != live

    database = Database(database_url)
    try:
        report = await rebuild_projections(database)
    finally:
        await database.dispose()
    assert await snapshot(database_url) == live
    assert report.streams == 25 + 3 + 2 + 1 + 3  # subjects, scopes, purposes, partner, credential, token, audit
    assert report.events > 40


async def test_writes_made_during_the_rebuild_are_caught_up(client, database_url, settings):
    import threading

    from litestar.testing import TestClient

    from consent.api.app import create_app

    await build_history(client)

    def write_while_rebuilding(_events: int) -> None:
        # Runs inside the rebuild's snapshot phase: these commit after the snapshot was taken.
        def write() -> None:
            with TestClient(create_app(settings)) as other:
                for subject in ("late-1", "s-3"):
                    answer = other.post(f"/v1/subjects/{subject}/consents", headers=ADMIN, json={
                        "changes": [{"purpose": "fraud", "action": "object"}]})
                    assert answer.status_code == 200, answer.text

        thread = threading.Thread(target=write)
        thread.start()
        thread.join()

    database = Database(database_url)
    try:
        report = await rebuild_projections(database, write_while_rebuilding)
    finally:
        await database.dispose()
    assert report.caught_up_streams >= 2
    rebuilt = await snapshot(database_url)
    assert any(row[0] == "late-1" for row in rebuilt["consents"])
    database = Database(database_url)
    try:
        await rebuild_projections(database)  # from scratch, with nothing in flight
    finally:
        await database.dispose()
    assert await snapshot(database_url) == rebuilt


async def test_the_rebuild_holds_no_transaction_id_while_it_replays(postgresql_url):
    """A long transaction with an id would hold back the relay of every database on the server (PostgreSQL)."""
    import subprocess

    from litestar.testing import AsyncTestClient

    from consent.api.app import create_app
    from consent.config import Settings
    from tests.conftest import ADMIN_KEY, empty_tables

    database_url = postgresql_url
    await empty_tables(database_url)
    async with AsyncTestClient(create_app(Settings(database_url=database_url, admin_keys=(ADMIN_KEY,),
                                                         **SHARED_KEYS))) as client:
        await build_history(client)
    name = sa.make_url(database_url).database
    holding = []

    def look(_events: int) -> None:
        query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}' AND backend_xid IS NOT NULL"
        holding.append(int(subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", query],
                                          capture_output=True, text=True, check=True).stdout))

    database = Database(database_url)
    try:
        await rebuild_projections(database, look)
    finally:
        await database.dispose()
    assert holding == [0]
