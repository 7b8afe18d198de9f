"""One database transaction holding the repositories a use case works with; see `consent.app.ports.UnitOfWork`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database, unavailable
from consent.adapters.postgres import PostgresRecorder, WriteBatcher
from consent.adapters.sql_projections import SqlCatalog, SqlClaims, SqlIdempotency
from consent.adapters.sql_recorder import SqlRecorder
from consent.adapters.sqlite import SqliteRecorder
from consent.adapters.subject_keys import WITHOUT_MASTER_KEY, SubjectKeys
from consent.adapters.subject_repository import SubjectRepository
from consent.adapters.write_cache import SubjectWriteCache
from consent.app.ports import StoreUnavailable


def recorder_for(database: Database) -> type[SqlRecorder]:
    return SqliteRecorder if database.is_sqlite else PostgresRecorder


class SqlUnitOfWork:
    def __init__(self, database: Database, single_write: bool = False, keys: SubjectKeys | None = None,
                 write_cache: SubjectWriteCache | None = None, batcher: WriteBatcher | None = None,
                 recorder: type[SqlRecorder] | None = None) -> None:
        self.database = database
        # One subject write, which on PostgreSQL is one statement: atomic without a transaction,
        # which spares the BEGIN and COMMIT round trips on the write hot path.
        self._autocommit = single_write and not database.is_sqlite
        self._connected = False
        self._committed = False
        self.log = (recorder or recorder_for(database))(self, keys or WITHOUT_MASTER_KEY)
        if self._autocommit and isinstance(self.log, PostgresRecorder):
            self.log.batcher = batcher  # group commit of single writes
        self.subjects = SubjectRepository(self.log, SqlClaims(self), write_cache)
        self.catalog = SqlCatalog(self, self.log)
        self.idempotency = SqlIdempotency(self)

    async def __aenter__(self) -> SqlUnitOfWork:
        await self.database.acquire_writer()
        try:
            if not self._autocommit:
                self._conn = await self.database.engine.connect()
                self._connected = True
                await self._conn.begin()
        except BaseException:
            self.database.release_writer()
            raise
        return self

    async def connection(self) -> AsyncConnection:
        """This unit's connection. A single write answered from the write cache and sent by the batcher
        needs none of its own: in autocommit one is taken only for a statement of this unit's."""
        if not self._connected:
            self._conn = await self.database.autocommit_engine.connect()
            self._connected = True
        return self._conn

    async def release(self) -> None:
        """Give an autocommit connection back before a long wait: none of its statements is pending."""
        if self._autocommit and self._connected:
            self._connected = False
            await self._conn.close()

    async def __aexit__(self, _type: Any, error: BaseException | None, _traceback: Any) -> None:
        gone = error is not None and unavailable(error)
        try:
            if self._connected:
                if not self._committed and not self._autocommit:
                    await self._conn.rollback()
                await self._conn.close()
        except Exception:
            if not gone:  # a connection that is gone cannot roll back; its transaction went with it
                raise
        finally:
            self.database.release_writer()
        if gone:
            # The use case may run again (`consent.app.writing.retrying`): whatever this unit wrote is either
            # committed, and found by its next read, or gone with the connection.
            raise StoreUnavailable(self.database.failover_wait) from error

    async def commit(self) -> None:
        if not self._autocommit:
            await self._conn.commit()
        self._committed = True
        self.subjects.committed()
