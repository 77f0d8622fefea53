"""The CLC's database of record: identity (accounts, users, groups, roles and instance profiles,
policies), the service registry, zones and instance types."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, text
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
    # Whether its default VPC was made (once: an account that deletes it keeps none).
    default_vpc_made: Mapped[bool] = mapped_column(Boolean, default=False)
    # The account's password policy (UpdateAccountPasswordPolicy), JSON of its members as IAM names
    # them (iam/password_policy.py); None: none set, AWS's default password rules apply.
    password_policy: Mapped[str | None] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # AIDA…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512), default="/")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {Key, Value}
    # Its login profile (console password, iam/login_profiles.py); all None when it has none. The
    # password only as a salted slow hash (iam/passwords.py); the hashes of the ones before it
    # (newest first, as many as the password policy's PasswordReusePrevention needs) in a JSON list.
    # Deferred: only the password operations read them.
    password_hash: Mapped[str | None] = mapped_column(String(255), deferred=True)
    password_history: Mapped[str | None] = mapped_column(Text, deferred=True)
    password_created: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)  # the profile's CreateDate
    password_changed: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)  # its age, for MaxPasswordAge
    password_reset_required: Mapped[bool | None] = mapped_column(Boolean)


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
    """Long-term keys (AKIA…) and temporary ones (ASIA…, with a session token and an expiry):
    GetSessionToken's act as their user or root, AssumeRole's as a session of a role."""

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
    # A role session's (AssumeRole): the role it acts as, its name, and the session policies that
    # narrow it (the inline document, and a JSON list of managed policy ARNs; None: not given).
    role_id: Mapped[str | None] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), index=True)
    role_session_name: Mapped[str | None] = mapped_column(String(64))
    session_policy: Mapped[str | None] = mapped_column(Text)
    session_policy_arns: Mapped[str | None] = mapped_column(Text)


class InlinePolicy(Base):
    __tablename__ = "inline_policies"
    __table_args__ = (UniqueConstraint("owner_kind", "owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_kind: Mapped[str] = mapped_column(String(8))  # user | group | role
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

    owner_kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | group | role
    owner_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    policy_arn: Mapped[str] = mapped_column(String(1024), primary_key=True)


class Role(Base):
    """An IAM role: whom it trusts (its trust policy) and how long its sessions may last; the
    policies it grants are inline policies and attachments with owner_kind "role"."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # AROA…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512), default="/")
    description: Mapped[str] = mapped_column(String(1000), default="")
    trust_policy: Mapped[str] = mapped_column(Text)  # AssumeRolePolicyDocument, as given
    max_session_duration: Mapped[int] = mapped_column(Integer, default=3600)  # seconds
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {Key, Value}
    # RoleLastUsed: when and in which region a session of the role was last made (None: never).
    last_used: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_region: Mapped[str | None] = mapped_column(String(64))


class InstanceProfile(Base):
    """An instance profile: the container that passes one role to EC2 instances."""

    __tablename__ = "instance_profiles"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # AIPA…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(512), default="/")
    # AWS allows one role per profile; DeleteRole refuses while a profile holds it.
    role_id: Mapped[str | None] = mapped_column(ForeignKey("roles.id"), index=True)
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    tags: Mapped[str] = mapped_column(Text, default="[]")


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


class StorageController(Base):
    """A zone's storage controller (its volumes and snapshots): the CLC's own zone's, made by
    bootstrap, or one the administrator registered (RegisterStorageController) for a zone that has
    a cluster. A zone without one has no EBS volumes."""

    __tablename__ = "storage_controllers"

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


class Instance(Base):
    """An instance as the CLC records it: what the user asked for (desired state) and what the
    cluster last reported (state). Terminated instances stay visible for an hour, as on AWS."""

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("account_id", "client_token"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # i-…
    reservation_id: Mapped[str] = mapped_column(String(32), index=True)  # r-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[str] = mapped_column(String(32))
    kernel_id: Mapped[str | None] = mapped_column(String(32))
    ramdisk_id: Mapped[str | None] = mapped_column(String(32))
    instance_type: Mapped[str] = mapped_column(String(32))
    zone: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending running shutting-down terminated
    desired: Mapped[str] = mapped_column(String(16))  # running | terminated
    state_reason: Mapped[str] = mapped_column(String(255), default="")
    transition_reason: Mapped[str] = mapped_column(String(255), default="")
    node: Mapped[str] = mapped_column(String(255), default="")
    private_ip: Mapped[str] = mapped_column(String(45), default="", index=True)
    mac: Mapped[str] = mapped_column(String(17), default="")
    key_name: Mapped[str | None] = mapped_column(String(255))
    user_data: Mapped[str] = mapped_column(Text, default="")  # base64, as sent
    security_groups: Mapped[str] = mapped_column(Text, default="[]")
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    launch_time: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    terminated_at: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    client_token: Mapped[str | None] = mapped_column(String(64))
    disable_api_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    shutdown_behavior: Mapped[str] = mapped_column(String(16), default="stop")
    # Recorded before any component is asked, so a launch a crash interrupted is sent again as it
    # was: its reservation's MinCount and its launch (rpc/node.py InstanceLaunch, as JSON).
    min_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    launch: Mapped[str] = mapped_column(Text, default="")
    # Its VPC and subnet (network_tables.py; its primary interface has the addresses). Empty for an
    # instance launched before VPCs existed here (EDGE networking).
    vpc_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    subnet_id: Mapped[str] = mapped_column(String(32), default="")
    # ebs: its root is a volume (attached as root_device_name); it can be stopped and started.
    root_device_type: Mapped[str] = mapped_column(
        String(16), default="instance-store", server_default="instance-store"
    )
    root_device_name: Mapped[str] = mapped_column(String(32), default="/dev/vda", server_default="/dev/vda")
    # The node (host:port) an administrator's evacuation is moving it off: it is stopped, then
    # started elsewhere (services/clc/evacuation.py); "" when no evacuation concerns it.
    evacuating_from: Mapped[str] = mapped_column(String(255), default="", server_default=text("''"))


class KeyPair(Base):
    """An EC2 key pair: the public half only (OpenSSH format, for the metadata service)."""

    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # key-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    key_type: Mapped[str] = mapped_column(String(16))  # rsa | ed25519
    fingerprint: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(Text)  # "ssh-rsa AAAA… comment"
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)


class Image(Base):
    """A registered image (ami-/aki-/ari-): where its bytes are in Walrus and how to boot it."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(255), default="")
    image_type: Mapped[str] = mapped_column(String(16))  # machine | kernel | ramdisk
    location: Mapped[str] = mapped_column(String(1024))  # bucket/key
    source_format: Mapped[str] = mapped_column(String(16))  # bundle | raw | qcow2
    # A bundle's manifest as nodes need it (rpc/node.py BundleManifest, JSON), read at registration.
    manifest: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes of the image itself
    architecture: Mapped[str] = mapped_column(String(16))
    kernel_id: Mapped[str | None] = mapped_column(String(32))
    ramdisk_id: Mapped[str | None] = mapped_column(String(32))
    virtualization_type: Mapped[str] = mapped_column(String(16))  # hvm | paravirtual
    root_device_name: Mapped[str | None] = mapped_column(String(64))
    block_device_mappings: Mapped[str] = mapped_column(Text, default="[]")  # JSON, as given
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="available")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    # ebs: no object; its root and other disks are snapshots named in block_device_mappings.
    root_device_type: Mapped[str] = mapped_column(
        String(16), default="instance-store", server_default="instance-store"
    )
    # CreateImage of a running instance without NoReboot (ebs_images.py): the instance it stops,
    # snapshots and starts again, and how far that got ("stopping", "snapshotting"; "" when done).
    build_instance_id: Mapped[str | None] = mapped_column(String(32))
    build_stage: Mapped[str] = mapped_column(String(16), default="", server_default=text("''"))


class LaunchPermission(Base):
    """An account (other than the owner) allowed to launch an image; `Group=all` is Image.is_public."""

    __tablename__ = "launch_permissions"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)


class Tag(Base):
    """An EC2 resource tag (images, key pairs, and later instances, volumes …)."""

    __tablename__ = "tags"

    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), default="")
    resource_type: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)


# The VPC networking and volume tables live in their own modules; importing this one registers them too.
from mallee.services.clc import instance_profile_tables, network_tables, volume_tables  # noqa: E402, F401
