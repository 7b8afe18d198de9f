"""Partners' webhook endpoints in the database: each change with its event (the audit trail) in one transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.adapters.tables import webhooks
from consent.adapters.webhook_ledger import notify_senders
from consent.app.ports import RecordedEvent
from consent.domain.events import Event
from consent.domain.streams import WEBHOOK, stream_of

_c = webhooks.c


class SqlWebhooks:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def add(self, row: dict[str, Any], event: Event, actor: str) -> list[RecordedEvent]:
        async with SqlUnitOfWork(self._database) as uow:
            recorded = await uow.log.append(stream_of(WEBHOOK, row["id"]), 0, [event], actor)
            await (await uow.connection()).execute(sa.insert(webhooks).values(**row))
            await uow.commit()
        return recorded

    async def list(self, partner_id: str) -> list[Any]:
        async with self._database.reading() as conn:
            return list((await conn.execute(
                sa.select(webhooks).where(_c.partner_id == partner_id).order_by(_c.created_at, _c.id))).all())

    async def get(self, partner_id: str, webhook_id: str) -> Any | None:
        async with self._database.reading() as conn:
            return (await conn.execute(
                sa.select(webhooks).where(_c.partner_id == partner_id, _c.id == webhook_id))).first()

    async def enabled(self) -> list[Any]:
        """Every enabled endpoint (the dispatcher routes to these), secrets left out."""
        async with self._database.reading() as conn:
            return list((await conn.execute(
                sa.select(_c.id, _c.partner_id, _c.events, _c.created_at).where(_c.enabled.is_(True)))).all())

    async def change(self, partner_id: str, webhook_id: str, values: dict[str, Any], event: Event | None,
                     actor: str) -> list[RecordedEvent] | None:
        """Update the row, or delete it when `values` is empty, and record `event`; None if there is no such row."""
        where = sa.and_(_c.partner_id == partner_id, _c.id == webhook_id)
        async with SqlUnitOfWork(self._database) as uow:
            conn = await uow.connection()
            statement = sa.update(webhooks).values(**values) if values else sa.delete(webhooks)
            statement = statement.where(where)
            if (await conn.execute(statement)).rowcount == 0:
                return None
            if values.get("enabled"):
                await notify_senders(conn)  # enabled again: what waited for it may go
            recorded: list[RecordedEvent] = []
            if event is not None:
                stream_id = stream_of(WEBHOOK, webhook_id)
                recorded = await uow.log.append(stream_id, await uow.log.stream_version(stream_id), [event], actor)
            await uow.commit()
        return recorded
