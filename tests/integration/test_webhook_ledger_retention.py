"""The delivery ledger does not grow for ever: the scheduler deletes deliveries delivered longer ago than
CONSENT_WEBHOOK_LEDGER_DAYS, and keeps dead ones (what a partner must look at) and younger ones, on both
databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import webhook_deliveries
from consent.api.app import create_app
from consent.config import Settings, SettingsError
from tests.conftest import on_app_loop
from tests.integration.test_decisions_api import setup_catalog
from tests.integration.test_webhooks import change, ledger, register, until, webhook_settings
from tests.integration.webhook_receiver import Receiver

DAYS = 7  # not the default 30: the setting is what counts
# Days ago each subject's delivery was made, and attempted (the last attempt is the one that counts); made in
# this order, as the dispatcher makes them: the older, the smaller the id.
AGES = {
    "old-dead": (DAYS + 20, [DAYS + 20]),  # answered 400: dead at once
    "retried": (DAYS + 10, [DAYS + 10, 1]),  # delivered long ago, sent again yesterday by a retry
    "old-2": (DAYS + 3, [DAYS + 3, DAYS + 2]),
    "old-1": (DAYS + 1, [DAYS + 1]),
    "within": (DAYS - 1, [DAYS - 1]),
    "fresh": (0, [0]),
}
KEPT = {"fresh", "old-dead", "retried", "within"}


@pytest.fixture
def receiver():
    started = Receiver().start()
    started.answer_for = lambda body: 400 if b'"old-dead"' in body else None
    yield started
    started.stop()


@pytest.fixture
async def aged(settings, receiver):
    """A client whose webhook's ledger holds one settled delivery per subject of AGES, aged as it says;
    and the event id of each."""
    chosen = webhook_settings(settings, receiver, scheduler_interval=0, webhook_ledger_days=DAYS)
    async with AsyncTestClient(create_app(chosen)) as client:
        await setup_catalog(client)
        webhook = await register(client, receiver.url)
        event_ids = {}
        for subject in AGES:
            event_ids[subject] = (await change(client, subject, "grant"))["receipts"][0]["event_id"]
        settled = await until(client, lambda entries: len(entries) == len(AGES) and all(
            e["status"] in ("delivered", "dead") for e in entries), webhook)
        assert [e["status"] for e in settled].count("dead") == 1
        await age(settings.database_url, event_ids)
        yield client, webhook, event_ids


async def age(url: str, event_ids: dict[str, str]) -> None:
    now = datetime.now(UTC)
    c = webhook_deliveries.c
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for subject, (made, attempted) in AGES.items():
                event_id = uuid.UUID(event_ids[subject])
                (attempts,) = (await conn.execute(sa.select(c.attempts).where(c.event_id == event_id))).one()
                last = attempts[-1]
                aged_attempts = [{**last, "at": (now - timedelta(days=days)).isoformat()} for days in attempted]
                await conn.execute(sa.update(webhook_deliveries).where(c.event_id == event_id).values(
                    created_at=now - timedelta(days=made), attempts=aged_attempts))
    finally:
        await engine.dispose()


async def ledger_subjects(client, webhook: dict, event_ids: dict[str, str]) -> set[str]:
    subjects = {event_id: subject for subject, event_id in event_ids.items()}
    return {subjects[entry["event_id"]] for entry in await ledger(client, webhook)}


async def test_the_scheduler_deletes_deliveries_delivered_longer_ago_than_the_setting(aged):
    client, webhook, event_ids = aged
    assert await ledger_subjects(client, webhook, event_ids) == set(AGES)
    await on_app_loop(client, client.app.state.container.scheduler.sweep_once)
    assert await ledger_subjects(client, webhook, event_ids) == KEPT
    (dead,) = await ledger(client, webhook, status="dead")
    assert dead["event_id"] == event_ids["old-dead"]


async def test_the_prune_walks_the_ledger_a_batch_at_a_time_past_the_rows_it_keeps(aged):
    client, webhook, event_ids = aged
    ledger_store = client.app.state.container.webhooks.ledger
    before = datetime.now(UTC) - timedelta(days=DAYS)
    assert await on_app_loop(client, ledger_store.prune_delivered, before, 1) == 2
    assert await ledger_subjects(client, webhook, event_ids) == KEPT
    assert await on_app_loop(client, ledger_store.prune_delivered, before, 1) == 0


def test_the_ledger_is_kept_at_least_a_day():
    assert Settings().webhook_ledger_days == 30
    assert Settings.from_env({"CONSENT_WEBHOOK_LEDGER_DAYS": "2"}).webhook_ledger_days == 2
    with pytest.raises(SettingsError, match="CONSENT_WEBHOOK_LEDGER_DAYS"):
        Settings.from_env({"CONSENT_WEBHOOK_LEDGER_DAYS": "0"})
