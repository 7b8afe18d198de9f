"""Partner credentials and revoked tokens in the database, each change with its event in one transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.adapters.tables import partner_credentials, revoked_tokens
from consent.app.partner_access import StoredCredential
from consent.app.ports import RecordedEvent
from consent.domain.events import CredentialIssued, CredentialRevoked, TokenRevoked
from consent.domain.streams import CREDENTIAL, TOKEN, stream_of

_ACTIVE = partner_credentials.c.revoked_at.is_(None)


class SqlCredentialStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def add(self, credential: StoredCredential, event: CredentialIssued, actor: str) -> list[RecordedEvent]:
        async with SqlUnitOfWork(self._database) as uow:
            recorded = await uow.log.append(stream_of(CREDENTIAL, credential.client_id), 0, [event], actor)
            conn = await uow.connection()
            await conn.execute(sa.insert(partner_credentials).values(
                client_id=credential.client_id, partner_id=credential.partner_id,
                secret_hash=credential.secret_hash, created_at=event.occurred_at,
                scopes=list(credential.scopes), expires_at=credential.expires_at))
            await uow.commit()
        return recorded

    async def find_active(self, client_id: str, now: datetime) -> StoredCredential | None:
        """A credential that is neither revoked nor past the end of a rotation's overlap."""
        c = partner_credentials.c
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(c.client_id, c.partner_id, c.secret_hash, c.scopes, c.expires_at)
                .where(c.client_id == client_id, _ACTIVE, sa.or_(c.expires_at.is_(None), c.expires_at > now))
            )).first()
        if row is None:
            return None
        return StoredCredential(client_id=row.client_id, partner_id=row.partner_id, secret_hash=row.secret_hash,
                                scopes=tuple(row.scopes) if row.scopes is not None else None,
                                expires_at=row.expires_at)

    async def end(self, event: CredentialRevoked, actor: str) -> list[RecordedEvent]:
        """Revoke a credential now, or give it an end (a rotation); nothing if it is not active."""
        c = partner_credentials.c
        active = sa.and_(c.client_id == event.client_id, c.partner_id == event.partner_id, _ACTIVE,
                         sa.or_(c.expires_at.is_(None), c.expires_at > event.occurred_at))
        values = ({"revoked_at": event.occurred_at} if event.effective_at <= event.occurred_at
                  else {"expires_at": event.effective_at})
        async with SqlUnitOfWork(self._database) as uow:
            conn = await uow.connection()
            ended = await conn.execute(sa.update(partner_credentials).where(active).values(**values))
            if ended.rowcount == 0:
                return []
            stream_id = stream_of(CREDENTIAL, event.client_id)
            recorded = await uow.log.append(stream_id, await uow.log.stream_version(stream_id), [event], actor)
            await uow.commit()
        return recorded

    async def revoke_all(self, partner_id: str, now: datetime) -> list[str]:
        """Every credential of a terminated partner; returns the client ids revoked."""
        async with self._database.engine.begin() as conn:
            rows = await conn.execute(
                sa.update(partner_credentials)
                .where(partner_credentials.c.partner_id == partner_id, _ACTIVE).values(revoked_at=now)
                .returning(partner_credentials.c.client_id))
            return list(rows.scalars())

    async def revoke_token(self, event: TokenRevoked, actor: str) -> list[RecordedEvent]:
        """Nothing if the token was revoked before."""
        async with SqlUnitOfWork(self._database) as uow:
            upsert = self._database.upsert(revoked_tokens).values(
                token_id=event.token_id, partner_id=event.partner_id, expires_at=event.expires_at)
            conn = await uow.connection()
            inserted = await conn.execute(upsert.on_conflict_do_nothing(index_elements=["token_id"]))
            if inserted.rowcount == 0:
                return []
            recorded = await uow.log.append(stream_of(TOKEN, event.token_id), 0, [event], actor)
            # Tokens past their expiry are refused anyway: no need to remember their revocation.
            await conn.execute(sa.delete(revoked_tokens).where(revoked_tokens.c.expires_at < event.occurred_at))
            await uow.commit()
        return recorded

    async def revoked_token_ids(self, now: datetime) -> dict[str, datetime]:
        async with self._database.engine.connect() as conn:
            rows = await conn.execute(sa.select(revoked_tokens.c.token_id, revoked_tokens.c.expires_at)
                                      .where(revoked_tokens.c.expires_at > now))
            return {row.token_id: row.expires_at for row in rows}
