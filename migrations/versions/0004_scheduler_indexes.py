"""Indexes for the scheduler: grants falling due, grants by partner.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    granted = sa.text("status = 'granted'")
    op.create_index("ix_consents_due", "consents", ["expires_at"], postgresql_where=granted, sqlite_where=granted)
    op.create_index("ix_consents_partner_id", "consents", ["partner_id"])


def downgrade() -> None:
    op.drop_index("ix_consents_partner_id", table_name="consents")
    op.drop_index("ix_consents_due", table_name="consents")
