"""Transaction ids on events and the relay's checkpoint, for the outbox relay to NATS.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Existing rows predate the relay: they get the current transaction's id, which
        # sorts them before every later write.
        op.execute("ALTER TABLE events ADD COLUMN transaction_id xid8 DEFAULT pg_current_xact_id()")
        # Wakes the relay (LISTEN consent_events) on every commit that appended events.
        op.execute("""
            CREATE FUNCTION consent_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('consent_events', ''); RETURN NULL; END $$""")
        op.execute("""
            CREATE TRIGGER events_notify AFTER INSERT ON events
            FOR EACH STATEMENT EXECUTE FUNCTION consent_events_notify()""")
    else:
        with op.batch_alter_table("events") as batch:
            batch.add_column(sa.Column("transaction_id", sa.BigInteger(), nullable=True))
    op.create_index("ix_events_transaction_id", "events", ["transaction_id", "position"])
    op.create_table(
        "relay_checkpoints",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_relay_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("relay_checkpoints")
    op.drop_index("ix_events_transaction_id", table_name="events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_notify ON events")
        op.execute("DROP FUNCTION consent_events_notify()")
        op.drop_column("events", "transaction_id")
    else:
        with op.batch_alter_table("events") as batch:
            batch.drop_column("transaction_id")
