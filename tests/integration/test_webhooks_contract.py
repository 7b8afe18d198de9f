"""The `partner.contract_ending` notice: the scheduler appends it once, CONSENT_WEBHOOK_CONTRACT_NOTICE_DAYS
before the partner's contract ends, and the partner's webhook receives it."""

from __future__ import annotations

import json
from datetime import timedelta

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN, on_app_loop
from tests.integration.test_decisions_api import setup_catalog
from tests.integration.test_webhooks import register, webhook_settings
from tests.integration.webhook_receiver import Receiver, eventually


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


async def test_a_contract_ending_is_noticed_once_ahead_of_its_end(settings, clock, receiver):
    chosen = webhook_settings(settings, receiver, scheduler_interval=0, webhook_contract_notice_days=30)
    async with AsyncTestClient(create_app(chosen, clock)) as client:
        await setup_catalog(client)
        ends_at = clock.now() + timedelta(days=40)
        assert (await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "acme", "status": "active", "data_uses": {"marketing": ["profile"]},
            "contract_ends_at": ends_at.isoformat()})).status_code == 200
        await register(client, receiver.url, events=["partner.contract_ending"])
        container = client.app.state.container
        notices = container.catalog_service.notify_contracts_ending
        assert await on_app_loop(client, notices, 30) == 0  # 40 days ahead: not yet
        clock.advance(days=11)
        await on_app_loop(client, container.scheduler.sweep_once)  # the scheduler gives the notice
        assert await on_app_loop(client, notices, 30) == 0  # once
        container.catalog_service._contract_notices.clear()  # as another replica, which has not seen it
        assert await on_app_loop(client, notices, 30) == 0  # the stream says it was given
        await eventually(lambda: len(receiver.ok()) == 1, what="the notice")
        event = json.loads(receiver.ok()[0].body)
        assert event["type"] == "io.consent.v1.partner.contract_ending" and event["subject"] == "acme"
        assert event["data"]["contract_ends_at"].startswith(ends_at.strftime("%Y-%m-%dT%H:%M"))
        # A new contract end gets its own notice; the partner still works meanwhile.
        later = ends_at - timedelta(days=5)  # 24 days ahead now
        await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "acme", "status": "active", "data_uses": {"marketing": ["profile"]},
            "contract_ends_at": later.isoformat()})
        assert await on_app_loop(client, notices, 30) == 1
        audit = (await client.get("/v1/audit", headers=ADMIN)).json()["events"]
        assert [e["type"] for e in audit].count("partner.contract_ending") == 0  # the service's own: not audit
        assert msgspec.json.decode((await client.get("/v1/partners/acme", headers=ADMIN)).content)["status"] == "active"
