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
    # Added in place, and the empty default kept (the model declares it too): dropping a default
    # on SQLite rebuilds the table, and dropping `instances` with foreign keys on deletes the rows
    # of every table that cascades from it (metadata options, interfaces, attachments).
    op.add_column(
        "instances", sa.Column("evacuating_from", sa.String(255), nullable=False, server_default="")
    )


def downgrade() -> None:
    op.drop_column("instances", "evacuating_from")  # ALTER TABLE … DROP COLUMN: no rebuild either
