"""VPC networking: VPCs, subnets, internet gateways, route tables, network ACLs, security groups
and rules, network interfaces, public addresses; instances name their VPC and subnet.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mallee.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "public_addresses",
        sa.Column("public_ip", sa.String(length=15), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("allocation_id", sa.String(length=32), nullable=True),
        sa.Column("association_id", sa.String(length=32), nullable=True),
        sa.Column("interface_id", sa.String(length=32), nullable=True),
        sa.Column("private_ip", sa.String(length=15), nullable=True),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_public_addresses_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("public_ip", name=op.f("pk_public_addresses")),
        sa.UniqueConstraint("allocation_id", name=op.f("uq_public_addresses_allocation_id")),
        sa.UniqueConstraint("association_id", name=op.f("uq_public_addresses_association_id")),
    )
    op.create_index(op.f("ix_public_addresses_account_id"), "public_addresses", ["account_id"], unique=False)
    op.create_index(
        op.f("ix_public_addresses_interface_id"), "public_addresses", ["interface_id"], unique=False
    )
    op.create_table(
        "vpcs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("cidr", sa.String(length=18), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("vni", sa.Integer(), nullable=False),
        sa.Column("enable_dns_support", sa.Boolean(), nullable=False),
        sa.Column("enable_dns_hostnames", sa.Boolean(), nullable=False),
        sa.Column("tenancy", sa.String(length=16), nullable=False),
        sa.Column("created", mallee.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_vpcs_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vpcs")),
        sa.UniqueConstraint("vni", name=op.f("uq_vpcs_vni")),
    )
    op.create_index(op.f("ix_vpcs_account_id"), "vpcs", ["account_id"], unique=False)
    op.create_table(
        "internet_gateways",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_internet_gateways_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vpc_id"], ["vpcs.id"], name=op.f("fk_internet_gateways_vpc_id_vpcs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_internet_gateways")),
    )
    op.create_index(
        op.f("ix_internet_gateways_account_id"), "internet_gateways", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_internet_gateways_vpc_id"), "internet_gateways", ["vpc_id"], unique=False)
    op.create_table(
        "network_acls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_network_acls_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vpc_id"], ["vpcs.id"], name=op.f("fk_network_acls_vpc_id_vpcs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_acls")),
    )
    op.create_index(op.f("ix_network_acls_account_id"), "network_acls", ["account_id"], unique=False)
    op.create_index(op.f("ix_network_acls_vpc_id"), "network_acls", ["vpc_id"], unique=False)
    op.create_table(
        "route_tables",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=False),
        sa.Column("is_main", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_route_tables_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vpc_id"], ["vpcs.id"], name=op.f("fk_route_tables_vpc_id_vpcs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_tables")),
    )
    op.create_index(op.f("ix_route_tables_account_id"), "route_tables", ["account_id"], unique=False)
    op.create_index(op.f("ix_route_tables_vpc_id"), "route_tables", ["vpc_id"], unique=False)
    op.create_table(
        "security_groups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_security_groups_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vpc_id"], ["vpcs.id"], name=op.f("fk_security_groups_vpc_id_vpcs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_groups")),
        sa.UniqueConstraint("vpc_id", "name", name=op.f("uq_security_groups_vpc_id")),
    )
    op.create_index(op.f("ix_security_groups_account_id"), "security_groups", ["account_id"], unique=False)
    op.create_index(op.f("ix_security_groups_vpc_id"), "security_groups", ["vpc_id"], unique=False)
    op.create_table(
        "subnets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("cidr", sa.String(length=18), nullable=False),
        sa.Column("default_for_az", sa.Boolean(), nullable=False),
        sa.Column("map_public_ip_on_launch", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_subnets_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["vpc_id"], ["vpcs.id"], name=op.f("fk_subnets_vpc_id_vpcs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subnets")),
    )
    op.create_index(op.f("ix_subnets_account_id"), "subnets", ["account_id"], unique=False)
    op.create_index(op.f("ix_subnets_vpc_id"), "subnets", ["vpc_id"], unique=False)
    op.create_table(
        "network_interfaces",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("vpc_id", sa.String(length=32), nullable=False),
        sa.Column("subnet_id", sa.String(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=True),
        sa.Column("device_index", sa.Integer(), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("private_ip", sa.String(length=15), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("delete_on_termination", sa.Boolean(), nullable=False),
        sa.Column("source_dest_check", sa.Boolean(), nullable=False),
        sa.Column("group_ids", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_network_interfaces_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"], ["subnets.id"], name=op.f("fk_network_interfaces_subnet_id_subnets")
        ),
        sa.ForeignKeyConstraint(["vpc_id"], ["vpcs.id"], name=op.f("fk_network_interfaces_vpc_id_vpcs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_interfaces")),
    )
    op.create_index(
        op.f("ix_network_interfaces_account_id"), "network_interfaces", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_network_interfaces_instance_id"), "network_interfaces", ["instance_id"], unique=False
    )
    op.create_index(
        op.f("ix_network_interfaces_subnet_id"), "network_interfaces", ["subnet_id"], unique=False
    )
    op.create_index(op.f("ix_network_interfaces_vpc_id"), "network_interfaces", ["vpc_id"], unique=False)
    op.create_table(
        "route_table_associations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("route_table_id", sa.String(length=32), nullable=False),
        sa.Column("subnet_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_table_id"],
            ["route_tables.id"],
            name=op.f("fk_route_table_associations_route_table_id_route_tables"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"],
            ["subnets.id"],
            name=op.f("fk_route_table_associations_subnet_id_subnets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_table_associations")),
        sa.UniqueConstraint("subnet_id", name=op.f("uq_route_table_associations_subnet_id")),
    )
    op.create_index(
        op.f("ix_route_table_associations_route_table_id"),
        "route_table_associations",
        ["route_table_id"],
        unique=False,
    )
    op.create_table(
        "routes",
        sa.Column("route_table_id", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=18), nullable=False),
        sa.Column("gateway_id", sa.String(length=32), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_table_id"],
            ["route_tables.id"],
            name=op.f("fk_routes_route_table_id_route_tables"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("route_table_id", "destination", name=op.f("pk_routes")),
    )
    op.create_table(
        "security_group_rules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("is_egress", sa.Boolean(), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("from_port", sa.Integer(), nullable=False),
        sa.Column("to_port", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=18), nullable=True),
        sa.Column("referenced_group_id", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["security_groups.id"],
            name=op.f("fk_security_group_rules_group_id_security_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["referenced_group_id"],
            ["security_groups.id"],
            name=op.f("fk_security_group_rules_referenced_group_id_security_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_group_rules")),
    )
    op.create_index(
        op.f("ix_security_group_rules_group_id"), "security_group_rules", ["group_id"], unique=False
    )
    op.create_index(
        op.f("ix_security_group_rules_referenced_group_id"),
        "security_group_rules",
        ["referenced_group_id"],
        unique=False,
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("default_vpc_made", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.alter_column("default_vpc_made", server_default=None)
    # Instances launched before VPCs existed keep running as they were (EDGE): empty vpc_id.
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vpc_id", sa.String(length=32), server_default="", nullable=False))
        batch_op.add_column(sa.Column("subnet_id", sa.String(length=32), server_default="", nullable=False))
        batch_op.create_index(batch_op.f("ix_instances_vpc_id"), ["vpc_id"], unique=False)
    with op.batch_alter_table("instances", schema=None) as batch_op:  # the default was for old rows only
        batch_op.alter_column("vpc_id", server_default=None)
        batch_op.alter_column("subnet_id", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("default_vpc_made")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_vpc_id"))
        batch_op.drop_column("subnet_id")
        batch_op.drop_column("vpc_id")
    op.drop_index(op.f("ix_security_group_rules_referenced_group_id"), table_name="security_group_rules")
    op.drop_index(op.f("ix_security_group_rules_group_id"), table_name="security_group_rules")
    op.drop_table("security_group_rules")
    op.drop_table("routes")
    op.drop_index(op.f("ix_route_table_associations_route_table_id"), table_name="route_table_associations")
    op.drop_table("route_table_associations")
    op.drop_index(op.f("ix_network_interfaces_vpc_id"), table_name="network_interfaces")
    op.drop_index(op.f("ix_network_interfaces_subnet_id"), table_name="network_interfaces")
    op.drop_index(op.f("ix_network_interfaces_instance_id"), table_name="network_interfaces")
    op.drop_index(op.f("ix_network_interfaces_account_id"), table_name="network_interfaces")
    op.drop_table("network_interfaces")
    op.drop_index(op.f("ix_subnets_vpc_id"), table_name="subnets")
    op.drop_index(op.f("ix_subnets_account_id"), table_name="subnets")
    op.drop_table("subnets")
    op.drop_index(op.f("ix_security_groups_vpc_id"), table_name="security_groups")
    op.drop_index(op.f("ix_security_groups_account_id"), table_name="security_groups")
    op.drop_table("security_groups")
    op.drop_index(op.f("ix_route_tables_vpc_id"), table_name="route_tables")
    op.drop_index(op.f("ix_route_tables_account_id"), table_name="route_tables")
    op.drop_table("route_tables")
    op.drop_index(op.f("ix_network_acls_vpc_id"), table_name="network_acls")
    op.drop_index(op.f("ix_network_acls_account_id"), table_name="network_acls")
    op.drop_table("network_acls")
    op.drop_index(op.f("ix_internet_gateways_vpc_id"), table_name="internet_gateways")
    op.drop_index(op.f("ix_internet_gateways_account_id"), table_name="internet_gateways")
    op.drop_table("internet_gateways")
    op.drop_index(op.f("ix_vpcs_account_id"), table_name="vpcs")
    op.drop_table("vpcs")
    op.drop_index(op.f("ix_public_addresses_interface_id"), table_name="public_addresses")
    op.drop_index(op.f("ix_public_addresses_account_id"), table_name="public_addresses")
    op.drop_table("public_addresses")
