"""Reading the log after a cursor, in commit-safe order, for the parts that follow it from the database (the NATS
relay, the webhook dispatcher); and the cursors they keep in `relay_checkpoints`, one row per follower.

On PostgreSQL positions come from an identity column, so a transaction can commit a lower position after a
higher one is visible: reading by position would skip it. Every event carries its transaction's id (xid8),
and only events below the oldest running transaction are read (`pg_snapshot_xmin`): nothing can appear
there later. The cursor is (transaction id, position). SQLite has one writer: the position alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.tables import events, relay_checkpoints
from consent.adapters.write_record import published_pseudonym
from consent.app.ports import RecordedEvent
from consent.domain.events import event_from_data, without_personal

_PENDING_POSTGRES = sa.text("""
    SELECT position, event_id, stream_id, stream_version, type, data, metadata, recorded_at,
           transaction_id::text::bigint AS transaction_id
    FROM events
    WHERE (transaction_id, position) > (CAST(:transaction_id AS xid8), :position)
      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY transaction_id, position
    LIMIT :limit
""").columns(data=events.c.data.type, metadata=events.c.metadata.type, recorded_at=events.c.recorded_at.type,
             event_id=events.c.event_id.type)


def recorded_from_row(row) -> RecordedEvent:
    event = event_from_data(row.type, without_personal(row.data))  # never sent out: not even opened
    return RecordedEvent(event_id=row.event_id, stream_id=row.stream_id, stream_version=row.stream_version,
                         position=row.position, event=event, recorded_at=row.recorded_at,
                         pseudonym=published_pseudonym(event, row._mapping["metadata"]))


async def read_after(database: Database, transaction_id: int, position: int,
                     limit: int) -> list[tuple[int, RecordedEvent]]:
    """(transaction id, event) of the next events after the cursor, personal fields left out."""
    async with database.reading() as conn:
        if database.is_sqlite:
            rows = (await conn.execute(
                sa.select(events.c.position, events.c.event_id, events.c.stream_id, events.c.stream_version,
                          events.c.type, events.c.data, events.c.metadata, events.c.recorded_at,
                          sa.literal(0).label("transaction_id"))
                .where(events.c.position > position).order_by(events.c.position).limit(limit))).all()
        else:
            rows = (await conn.execute(_PENDING_POSTGRES, {
                "transaction_id": transaction_id, "position": position, "limit": limit})).all()
    return [(row.transaction_id, recorded_from_row(row)) for row in rows]


async def load_cursor(conn, name: str) -> tuple[int, int]:
    row = (await conn.execute(sa.select(relay_checkpoints.c.transaction_id, relay_checkpoints.c.position)
                              .where(relay_checkpoints.c.name == name))).first()
    return (row.transaction_id, row.position) if row else (0, 0)


def save_cursor(database: Database, name: str, transaction_id: int, position: int):
    """The statement that moves a follower's cursor (run it in the transaction that did the work)."""
    upsert = database.upsert(relay_checkpoints).values(
        name=name, transaction_id=transaction_id, position=position, updated_at=datetime.now(UTC))
    return upsert.on_conflict_do_update(
        index_elements=[relay_checkpoints.c.name],
        set_={"transaction_id": upsert.excluded.transaction_id, "position": upsert.excluded.position,
              "updated_at": upsert.excluded.updated_at})
