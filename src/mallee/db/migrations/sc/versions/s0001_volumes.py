"""The Storage Controller's volumes.

Revision ID: s0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "s0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sc_volumes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("size_gib", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_volumes")),
    )


def downgrade() -> None:
    op.drop_table("sc_volumes")
