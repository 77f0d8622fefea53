"""The CLC's records of EBS volumes, their attachments and snapshots: what users asked for, recorded
before the zone's Storage Controller or any node is asked (rpc/storage.py, rpc/node.py).

The EC2 handlers (ec2/volumes.py) only record; the reconciler (volume_reconcile.py) moves the zone
toward the records and the records toward what the SC and the nodes report:

volume `state`        who moves it, and when
  creating            CreateVolume records it; the reconciler asks the SC to create it
  available           the SC reports it (and no attachment holds it); or its attachment is gone
  in-use              AttachVolume records an attachment (any attachment state)
  deleting            DeleteVolume (available volumes only), or termination with DeleteOnTermination;
                      the reconciler asks the SC to delete it and removes the row once the SC no
                      longer reports it
  error               the SC refused to create it

attachment `state`    (one per volume: no multi-attach)
  attaching           AttachVolume; the reconciler asks the SC to export the volume to the instance's
                      node and the node (through its CC) to plug it in
  attached            the instance's node reports the volume plugged in
  detaching           DetachVolume (`force` recorded); the reconciler asks the node to unplug it
  (row removed)       once the node no longer reports it (or the instance is terminated): the SC
                      unexports it, and the volume becomes available (or deleting)

snapshot `state`      (the SC stores its bytes in Walrus, as content-addressed chunks)
  pending             CreateSnapshot / CopySnapshot records it; the reconciler asks the SC to take it
                      and copies the SC's `progress` until the SC reports it completed or error
  completed, error    as the SC reports them
  deleting            DeleteSnapshot; the reconciler asks the SC to delete it; then the row goes
                      (shown as gone at once: DescribeSnapshots leaves `deleting` rows out)

A volume created from a snapshot (`snapshot_id`) stays `creating` until the SC has restored it.

A modification (ModifyVolume: grow, type, IOPS, throughput) is recorded on the volume with
`modification_state` "modifying"; the reconciler asks the SC to grow the volume and, once the SC
reports the new size, sets `size_gib` and "completed" (AWS's modifying → optimizing → completed, with
no optimizing phase here: sparse files need none).
"""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from mallee.db.base import Base, UTCDateTime


class Volume(Base):
    __tablename__ = "volumes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # vol-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    zone: Mapped[str] = mapped_column(String(64), index=True)
    size_gib: Mapped[int] = mapped_column(Integer)
    volume_type: Mapped[str] = mapped_column(String(16))  # gp2 gp3 io1 io2 st1 sc1 standard
    iops: Mapped[int | None] = mapped_column(Integer)  # recorded, not enforced
    throughput: Mapped[int | None] = mapped_column(Integer)  # MiB/s, gp3 only
    snapshot_id: Mapped[str | None] = mapped_column(String(32))  # snap-… it was created from
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str] = mapped_column(String(255), default="")
    created: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    client_token: Mapped[str | None] = mapped_column(String(64))
    auto_enable_io: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last ModifyVolume: its target and progress (None: never modified).
    modification_state: Mapped[str | None] = mapped_column(String(16))  # modifying | completed | failed
    target_size_gib: Mapped[int | None] = mapped_column(Integer)
    target_volume_type: Mapped[str | None] = mapped_column(String(16))
    target_iops: Mapped[int | None] = mapped_column(Integer)
    target_throughput: Mapped[int | None] = mapped_column(Integer)
    original_size_gib: Mapped[int | None] = mapped_column(Integer)
    original_volume_type: Mapped[str | None] = mapped_column(String(16))
    original_iops: Mapped[int | None] = mapped_column(Integer)
    original_throughput: Mapped[int | None] = mapped_column(Integer)
    modification_started: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)
    modification_ended: Mapped[_dt.datetime | None] = mapped_column(UTCDateTime)


class VolumeAttachment(Base):
    __tablename__ = "volume_attachments"

    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(32))  # as the user named it: /dev/sdf, xvdf, …
    state: Mapped[str] = mapped_column(String(16))  # attaching | attached | detaching
    force: Mapped[bool] = mapped_column(Boolean, default=False)  # a forced detach was asked
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    attach_time: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    target: Mapped[str] = mapped_column(String(8), default="")  # the guest disk the node reports (vdb, …)


class Snapshot(Base):
    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # snap-…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    volume_id: Mapped[str] = mapped_column(String(32), index=True)  # may be gone since
    volume_size_gib: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str] = mapped_column(String(64), index=True)  # the SC that takes and keeps it
    source_snapshot_id: Mapped[str | None] = mapped_column(String(32))  # CopySnapshot's source
    description: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_message: Mapped[str] = mapped_column(String(255), default="")
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # new chunk bytes it stored
    started: Mapped[_dt.datetime] = mapped_column(UTCDateTime)
    client_token: Mapped[str | None] = mapped_column(String(64))
    # ImportSnapshot: its task id, the Walrus object (bucket/key) and format (raw, qcow2) imported.
    import_task_id: Mapped[str | None] = mapped_column(String(32), index=True)
    import_source: Mapped[str] = mapped_column(String(1024), default="", server_default=text("''"))
    import_format: Mapped[str] = mapped_column(String(8), default="", server_default=text("''"))


class SnapshotPermission(Base):
    """createVolumePermission: an account, or the group `all` (account_id "all"), may make volumes
    from the snapshot (and see it)."""

    __tablename__ = "snapshot_permissions"

    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)
