"""Pairwise pseudonyms: a partner's `identifiers` mode, and which subject each pseudonym stands for.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as table:
        table.add_column(sa.Column("identifiers", sa.String(16), nullable=False, server_default="public"))
    op.create_table(
        "pseudonyms",
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("pseudonym", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "pseudonym", name="pk_pseudonyms"),
    )
    op.create_index("ix_pseudonyms_subject_id", "pseudonyms", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_pseudonyms_subject_id", table_name="pseudonyms")
    op.drop_table("pseudonyms")
    with op.batch_alter_table("partners") as table:
        table.drop_column("identifiers")
