"""Every connection of the service terminated by PostgreSQL (as a failover or an operator would): the next
requests succeed or answer 503 `unavailable`, never 500, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import asyncpg
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS, create_postgres_database, drop_postgres_database, recording
from tests.integration.test_decisions_api import setup_catalog


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def terminate_connections(url: str) -> int:
    parts = urllib.parse.urlsplit(url.replace("+asyncpg", ""))
    admin = await asyncpg.connect(urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")))
    try:
        return await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            parts.path.lstrip("/"))
    finally:
        await admin.close()


async def round_of_requests(client, tag: str) -> list[int]:
    statuses = []
    for n in range(6):
        subject = f"{tag}-{n}"
        write = await client.post(f"/v1/subjects/{subject}/consents", headers=ADMIN,
                                  json={"changes": [{"purpose": "marketing", "action": "grant"}]})
        decide = await client.post("/v1/decisions", headers=ADMIN, json={
            "subject_id": f"{subject}-unseen", "purpose": "marketing", "scopes": ["profile"]})
        history = await client.get(f"/v1/subjects/{subject}/history", headers=ADMIN)
        statuses += [write.status_code, decide.status_code, history.status_code]
    return statuses


async def test_terminated_connections_answer_200_or_503_and_recover():
    url = await create_postgres_database()
    try:
        from consent.adapters import migrate

        await asyncio.to_thread(migrate.upgrade, url)
        handler = _Lines()
        with recording(handler, "consent"):
            settings = Settings(database_url=url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS)
            async with AsyncTestClient(create_app(settings)) as client:
                await setup_catalog(client)
                assert set(await round_of_requests(client, "before")) == {200}
                assert await terminate_connections(url) > 0
                during = await round_of_requests(client, "during")
                assert set(during) <= {200, 503}, during
                recovered = False
                for attempt in range(20):  # within a few seconds, on its own
                    if set(await round_of_requests(client, f"after-{attempt}")) == {200}:
                        recovered = True
                        break
                    await asyncio.sleep(0.25)
                assert recovered
        unavailable = [line for line in handler.lines if line.startswith("database unavailable")]
        # Each 503 was logged with its SQLSTATE (57P01: terminated by an administrator), never its message.
        assert len(unavailable) == during.count(503)
        assert all(line.endswith(("(SQLSTATE 57P01)", "(SQLSTATE none)")) for line in unavailable), unavailable
        print(f"during: {during.count(503)} of {len(during)} answered 503")
    finally:
        await drop_postgres_database(url)
