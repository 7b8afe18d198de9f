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
