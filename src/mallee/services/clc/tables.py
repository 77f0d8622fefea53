"""The CLC's database of record: identity, the service registry, zones and instance types."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mallee.db.base import Base, UTCDateTime


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    # Eucalyptus' account name doubles as the IAM account alias (CreateAccountAlias renames it).
    name: Mapped[str] = mapped_column(String(63), unique=True)
    is_system: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    # Object-storage quotas Walrus enforces (None: unlimited).
    max_objects: Mapped[int | None] = mapped_column(BigInteger)
    max_bytes: Mapped[int | None] = mapped_column(BigInteger)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # AIDA…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512), default="/")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {Key, Value}


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # AGPA…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(512), default="/")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class AccessKey(Base):
    """Long-term keys (AKIA…) and temporary ones (ASIA…, with a session token and an expiry)."""

    __tablename__ = "access_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    # None: the account's root identity.
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    session_token: Mapped[str | None] = mapped_column(String(256), unique=True)
    expires: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    last_used: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)


class InlinePolicy(Base):
    __tablename__ = "inline_policies"
    __table_args__ = (UniqueConstraint("owner_kind", "owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_kind: Mapped[str] = mapped_column(String(8))  # user | group
    owner_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(128))
    document: Mapped[str] = mapped_column(Text)


class ManagedPolicy(Base):
    """Customer managed policies (one version each for now); AWS managed ones live in code."""

    __tablename__ = "managed_policies"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # ANPA…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(512), default="/")
    description: Mapped[str] = mapped_column(String(1000), default="")
    document: Mapped[str] = mapped_column(Text)
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    updated: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class PolicyAttachment(Base):
    __tablename__ = "policy_attachments"

    owner_kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | group
    owner_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    policy_arn: Mapped[str] = mapped_column(String(1024), primary_key=True)


class ServiceRecord(Base):
    """A registered component (clc, walrus, cc, sc, nc) and its last heartbeat."""

    __tablename__ = "services"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    partition: Mapped[str] = mapped_column(String(64), default="")
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[str] = mapped_column(String(16), default="NOTREADY")
    detail: Mapped[str] = mapped_column(Text, default="")  # JSON: what the service reports of itself
    last_seen: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)


class Cluster(Base):
    """An availability zone: the cluster controller that owns it."""

    __tablename__ = "clusters"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class InstanceType(Base):
    __tablename__ = "instance_types"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)  # Eucalyptus' listing order
