"""The CLC's records of VPC networking: VPCs, subnets, internet gateways, route tables, network
ACLs, security groups and their rules, network interfaces, public addresses.

Declared state only: nodes build the data plane from these rows (drivers/network/vpc_contract.py).
"""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mallee.db.base import Base, UTCDateTime


class Vpc(Base):
    __tablename__ = "vpcs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # vpc-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    cidr: Mapped[str] = mapped_column(String(18))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # The VXLAN network identifier of the VPC's segment between nodes: unique in the cloud.
    vni: Mapped[int] = mapped_column(Integer, unique=True)
    enable_dns_support: Mapped[bool] = mapped_column(Boolean, default=True)
    enable_dns_hostnames: Mapped[bool] = mapped_column(Boolean, default=False)
    tenancy: Mapped[str] = mapped_column(String(16), default="default")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class Subnet(Base):
    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # subnet-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id", ondelete="CASCADE"), index=True)
    zone: Mapped[str] = mapped_column(String(64))
    cidr: Mapped[str] = mapped_column(String(18))
    default_for_az: Mapped[bool] = mapped_column(Boolean, default=False)
    map_public_ip_on_launch: Mapped[bool] = mapped_column(Boolean, default=False)


class InternetGateway(Base):
    __tablename__ = "internet_gateways"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # igw-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    # At most one VPC; a VPC has at most one gateway (checked by AttachInternetGateway).
    vpc_id: Mapped[str | None] = mapped_column(ForeignKey("vpcs.id", ondelete="SET NULL"), index=True)


class RouteTable(Base):
    __tablename__ = "route_tables"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # rtb-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id", ondelete="CASCADE"), index=True)
    is_main: Mapped[bool] = mapped_column(Boolean, default=False)


class Route(Base):
    """A route of a table: to `local` (the VPC's own CIDR) or to an internet gateway."""

    __tablename__ = "routes"

    route_table_id: Mapped[str] = mapped_column(
        ForeignKey("route_tables.id", ondelete="CASCADE"), primary_key=True
    )
    destination: Mapped[str] = mapped_column(String(18), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(32))  # "local" | igw-…
    origin: Mapped[str] = mapped_column(String(32), default="CreateRoute")  # CreateRouteTable | CreateRoute


class RouteTableAssociation(Base):
    """A subnet's explicit route table (subnets without one use their VPC's main table)."""

    __tablename__ = "route_table_associations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # rtbassoc-…
    route_table_id: Mapped[str] = mapped_column(ForeignKey("route_tables.id", ondelete="CASCADE"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id", ondelete="CASCADE"), unique=True)


class NetworkAcl(Base):
    """A VPC's default network ACL: allow all, describable (custom ACLs are not supported)."""

    __tablename__ = "network_acls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # acl-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id", ondelete="CASCADE"), index=True)


class SecurityGroup(Base):
    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("vpc_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # sg-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(255))


class SecurityGroupRule(Base):
    __tablename__ = "security_group_rules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # sgr-…
    group_id: Mapped[str] = mapped_column(ForeignKey("security_groups.id", ondelete="CASCADE"), index=True)
    is_egress: Mapped[bool] = mapped_column(Boolean)
    protocol: Mapped[str] = mapped_column(String(8))  # tcp | udp | icmp | -1
    from_port: Mapped[int] = mapped_column(Integer)
    to_port: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str | None] = mapped_column(String(18))
    # A group of the same VPC: its members are the source (ingress) or destination (egress).
    referenced_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True
    )
    description: Mapped[str] = mapped_column(String(255), default="")


class NetworkInterface(Base):
    """An elastic network interface; an instance's primary one is created and deleted with it."""

    __tablename__ = "network_interfaces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # eni-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    vpc_id: Mapped[str] = mapped_column(ForeignKey("vpcs.id"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    instance_id: Mapped[str | None] = mapped_column(String(32), index=True)
    device_index: Mapped[int] = mapped_column(Integer, default=0)
    mac: Mapped[str] = mapped_column(String(17))
    private_ip: Mapped[str] = mapped_column(String(15))
    description: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="in-use")  # available | in-use
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=True)
    source_dest_check: Mapped[bool] = mapped_column(Boolean, default=True)
    group_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of sg-… (at most 5)


class PublicAddress(Base):
    """An address of the cloud's public pool in use: an elastic IP (an allocation the account keeps
    until it releases it) or an instance's automatic public IP (released with the instance)."""

    __tablename__ = "public_addresses"

    public_ip: Mapped[str] = mapped_column(String(15), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    allocation_id: Mapped[str | None] = mapped_column(String(32), unique=True)  # eipalloc-… (elastic only)
    association_id: Mapped[str | None] = mapped_column(String(32), unique=True)  # eipassoc-…
    interface_id: Mapped[str | None] = mapped_column(String(32), index=True)  # eni-… it maps to
    private_ip: Mapped[str | None] = mapped_column(String(15))
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
