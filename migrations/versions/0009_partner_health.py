"""Per-partner traffic by the minute, summed over every replica (GET /v1/partners/{id}/health).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_health",
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "bucket_start", "metric", "label", name="pk_partner_health"),
    )
    op.create_index("ix_partner_health_bucket_start", "partner_health", ["bucket_start"])


def downgrade() -> None:
    op.drop_index("ix_partner_health_bucket_start", table_name="partner_health")
    op.drop_table("partner_health")
