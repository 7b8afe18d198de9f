"""The composition root: one table says which parts each committed event reaches, and both the in-process
bus and the NATS feed are subscribed from it, in its order."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.bootstrap import event_reach
from consent.config import Settings
from tests.conftest import ADMIN_KEY, NATS_URL, SHARED_KEYS, empty_tables


def _names(handlers) -> list[str]:
    return [handler.__name__ for handler in handlers]


async def test_bus_and_feed_reach_the_parts_of_one_table_in_its_order(postgresql_url, nats_names):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    settings = Settings(database_url=postgresql_url, nats_url=NATS_URL, admin_keys=(ADMIN_KEY,),
                        nats_stream=stream, nats_subject_prefix=prefix, relay="inline", **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        container = client.app.state.container
        reach = event_reach(container)
        assert [part.part for part in reach if part.committed_here] == [
            "subject read model", "privacy center sessions", "partner access", "scheduler", "relay"]
        assert [part.part for part in reach if part.from_other_replicas] == [
            "subject keys", "write cache", "subject read model", "partner access"]

        bus = container.bus._subscribers
        assert _names(bus) == ["apply_to_read_model", "on_events", "on_events", "on_events", "wake_relay"]
        assert (bus[1].__self__, bus[2].__self__, bus[3].__self__) == (
            container.privacy_center, container.partner_access, container.scheduler)
        feed = container._feed_handlers
        assert _names(feed) == ["forget_keys_of_erased", "update_write_cache", "apply_from_feed", "on_events"]
        assert (feed[2].__self__, feed[3].__self__) == (container.subjects, container.partner_access)


async def test_without_nats_no_relay_is_woken(sqlite_url):
    await empty_tables(sqlite_url)
    async with AsyncTestClient(create_app(Settings(database_url=sqlite_url, admin_keys=(ADMIN_KEY,)))) as client:
        container = client.app.state.container
        assert container.relay is None and container.feed is None
        assert _names(container.bus._subscribers) == ["apply_to_read_model", "on_events", "on_events", "on_events"]
