"""The embedded default: with no NATS, committed events reach in-process subscribers, in order, once."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, empty_tables
from tests.integration.test_events_nats import MARKETING, logged_event_ids


async def test_in_process_subscribers_get_every_event_in_commit_order(sqlite_url):
    await empty_tables(sqlite_url)
    settings = Settings(database_url=sqlite_url, admin_keys=(ADMIN_KEY,))
    assert settings.nats_url is None
    received = []

    async def subscriber(events) -> None:
        received.extend(events)

    async with AsyncTestClient(create_app(settings)) as client:
        client.app.state.container.bus.subscribe(subscriber)
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)

        async def flip(subject: str, n: int) -> None:
            answer = await client.post(f"/v1/subjects/{subject}/consents", headers=ADMIN, json={
                "changes": [{"purpose": "marketing", "action": "grant" if n % 2 == 0 else "withdraw"}]})
            assert answer.status_code == 200, answer.text

        await asyncio.gather(*(flip(f"s-{n % 4}", n // 4) for n in range(40)))

    positions = [r.position for r in received]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert [str(r.event_id) for r in received] == await logged_event_ids(sqlite_url)
    for subject in ("s-0", "s-1", "s-2", "s-3"):
        versions = [r.stream_version for r in received if r.stream_id == f"subject:{subject}"]
        assert versions == list(range(1, len(versions) + 1))
