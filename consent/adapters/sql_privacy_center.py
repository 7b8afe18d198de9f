"""The privacy center's links and sessions in the database (consent/app/privacy_center.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.tables import privacy_center_links as links
from consent.adapters.tables import privacy_center_sessions as sessions


class SqlSessionStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def add_link(self, code_hash: bytes, subject_id: str, expires_at: datetime, now: datetime) -> None:
        await self._add(links, now, code_hash=code_hash, subject_id=subject_id, expires_at=expires_at)

    async def take_link(self, code_hash: bytes, now: datetime) -> str | None:
        # One statement: of two replicas opening the same link at once, one finds it unused.
        async with self._database.engine.begin() as conn:
            row = (await conn.execute(
                sa.update(links).where(links.c.code_hash == code_hash, links.c.used_at.is_(None),
                                       links.c.expires_at > now)
                .values(used_at=now).returning(links.c.subject_id))).first()
        return None if row is None else row.subject_id

    async def add_session(self, session_hash: bytes, subject_id: str, expires_at: datetime, now: datetime) -> None:
        await self._add(sessions, now, session_hash=session_hash, subject_id=subject_id, expires_at=expires_at)

    async def find_session(self, session_hash: bytes, now: datetime) -> str | None:
        async with self._database.reading() as conn:
            return (await conn.execute(sa.select(sessions.c.subject_id).where(
                sessions.c.session_hash == session_hash, sessions.c.expires_at > now))).scalar()

    async def end_session(self, session_hash: bytes) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(sa.delete(sessions).where(sessions.c.session_hash == session_hash))

    async def _add(self, table: sa.Table, now: datetime, **row: object) -> None:
        """A new row; rows past their expiry open nothing, and are pruned as new ones are made."""
        async with self._database.engine.begin() as conn:
            await conn.execute(sa.delete(table).where(table.c.expires_at < now))
            await conn.execute(sa.insert(table).values(**row))

    async def end_sessions_of(self, subject_id: str) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(sa.delete(sessions).where(sessions.c.subject_id == subject_id))
