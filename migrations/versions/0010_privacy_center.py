"""The privacy center's entry links and sessions, stored only as hashes, shared by every replica.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_center_links",
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name="pk_privacy_center_links"),
    )
    op.create_index("ix_privacy_center_links_expires_at", "privacy_center_links", ["expires_at"])
    op.create_table(
        "privacy_center_sessions",
        sa.Column("session_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_privacy_center_sessions"),
    )
    op.create_index("ix_privacy_center_sessions_subject_id", "privacy_center_sessions", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_privacy_center_sessions_subject_id", table_name="privacy_center_sessions")
    op.drop_table("privacy_center_sessions")
    op.drop_index("ix_privacy_center_links_expires_at", table_name="privacy_center_links")
    op.drop_table("privacy_center_links")
