"""Role sessions (STS AssumeRole): temporary keys that act as a role (services/clc/tables.py
AccessKey.role_id, role_session_name, session_policy, session_policy_arns).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("role_session_name", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("session_policy", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("session_policy_arns", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_access_keys_role_id"), ["role_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_access_keys_role_id_roles"), "roles", ["role_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_access_keys_role_id_roles"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_access_keys_role_id"))
        batch_op.drop_column("session_policy_arns")
        batch_op.drop_column("session_policy")
        batch_op.drop_column("role_session_name")
        batch_op.drop_column("role_id")
