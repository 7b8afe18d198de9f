"""A scratch PostgreSQL database for the one-off bench scripts (encryption, write_profile, catalog_impact):
created under a random name, migrated, and dropped at the end whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consent.adapters import migrate  # noqa: E402
from consent.adapters.database import Database  # noqa: E402


@contextlib.asynccontextmanager
async def scratch_database(postgres: str, prefix: str) -> AsyncIterator[tuple[str, Database]]:
    """(its asyncpg DSN, the service's Database on it), on the server of the maintenance DSN `postgres`."""
    parts = urllib.parse.urlsplit(postgres)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + name, parts.query, ""))
    database = Database(url)
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield urllib.parse.urlunsplit(("postgresql", parts.netloc, "/" + name, parts.query, "")), database
    finally:
        await database.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
