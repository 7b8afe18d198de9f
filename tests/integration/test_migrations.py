"""Every table comes from a migration: upgrade, downgrade and upgrade again, and no drift from the code."""

import asyncio

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters import migrate
from consent.adapters.tables import metadata


async def tables_and_diff(url: str) -> tuple[set[str], list]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await engine.dispose()
    return names - {"alembic_version", "sqlite_sequence"}, diff


async def test_upgrade_downgrade_upgrade(scratch_url):
    expected = set(metadata.tables)
    await asyncio.to_thread(migrate.upgrade, scratch_url)
    tables, diff = await tables_and_diff(scratch_url)
    assert tables == expected
    assert diff == [], f"the migrations and consent/adapters/tables.py disagree: {diff}"

    await asyncio.to_thread(migrate.downgrade, scratch_url)
    assert (await tables_and_diff(scratch_url))[0] == set()

    await asyncio.to_thread(migrate.upgrade, scratch_url)
    assert (await tables_and_diff(scratch_url))[0] == expected


async def indexes(url: str, table: str) -> dict[str, list[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            found = await conn.run_sync(lambda c: sa.inspect(c).get_indexes(table))
    finally:
        await engine.dispose()
    return {index["name"]: index["column_names"] for index in found}


async def test_0009_partner_health_upgrades_and_downgrades(scratch_url):
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0008")
    assert "partner_health" not in (await tables_and_diff(scratch_url))[0]
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0009")
    engine = create_async_engine(scratch_url)
    try:
        async with engine.begin() as conn:
            indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("partner_health"))
            key = await conn.run_sync(lambda c: sa.inspect(c).get_pk_constraint("partner_health"))
            await conn.execute(sa.text("INSERT INTO partner_health VALUES ('acme', '2026-03-03 12:00:00+00', "
                                       "'decision', 'permit', 2)"))
    finally:
        await engine.dispose()
    assert key["constrained_columns"] == ["partner_id", "bucket_start", "metric", "label"]
    assert [index["column_names"] for index in indexes] == [["bucket_start"]]
    await asyncio.to_thread(migrate.downgrade, scratch_url, "0008")
    assert "partner_health" not in (await tables_and_diff(scratch_url))[0]
    await asyncio.to_thread(migrate.upgrade, scratch_url)
    assert "partner_health" in (await tables_and_diff(scratch_url))[0]


async def test_0010_privacy_center_upgrades_and_downgrades(scratch_url):
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0009")
    assert "privacy_center_sessions" not in (await tables_and_diff(scratch_url))[0]
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0010")
    assert await indexes(scratch_url, "privacy_center_sessions") == {
        "ix_privacy_center_sessions_subject_id": ["subject_id"]}
    assert await indexes(scratch_url, "privacy_center_links") == {"ix_privacy_center_links_expires_at": ["expires_at"]}
    await asyncio.to_thread(migrate.downgrade, scratch_url, "0009")
    tables = (await tables_and_diff(scratch_url))[0]
    assert not {"privacy_center_links", "privacy_center_sessions"} & tables and "partner_health" in tables


async def test_0011_indexes_active_grants_by_purpose(scratch_url):
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0011")
    assert (await indexes(scratch_url, "consents"))["ix_consents_granted_purpose"] == ["purpose_id", "purpose_version"]
    await asyncio.to_thread(migrate.downgrade, scratch_url, "0010")
    names = await indexes(scratch_url, "consents")
    assert "ix_consents_granted_purpose" not in names and "ix_consents_partner_id" in names


async def test_0012_webhooks_upgrades_and_downgrades(scratch_url):
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0011")
    assert "webhooks" not in (await tables_and_diff(scratch_url))[0]
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0012")
    assert await indexes(scratch_url, "webhook_deliveries") == {
        "ix_webhook_deliveries_due": ["next_attempt_at"],
        "ix_webhook_deliveries_ordering": ["webhook_id", "ordering_key", "position"]}
    assert await indexes(scratch_url, "webhooks") == {"ix_webhooks_partner_id": ["partner_id"]}
    await asyncio.to_thread(migrate.downgrade, scratch_url, "0011")
    tables = (await tables_and_diff(scratch_url))[0]
    assert not {"webhooks", "webhook_deliveries"} & tables and "privacy_center_links" in tables
