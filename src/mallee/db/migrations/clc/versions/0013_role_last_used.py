"""When and where a role was last used: GetRole's RoleLastUsed (services/clc/tables.py
Role.last_used, last_used_region).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mallee.db.base import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("roles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_region", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("roles", schema=None) as batch_op:
        batch_op.drop_column("last_used_region")
        batch_op.drop_column("last_used")
