"""IAM roles and instance profiles (services/clc/tables.py Role, InstanceProfile).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "roles",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("trust_policy", sa.Text(), nullable=False),
        sa.Column("max_session_duration", sa.Integer(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_roles_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_roles_account_id")),
    )
    op.create_index(op.f("ix_roles_account_id"), "roles", ["account_id"], unique=False)
    op.create_table(
        "instance_profiles",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("role_id", sa.String(length=32), nullable=True),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_instance_profiles_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["role_id"], ["roles.id"], name=op.f("fk_instance_profiles_role_id_roles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_profiles")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_instance_profiles_account_id")),
    )
    op.create_index(
        op.f("ix_instance_profiles_account_id"), "instance_profiles", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_instance_profiles_role_id"), "instance_profiles", ["role_id"], unique=False)


def downgrade() -> None:
    for column in ("role_id", "account_id"):
        op.drop_index(op.f(f"ix_instance_profiles_{column}"), table_name="instance_profiles")
    op.drop_table("instance_profiles")
    op.drop_index(op.f("ix_roles_account_id"), table_name="roles")
    op.drop_table("roles")
