"""Partner client credentials.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_credentials",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name="pk_partner_credentials"),
    )
    op.create_index("ix_partner_credentials_partner_id", "partner_credentials", ["partner_id"])


def downgrade() -> None:
    op.drop_index("ix_partner_credentials_partner_id", table_name="partner_credentials")
    op.drop_table("partner_credentials")
