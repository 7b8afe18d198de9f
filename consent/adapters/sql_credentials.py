"""Partner credentials in the database."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.tables import partner_credentials


class SqlCredentialStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def add(self, client_id: str, partner_id: str, secret_hash: str, now: datetime) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(sa.insert(partner_credentials).values(
                client_id=client_id, partner_id=partner_id, secret_hash=secret_hash, created_at=now))

    async def find_active(self, client_id: str) -> tuple[str, str] | None:
        """(partner id, secret hash) of a credential that has not been revoked."""
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(partner_credentials.c.partner_id, partner_credentials.c.secret_hash)
                .where(partner_credentials.c.client_id == client_id, partner_credentials.c.revoked_at.is_(None))
            )).first()
        return (row.partner_id, row.secret_hash) if row else None

    async def revoke(self, partner_id: str, client_id: str | None, now: datetime) -> list[str]:
        """Revoke one credential of the partner, or all of them; returns the client ids revoked."""
        condition = sa.and_(partner_credentials.c.partner_id == partner_id,
                            partner_credentials.c.revoked_at.is_(None))
        if client_id is not None:
            condition = sa.and_(condition, partner_credentials.c.client_id == client_id)
        async with self._database.engine.begin() as conn:
            rows = await conn.execute(sa.update(partner_credentials).where(condition).values(revoked_at=now)
                                      .returning(partner_credentials.c.client_id))
            return list(rows.scalars())
