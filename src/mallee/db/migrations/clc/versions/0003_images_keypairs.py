"""Key pairs, images, launch permissions and EC2 tags.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_pairs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("key_type", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_key_pairs_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_pairs")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_key_pairs_account_id")),
    )
    op.create_index(op.f("ix_key_pairs_account_id"), "key_pairs", ["account_id"], unique=False)
    op.create_table(
        "images",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("image_type", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=1024), nullable=False),
        sa.Column("source_format", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("architecture", sa.String(length=16), nullable=False),
        sa.Column("kernel_id", sa.String(length=32), nullable=True),
        sa.Column("ramdisk_id", sa.String(length=32), nullable=True),
        sa.Column("virtualization_type", sa.String(length=16), nullable=False),
        sa.Column("root_device_name", sa.String(length=64), nullable=True),
        sa.Column("block_device_mappings", sa.Text(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_images_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_images_account_id")),
    )
    op.create_index(op.f("ix_images_account_id"), "images", ["account_id"], unique=False)
    op.create_table(
        "launch_permissions",
        sa.Column("image_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_launch_permissions_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "account_id", name=op.f("pk_launch_permissions")),
    )
    op.create_table(
        "tags",
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_tags_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("resource_id", "key", name=op.f("pk_tags")),
    )
    op.create_index(op.f("ix_tags_account_id"), "tags", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tags_account_id"), table_name="tags")
    op.drop_table("tags")
    op.drop_table("launch_permissions")
    op.drop_index(op.f("ix_images_account_id"), table_name="images")
    op.drop_table("images")
    op.drop_index(op.f("ix_key_pairs_account_id"), table_name="key_pairs")
    op.drop_table("key_pairs")
