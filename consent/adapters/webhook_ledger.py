"""The delivery ledger (`webhook_deliveries`): what the dispatcher enqueues, what a sender claims and settles,
and what partners read back.

A sender claims due deliveries for a lease (`next_attempt_at` moved past the attempt's end) in a transaction
of its own, with FOR UPDATE SKIP LOCKED on PostgreSQL: one replica attempts each delivery, and a replica
killed mid-attempt leaves it to another once the lease runs out. Only the oldest undelivered delivery of each
(webhook, ordering key) is ever due, so one subject's events arrive in order while others' go on.

Delivered rows are pruned once their last attempt is old enough (the scheduler, CONSENT_WEBHOOK_LEDGER_DAYS);
dead ones stay, for the partner to look at and retry, and so do those still to deliver.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.tables import events, webhook_deliveries, webhooks

UNDELIVERED = ("pending", "failed")
PRUNE_BATCH = 1000  # rows examined a transaction: SQLite's one writer is held that long at most
SENDERS_CHANNEL = "consent_webhooks"
_NOTIFY = sa.text(f"SELECT pg_notify('{SENDERS_CHANNEL}', '')")
_d = webhook_deliveries.alias("d")
_e = webhook_deliveries.alias("e")
_w = webhooks
_EARLIER_UNDELIVERED = sa.exists().where(
    _e.c.webhook_id == _d.c.webhook_id, _e.c.ordering_key == _d.c.ordering_key, _e.c.status.in_(UNDELIVERED),
    sa.tuple_(_e.c.position, _e.c.id) < sa.tuple_(_d.c.position, _d.c.id))
_LEDGER_COLUMNS = (webhook_deliveries.c.id, webhook_deliveries.c.event_id, webhook_deliveries.c.type,
                   webhook_deliveries.c.position, webhook_deliveries.c.status, webhook_deliveries.c.attempts,
                   webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.created_at)


class DeliveryLedger:
    def __init__(self, database: Database) -> None:
        self._database = database

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (SQLite's one writer taken in turn with this process's other writes).

        On PostgreSQL its commit does not wait for the WAL flush: the log is what must not be lost, and it
        is. A crash may forget the last moments of dispatching, claiming and settling; then events are
        dispatched again from the cursor as it was and delivered again under the same `webhook-id`: at least
        once, as promised. Waiting for the flush put a disk write between a commit and its webhook, twice."""
        async with self._database.writing() as conn:
            if not self._database.is_sqlite:
                await conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            yield conn

    async def claim(self, now: datetime, limit: int, lease_until: datetime) -> list[Any]:
        """Due deliveries, each the oldest undelivered one of its (webhook, key), leased to this process."""
        query = (sa.select(_d.c.id, _d.c.webhook_id, _d.c.event_id, _d.c.body, _d.c.attempts, _w.c.partner_id,
                           _w.c.url, _w.c.secret, _w.c.previous_secret, _w.c.previous_valid_until,
                           _w.c.master_key_id)
                 .join(_w, _w.c.id == _d.c.webhook_id)
                 .where(_w.c.enabled.is_(True), _d.c.status.in_(UNDELIVERED), _d.c.next_attempt_at <= now,
                        ~_EARLIER_UNDELIVERED)
                 .order_by(_d.c.next_attempt_at, _d.c.id).limit(limit))
        if not self._database.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=_d)
        async with self.transaction() as conn:
            rows = list((await conn.execute(query)).all())
            if rows:
                await conn.execute(sa.update(webhook_deliveries)
                                   .where(webhook_deliveries.c.id.in_([row.id for row in rows]))
                                   .values(next_attempt_at=lease_until))
        return rows

    async def settle(self, outcomes: list[dict[str, Any]]) -> None:
        """Attempts' outcomes, `{delivery_id, status, attempts, next_attempt_at}` each, in one statement."""
        c = webhook_deliveries.c
        async with self.transaction() as conn:
            await conn.execute(sa.update(webhook_deliveries).where(c.id == sa.bindparam("delivery_id")).values(
                status=sa.bindparam("status"), attempts=sa.bindparam("attempts", type_=c.attempts.type),
                next_attempt_at=sa.bindparam("next_attempt_at", type_=c.next_attempt_at.type)), outcomes)

    async def page(self, webhook_id: str, status: str | None, after: int, limit: int) -> list[Any]:
        c = webhook_deliveries.c
        query = sa.select(*_LEDGER_COLUMNS).where(c.webhook_id == webhook_id, c.id > after)
        if status is not None:
            query = query.where(c.status == status)
        async with self._database.reading() as conn:
            return list((await conn.execute(query.order_by(c.id).limit(limit))).all())

    async def requeue(self, webhook_id: str, delivery_id: int, now: datetime) -> Any | None:
        """A delivery attempted again as soon as possible, whatever its state; None if there is none."""
        c = webhook_deliveries.c
        async with self.transaction() as conn:
            changed = await conn.execute(sa.update(webhook_deliveries)
                                         .where(c.webhook_id == webhook_id, c.id == delivery_id)
                                         .values(status="pending", next_attempt_at=now))
            if changed.rowcount == 0:
                return None
            await notify_senders(conn)
            return (await conn.execute(sa.select(*_LEDGER_COLUMNS).where(c.id == delivery_id))).one()

    async def prune_delivered(self, before: datetime, batch: int = PRUNE_BATCH) -> int:
        """Deletes delivered deliveries last attempted before `before`; how many went.

        The ledger is walked in id order from its start, a batch a transaction, and only as far as the first
        row made after `before` (ids grow with `created_at`: what follows is newer): a round reads the old part
        and one batch, never the whole table. The last attempt is in the `attempts` JSON, read here so that
        both databases take the same statements; a delivery retried meanwhile is pending again, and stays."""
        c = webhook_deliveries.c
        pruned, after = 0, 0
        while True:
            async with self.transaction() as conn:
                rows = (await conn.execute(sa.select(c.id, c.status, c.attempts, c.created_at)
                                           .where(c.id > after).order_by(c.id).limit(batch))).all()
                old = [row.id for row in rows if row.status == "delivered" and row.created_at < before
                       and _last_attempt(row) < before]
                if old:
                    deleted = await conn.execute(sa.delete(webhook_deliveries)
                                                 .where(c.id.in_(old), c.status == "delivered"))
                    pruned += deleted.rowcount
            if len(rows) < batch or rows[-1].created_at >= before:
                return pruned
            after = rows[-1].id

    async def undelivered_events(self, webhook_id: str) -> set[Any]:
        c = webhook_deliveries.c
        async with self._database.reading() as conn:
            return set((await conn.execute(sa.select(c.event_id).where(
                c.webhook_id == webhook_id, c.status.in_(UNDELIVERED)))).scalars())


def _last_attempt(row: Any) -> datetime:
    attempts = row.attempts
    return datetime.fromisoformat(attempts[-1]["at"]) if attempts else row.created_at


async def enqueue(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(sa.insert(webhook_deliveries), rows)
        await notify_senders(conn)


async def notify_senders(conn: AsyncConnection) -> None:
    """Senders in other processes (consent/adapters/webhook_process.py) listen: woken at the commit, they need
    not wait for their next look at the ledger."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_NOTIFY)


async def grants_before(conn: AsyncConnection, stream_id: str, position: int) -> set[tuple[str | None, str]]:
    """(partner or None, purpose) of every grant in a subject's stream before `position`: whom an erasure
    concerns, once the read models have forgotten them."""
    rows = await conn.execute(sa.select(events.c.data).where(
        events.c.stream_id == stream_id, events.c.type == "subject.granted", events.c.position < position))
    return {(data.get("partner"), data["purpose"]) for (data,) in rows}
