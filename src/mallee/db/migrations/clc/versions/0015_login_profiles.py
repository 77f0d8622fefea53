"""IAM login profiles (a user's console password, kept as a salted hash, and the hashes of the
ones before it) and the account's password policy (services/clc/tables.py User.password_*,
Account.password_policy; services/clc/iam/login_profiles.py, password_policy.py).

Columns only added, never a table rebuilt: on SQLite a rebuild of `users` drops the table, and with
foreign keys on that deletes the access keys and group memberships that cascade from it.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mallee.db.base import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("password_hash", sa.String(length=255), nullable=True))
    op.add_column("users", sa.Column("password_history", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("password_created", UTCDateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("password_changed", UTCDateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("password_reset_required", sa.Boolean(), nullable=True))
    op.add_column("accounts", sa.Column("password_policy", sa.Text(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN (SQLite 3.35 and later), for the same reason as above.
    op.drop_column("accounts", "password_policy")
    for column in (
        "password_reset_required",
        "password_changed",
        "password_created",
        "password_history",
        "password_hash",
    ):
        op.drop_column("users", column)
