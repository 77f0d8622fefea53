"""Walrus: an upload's checksum setting holds the algorithm and the checksum type
("crc64nvme:FULL_OBJECT", 21 characters), more than its 16; SQLite never enforced the length,
PostgreSQL refused such uploads.

Revision ID: w0004
Revises: w0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "w0004"
down_revision = "w0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # a declared length is not enforced there; no table rebuild for nothing
    op.alter_column("uploads", "checksum_algorithm", type_=sa.String(32), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("uploads", "checksum_algorithm", type_=sa.String(16), existing_nullable=False)
