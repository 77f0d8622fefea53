"""The node an administrator's evacuation moves an instance off (services/clc/tables.py
Instance.evacuating_from; services/clc/evacuation.py).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evacuating_from", sa.String(255), nullable=False, server_default=""))
    # The empty default was for the rows already there only (as the model has none).
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.alter_column("evacuating_from", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("evacuating_from")
