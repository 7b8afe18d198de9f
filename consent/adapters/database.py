"""The SQLAlchemy async engine, on PostgreSQL (asyncpg) or the embedded SQLite file (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_json_encode = msgspec.json.Encoder().encode
# aiosqlite's DEBUG lines quote every statement with its parameters (personal data): never wanted.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


def _json_serializer(value: object) -> str:
    return _json_encode(value).decode()


class Database:
    def __init__(self, url: str, pool_size: int = 32) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # Statement parameters carry personal data: never in SQLAlchemy's log lines or error messages.
        options: dict = {"json_serializer": _json_serializer, "json_deserializer": msgspec.json.decode,
                         "hide_parameters": True}
        if self.is_sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            # Transactions are the rarer path (catalog, idempotent writes, the scheduler).
            options.update(pool_size=pool_size // 4, max_overflow=pool_size // 2, pool_pre_ping=False)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        # Single statements (reads, and on PostgreSQL a consent change) need no transaction:
        # autocommit connections spare the BEGIN, COMMIT and reset-on-return round trips.
        self.autocommit_engine: AsyncEngine = self.engine if self.is_sqlite else create_async_engine(
            self.url, **{**options, "pool_size": pool_size, "max_overflow": pool_size // 2},
            isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
        self._options = options
        self._dedicated: list[AsyncEngine] = []
        # SQLite has one writer: serialise this process's write transactions instead of
        # letting them fail with "database is locked" when one upgrades from read to write.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def acquire_writer(self) -> None:
        if self._write_lock is not None:
            await self._write_lock.acquire()

    def release_writer(self) -> None:
        if self._write_lock is not None:
            self._write_lock.release()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        async with self.autocommit_engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def dedicated_engine(self, size: int) -> AsyncEngine:
        """Autocommit connections of one part's own, at most `size`, disposed with the others. For a part
        that requests wait on while holding a pooled connection (the write batcher): sharing their pool,
        it could find it empty, held by those very requests."""
        engine = create_async_engine(self.url, **{**self._options, "pool_size": size, "max_overflow": 0},
                                     isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
        self._dedicated.append(engine)
        return engine

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.autocommit_engine is not self.engine:
            await self.autocommit_engine.dispose()
        for engine in self._dedicated:
            await engine.dispose()

    def upsert(self, table: sa.Table):
        """An INSERT that can take `.on_conflict_do_update`, in this database's dialect."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
