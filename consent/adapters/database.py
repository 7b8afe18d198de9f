"""The SQLAlchemy async engine, on PostgreSQL (asyncpg) or the embedded SQLite file (aiosqlite).

On PostgreSQL a process holds at most `pool_size` connections in all (CONSENT_DATABASE_POOL_SIZE, docs/scaling.md):
requests beyond them wait `pool_timeout` seconds for one, then answer 503. A connection that finds no primary
(a failover under way, the server restarting) is tried again for `failover_wait` seconds before giving up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from consent.config import MIN_POOL_SIZE, Settings, SettingsError

_json_encode = msgspec.json.Encoder().encode
# aiosqlite's DEBUG lines quote every statement with its parameters (personal data): never wanted.
logging.getLogger("aiosqlite").setLevel(logging.INFO)
log = logging.getLogger("consent.database")

# The relay's connections, when it runs in a process of its own: its lock session, a transaction, a read.
RELAY_CONNECTIONS = 3
# The webhook process's (consent/adapters/webhook_process.py): two held (the dispatcher's lock session, the
# senders' listener), the dispatcher's, a claim's and a settlement's transactions, and reads.
SENDER_CONNECTIONS = 6
SENDER_HELD = 2
# The fewest a server process works with: the write batcher's, two held by leaders, two for transactions, one
# for single statements, one spare (split_budget).
SERVER_CONNECTIONS = MIN_POOL_SIZE - RELAY_CONNECTIONS
HELD_SESSIONS = 2  # in a server process: the inline relay's and the webhook dispatcher's lock sessions
# SQLSTATEs that say "no database to talk to now", not "this statement is wrong": connection exceptions (class
# 08), shut down by an administrator or a crash, starting up, too many clients, and a read-only transaction
# (connected to a standby: the primary it was has just been demoted).
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03", "53300", "25006"}


def _json_serializer(value: object) -> str:
    return _json_encode(value).decode()


def split_budget(total: int, batcher: bool, held: int | None = None) -> tuple[int, int, int]:
    """`total` connections of one process as (transactions, single statements, the write batcher's own).

    Transactions include `held` connections that parts hold for as long as they run (a server process's
    HELD_SESSIONS: the inline relay's and the webhook dispatcher's advisory locks): the rest must not wait
    for them."""
    batcher_share = min(4, max(1, total // 5)) if batcher else 0
    held = (HELD_SESSIONS if batcher else 0) if held is None else held
    shared = total - batcher_share
    transactions = max(2, (shared - held) // 4) + held
    return transactions, max(1, shared - transactions), batcher_share


def database_of(settings: Settings, apart: int | None = None, held: int = 0) -> Database:
    """This process's share of its replica's connection budget. A part in a child process of its own (`apart`:
    the relay's RELAY_CONNECTIONS, the webhook process's SENDER_CONNECTIONS, `held` of them for as long as it
    runs) takes its connections from CONSENT_DATABASE_POOL_SIZE; the server keeps the rest."""
    children = children_connections(settings)
    size = apart if apart is not None else settings.database_pool_size - children
    if apart is None and size < SERVER_CONNECTIONS:
        raise SettingsError(f"CONSENT_DATABASE_POOL_SIZE={settings.database_pool_size} leaves the server "
                            f"{size} connections beside its child processes' {children}: "
                            f"set it to at least {SERVER_CONNECTIONS + children}")
    return Database(settings.database_url, size, batcher=apart is None, held=None if apart is None else held,
                    pool_timeout=settings.database_pool_timeout, failover_wait=settings.database_failover_wait)


def children_connections(settings: Settings) -> int:
    """What `consent serve`'s child processes hold of its budget."""
    relay = RELAY_CONNECTIONS if settings.nats_url is not None and settings.relay == "process" else 0
    return relay + (SENDER_CONNECTIONS if settings.webhook_sender == "process" else 0)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, the driver error SQLAlchemy wrapped, and what they were raised from."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [getattr(item, "orig", None), item.__cause__, item.__context__]


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL error code of a driver error, wrapped by SQLAlchemy or not; None for others."""
    for item in _causes(error):
        code = getattr(item, "sqlstate", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def unavailable(error: BaseException) -> bool:
    """The database could not be reached or has gone (worth waiting for), as opposed to refusing a statement."""
    for item in _causes(error):
        if getattr(item, "connection_invalidated", False) or isinstance(
                item, (OSError, asyncpg.TargetServerAttributeNotMatched)):
            return True
        code = getattr(item, "sqlstate", None)
        if isinstance(code, str) and (code.startswith("08") or code in _UNAVAILABLE_STATES):
            return True
    return False


class Database:
    def __init__(self, url: str, pool_size: int = 20, *, batcher: bool = True, held: int | None = None,
                 pool_timeout: float = 5.0, failover_wait: float = 5.0) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.failover_wait = failover_wait
        # Statement parameters carry personal data: never in SQLAlchemy's log lines or error messages.
        options: dict = {"json_serializer": _json_serializer, "json_deserializer": msgspec.json.decode,
                         "hide_parameters": True}
        transactions, statements, self._batcher_share = split_budget(pool_size, batcher, held)
        if self.is_sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            # No overflow: the budget is a ceiling, so that N replicas' sum can be set below max_connections.
            options.update(max_overflow=0, pool_timeout=pool_timeout, pool_pre_ping=False)
        self._options = options
        # Transactions are the rarer path (catalog, idempotent writes, the scheduler).
        self.engine: AsyncEngine = self._engine(transactions)
        # Single statements (reads, and on PostgreSQL a consent change) need no transaction:
        # autocommit connections spare the BEGIN, COMMIT and reset-on-return round trips.
        self.autocommit_engine: AsyncEngine = self.engine if self.is_sqlite else self._engine(
            statements, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
        self._dedicated: list[AsyncEngine] = []
        # SQLite has one writer: serialise this process's write transactions instead of
        # letting them fail with "database is locked" when one upgrades from read to write.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    def _engine(self, size: int, **options) -> AsyncEngine:
        if self.is_sqlite:
            return create_async_engine(self.url, **self._options, **options)
        engine = create_async_engine(self.url, **self._options, pool_size=size, **options)
        sa.event.listen(engine.sync_engine, "do_connect", self._connect_when_primary)
        return engine

    def _connect_when_primary(self, dialect, _record, cargs, cparams):
        """Connect, waiting up to `failover_wait` seconds for a server that takes writes: during a failover
        the request waits rather than fails."""
        deadline = time.monotonic() + self.failover_wait
        pause = 0.05
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as error:
                if not unavailable(error) or time.monotonic() + pause > deadline:
                    raise
                log.warning("waiting for the database (%s, SQLSTATE %s)", type(error).__name__,
                            sqlstate(error) or "none")
                await_(asyncio.sleep(pause))
                pause = min(pause * 2, 0.5)

    async def acquire_writer(self) -> None:
        if self._write_lock is not None:
            await self._write_lock.acquire()

    def release_writer(self) -> None:
        if self._write_lock is not None:
            self._write_lock.release()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite, taken in turn with this process's other writers."""
        await self.acquire_writer()
        try:
            async with self.engine.begin() as conn:
                yield conn
        finally:
            self.release_writer()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        async with self.autocommit_engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def batcher_engine(self) -> tuple[AsyncEngine, int]:
        """The write batcher's own connections, and how many: the writes that wait for it may hold every
        connection of the shared pools."""
        engine = self._engine(self._batcher_share, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
        self._dedicated.append(engine)
        return engine, self._batcher_share

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
