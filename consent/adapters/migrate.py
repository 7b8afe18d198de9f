"""Alembic, driven from code: `consent db upgrade|downgrade`, the embedded default's start, and the check
that commands working on an existing log (`consent audit verify` ...) find it migrated."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine


def _script_location() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "_migrations"  # inside a built wheel
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def embedded_file(database_url: str) -> Path | None:
    """The SQLite file of this URL; None for PostgreSQL or an in-memory database."""
    url = sa.make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:" \
            or url.database.startswith("file::memory:"):
        return None
    return Path(url.database)


async def schema_problem(database_url: str) -> str | None:
    """What keeps a command from working on this database, or None when it is migrated to this version's head.
    Never creates the embedded file (connecting to SQLite would); never shows the URL (it may hold a password)."""
    path = embedded_file(database_url)
    if path is not None and not path.exists():
        return (f"the embedded database {path.resolve()} does not exist: run `consent db upgrade` (or `consent serve` "
                "once) here first, or set CONSENT_DATABASE_URL to the database to use")
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    except (OSError, sa.exc.SQLAlchemyError) as error:
        cause: BaseException = error
        while cause.__cause__ is not None:  # the driver's own error names the reason
            cause = cause.__cause__
        return f"cannot open the database of CONSENT_DATABASE_URL ({type(cause).__name__})"
    finally:
        await engine.dispose()
    if current is None:
        return "the database has no schema yet: run `consent db upgrade` first"
    if current != head:
        return (f"the database schema is at revision {current}, this version needs {head}: "
                "run `consent db upgrade` first")
    return None
