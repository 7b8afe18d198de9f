"""An index of active grants by purpose and version: the impact of a catalog change without a scan.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_consents_granted_purpose", "consents", ["purpose_id", "purpose_version"],
                    postgresql_where=sa.text("status = 'granted'"), sqlite_where=sa.text("status = 'granted'"),
                    postgresql_include=["subject_id", "partner_id", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_consents_granted_purpose", table_name="consents")
