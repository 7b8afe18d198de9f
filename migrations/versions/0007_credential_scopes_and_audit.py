"""Credential scopes and rotation, revoked access tokens, the audit index, per-partner rate limits.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("partner_credentials") as table:
        table.add_column(sa.Column("scopes", Json, nullable=True))
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "revoked_tokens",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_id", name="pk_revoked_tokens"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])
    with op.batch_alter_table("partners") as table:
        table.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.create_index("ix_events_audit", "events", ["position"],
                    postgresql_where=sa.text("(metadata ->> 'actor') NOT IN ('subject', 'system')"),
                    sqlite_where=sa.text("json_extract(metadata, '$.actor') NOT IN ('subject', 'system')"))


def downgrade() -> None:
    op.drop_index("ix_events_audit", table_name="events")
    with op.batch_alter_table("partners") as table:
        table.drop_column("rate_limit")
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("partner_credentials") as table:
        table.drop_column("expires_at")
        table.drop_column("scopes")
