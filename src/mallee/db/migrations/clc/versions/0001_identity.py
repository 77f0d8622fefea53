"""Identity, service registry, zones and instance types.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("is_system", sa.Boolean(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "clusters",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("zone", name=op.f("pk_clusters")),
        sa.UniqueConstraint("name", name=op.f("uq_clusters_name")),
    )
    op.create_table(
        "inline_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner_kind", sa.String(length=8), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inline_policies")),
        sa.UniqueConstraint("owner_kind", "owner_id", "name", name=op.f("uq_inline_policies_owner_kind")),
    )
    op.create_index(op.f("ix_inline_policies_owner_id"), "inline_policies", ["owner_id"], unique=False)
    op.create_table(
        "instance_types",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("disk_gib", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_instance_types")),
    )
    op.create_table(
        "policy_attachments",
        sa.Column("owner_kind", sa.String(length=8), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("policy_arn", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("owner_kind", "owner_id", "policy_arn", name=op.f("pk_policy_attachments")),
    )
    op.create_table(
        "services",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("partition", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("last_seen", mallee.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_services")),
    )
    op.create_table(
        "groups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_groups_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_groups_account_id")),
    )
    op.create_index(op.f("ix_groups_account_id"), "groups", ["account_id"], unique=False)
    op.create_table(
        "managed_policies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_managed_policies_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_managed_policies")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_managed_policies_account_id")),
    )
    op.create_index(op.f("ix_managed_policies_account_id"), "managed_policies", ["account_id"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_users_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_users_account_id")),
    )
    op.create_index(op.f("ix_users_account_id"), "users", ["account_id"], unique=False)
    op.create_table(
        "access_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("session_token", sa.String(length=256), nullable=True),
        sa.Column("expires", mallee.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used", mallee.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_access_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_access_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_keys")),
        sa.UniqueConstraint("session_token", name=op.f("uq_access_keys_session_token")),
    )
    op.create_index(op.f("ix_access_keys_account_id"), "access_keys", ["account_id"], unique=False)
    op.create_index(op.f("ix_access_keys_user_id"), "access_keys", ["user_id"], unique=False)
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )


def downgrade() -> None:
    op.drop_table("group_members")
    op.drop_index(op.f("ix_access_keys_user_id"), table_name="access_keys")
    op.drop_index(op.f("ix_access_keys_account_id"), table_name="access_keys")
    op.drop_table("access_keys")
    op.drop_index(op.f("ix_users_account_id"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_managed_policies_account_id"), table_name="managed_policies")
    op.drop_table("managed_policies")
    op.drop_index(op.f("ix_groups_account_id"), table_name="groups")
    op.drop_table("groups")
    op.drop_table("services")
    op.drop_table("policy_attachments")
    op.drop_table("instance_types")
    op.drop_index(op.f("ix_inline_policies_owner_id"), table_name="inline_policies")
    op.drop_table("inline_policies")
    op.drop_table("clusters")
    op.drop_table("accounts")
