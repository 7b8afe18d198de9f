"""Tamper-evident log: a hash on every event, chained per stream, and checkpoints over positions.

Existing events are hashed in stream order, in batches, before the column becomes NOT NULL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from consent.domain.hash_chain import GENESIS, event_hash

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 2000

_events = sa.table(
    "events",
    sa.column("position", sa.BigInteger()), sa.column("event_id", sa.Uuid()), sa.column("stream_id", sa.String()),
    sa.column("stream_version", sa.Integer()), sa.column("type", sa.String()),
    sa.column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("recorded_at", sa.DateTime(timezone=True)), sa.column("hash", sa.LargeBinary()),
)


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("events", sa.Column("hash", sa.LargeBinary(32), nullable=True))
    _backfill(bind)
    if bind.dialect.name == "postgresql":
        op.alter_column("events", "hash", existing_type=sa.LargeBinary(32), nullable=False)
    else:
        # SQLite recreates the table for NOT NULL; keep AUTOINCREMENT so positions are never reused.
        with op.batch_alter_table("events", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.alter_column("hash", existing_type=sa.LargeBinary(32), nullable=False)
    op.create_table(
        "event_checkpoints",
        sa.Column("up_to_position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("up_to_position", name="pk_event_checkpoints"),
    )


def _backfill(bind: sa.Connection) -> None:
    """Hash every existing event, stream by stream, keyset-paginated over the unique (stream, version) index."""
    query = sa.select(_events).order_by(_events.c.stream_id, _events.c.stream_version).limit(BATCH)
    update = sa.update(_events).where(_events.c.position == sa.bindparam("at")).values(hash=sa.bindparam("h"))
    after: tuple[str, int] | None = None
    previous_stream, previous_hash = None, GENESIS
    while True:
        page = query if after is None else query.where(
            sa.tuple_(_events.c.stream_id, _events.c.stream_version) > sa.tuple_(*after))
        rows = bind.execute(page).all()
        if not rows:
            return
        updates = []
        for row in rows:
            if row.stream_id != previous_stream:
                previous_stream, previous_hash = row.stream_id, GENESIS
            previous_hash = event_hash(previous_hash, row.stream_id, row.stream_version, row.event_id, row.type,
                                       row.recorded_at, row.data, row.metadata)
            updates.append({"at": row.position, "h": previous_hash})
        bind.execute(update, updates)
        after = (rows[-1].stream_id, rows[-1].stream_version)


def downgrade() -> None:
    op.drop_table("event_checkpoints")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("events", "hash")
    else:
        with op.batch_alter_table("events", table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.drop_column("hash")
