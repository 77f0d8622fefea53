"""EBS snapshots: CreateSnapshot, CreateSnapshots, CopySnapshot, DeleteSnapshot and DescribeSnapshots.

The handlers only record (volume_tables.py says who moves each state): the CLC's reconciler has the
zone's Storage Controller take, copy and delete them. Who may see a snapshot, and the
createVolumePermission that decides it, are snapshot_attributes.py's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, tags, volumes
from mallee.services.clc.ec2.snapshot_attributes import (
    ACCOUNT,
    check_id,
    forget_permissions,
    live,
    not_found,
    owned_snapshot,
    public,
    restorable,
    restorable_by,
)
from mallee.services.clc.paging import page
from mallee.services.clc.tables import Account, Image, Instance
from mallee.services.clc.volume_tables import Snapshot, Volume, VolumeAttachment

MAX_SNAPSHOTS = 10_000  # per account: AWS's default quota of EBS snapshots per region
MAX_DESCRIPTION = 255
# A volume the SC is still making, deleting, or failed to make has nothing to snapshot.
_UNSNAPSHOTTABLE = ("creating", "deleting", "error")
# SnapshotInfo (CreateSnapshots' answer) is a Snapshot with fewer members.
_INFO = (
    "Description", "Tags", "Encrypted", "VolumeId", "State", "VolumeSize", "StartTime", "Progress",
    "OwnerId", "SnapshotId",
)  # fmt: skip


# -- rules -----------------------------------------------------------------------------------------


def _used_by_images(s: Session, snapshot_id: str) -> list[str]:
    """The EBS-backed images whose block device mappings use the snapshot (DeleteSnapshot refuses
    while any does)."""
    q = select(Image.id, Image.block_device_mappings).where(
        Image.root_device_type == "ebs", Image.block_device_mappings.contains(snapshot_id)
    )
    return [image_id for image_id, mappings in s.execute(q) if snapshot_id in mappings]


def _check_quota(s: Session, account_id: str, more: int) -> None:
    count = s.scalar(select(func.count()).where(Snapshot.account_id == account_id, live())) or 0
    if count + more > MAX_SNAPSHOTS:
        raise CloudError(
            "SnapshotLimitExceeded", f"The maximum number of snapshots ({MAX_SNAPSHOTS}) has been reached."
        )


def _description(p: dict[str, Any], default: str = "") -> str:
    description = p.get("Description")
    if description is None:
        return default
    if len(description) > MAX_DESCRIPTION:
        raise CloudError(
            "InvalidParameterValue", f"Descriptions are at most {MAX_DESCRIPTION} characters long."
        )
    return str(description)


def _refuse_unsupported(p: dict[str, Any], *members: str) -> None:
    resources.unsupported(p, "OutpostArn", *members)
    if p.get("Location") not in (None, "", "regional"):  # local snapshots live on an Outpost
        raise CloudError("UnsupportedOperation", f"Mallee does not support Location {p['Location']} yet.")


def _snapshottable(volume: Volume) -> Volume:
    if volume.state in _UNSNAPSHOTTABLE:
        raise CloudError("IncorrectState", f"'{volume.id}' is in the '{volume.state}' state.")
    return volume


def record(
    s: Session,
    account_id: str,
    volume_id: str,
    size_gib: int,
    zone: str,
    description: str,
    source_snapshot_id: str | None = None,
) -> Snapshot:
    snapshot = Snapshot(
        id=ids.resource_id("snap"),
        account_id=account_id,
        volume_id=volume_id,
        volume_size_gib=size_gib,
        zone=zone,
        source_snapshot_id=source_snapshot_id,
        description=description,
        state="pending",
        state_message="",
        progress=0,
        stored_bytes=0,
        started=clock.now(),
        client_token=None,
    )
    s.add(snapshot)
    s.flush()
    return snapshot


# -- views -----------------------------------------------------------------------------------------


def _system_account_id(s: Session) -> str | None:
    return s.scalar(select(Account.id).where(Account.is_system.is_(True)))


def view(
    snapshot: Snapshot, tag_list: list[dict[str, str]], system_account: str | None = None
) -> dict[str, Any]:
    progress = 100 if snapshot.state == "completed" else snapshot.progress
    out: dict[str, Any] = {
        "SnapshotId": snapshot.id,
        "VolumeId": snapshot.volume_id,
        "State": snapshot.state,
        "StartTime": snapshot.started,
        "Progress": f"{progress}%",
        "OwnerId": snapshot.account_id,
        "Description": snapshot.description,
        "VolumeSize": snapshot.volume_size_gib,
        "Encrypted": False,
        "StorageTier": "standard",
        "Tags": tag_list,
    }
    if snapshot.state_message:
        out["StateMessage"] = snapshot.state_message
    if system_account is not None and snapshot.account_id == system_account:
        out["OwnerAlias"] = "amazon"  # the cloud's own snapshots, as images.py names them
    return out


_FILTERS: dict[str, Any] = {
    "description": lambda v: v["Description"],
    "encrypted": lambda v: v["Encrypted"],
    "owner-alias": lambda v: v.get("OwnerAlias"),
    "owner-id": lambda v: v["OwnerId"],
    "progress": lambda v: v["Progress"],
    "snapshot-id": lambda v: v["SnapshotId"],
    "start-time": lambda v: clock.iso8601(v["StartTime"]),
    "status": lambda v: v["State"],
    "storage-tier": lambda v: v["StorageTier"],
    "volume-id": lambda v: v["VolumeId"],
    "volume-size": lambda v: v["VolumeSize"],
}


# -- create ----------------------------------------------------------------------------------------


@EC2.operation()
def create_snapshot(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account_id = str(ctx.account_id)
    _refuse_unsupported(p)
    description = _description(p)
    s = ctx.session
    hold_write_lock(s, [f"snapshots:{account_id}", f"volume:{p['VolumeId']}"])  # the quota; DeleteVolume
    volume = _snapshottable(volumes.owned(ctx, p["VolumeId"]))
    volumes.check_storage_answers(s, volume.zone)
    _check_quota(s, account_id, 1)
    snapshot = record(s, account_id, volume.id, volume.size_gib, volume.zone, description)
    tags.from_specifications(s, account_id, snapshot.id, "snapshot", p.get("TagSpecifications"))
    return view(snapshot, tags.tags_of(s, [snapshot.id])[snapshot.id])


@EC2.operation()
def create_snapshots(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account_id = str(ctx.account_id)
    _refuse_unsupported(p)
    description = _description(p)
    copy_tags = p.get("CopyTagsFromSource")
    if copy_tags not in (None, "", "volume"):
        raise CloudError(
            "InvalidParameterValue", f"Value ({copy_tags}) for parameter CopyTagsFromSource is invalid."
        )
    spec = p["InstanceSpecification"]
    if not spec.get("InstanceId"):
        raise CloudError(
            "MissingParameter", "The request must contain the parameter InstanceSpecification.InstanceId"
        )
    excluded = spec.get("ExcludeDataVolumeIds") or []
    for volume_id in excluded:
        resources.check_id(volume_id, "vol", "InvalidVolumeID.Malformed")
    s = ctx.session
    hold_write_lock(s, [f"snapshots:{account_id}", f"instance-devices:{spec['InstanceId']}"])
    instance = resources.owned(ctx, Instance, spec["InstanceId"], "i", "InvalidInstanceID.NotFound")
    # Instances boot from instance-store images only: no EBS boot volume exists yet, so every attached
    # volume is a data volume and ExcludeBootVolume leaves nothing out.
    attached = list(
        s.scalars(
            select(VolumeAttachment.volume_id)
            .where(VolumeAttachment.instance_id == instance.id)
            .order_by(VolumeAttachment.device)
        )
    )
    chosen = [
        _snapshottable(volume)
        for volume_id in attached
        if volume_id not in excluded and (volume := s.get(Volume, volume_id)) is not None
    ]
    volumes.check_storage_answers(s, instance.zone)
    _check_quota(s, account_id, len(chosen))
    volume_tags = tags.tags_of(s, [v.id for v in chosen]) if copy_tags == "volume" else {}
    made = []
    for volume in chosen:
        snapshot = record(s, account_id, volume.id, volume.size_gib, volume.zone, description)
        tags.put(s, account_id, snapshot.id, "snapshot", volume_tags.get(volume.id, []))
        tags.from_specifications(s, account_id, snapshot.id, "snapshot", p.get("TagSpecifications"))
        made.append(snapshot)
    tag_map = tags.tags_of(s, [m.id for m in made])
    return {"Snapshots": [{k: v for k, v in view(m, tag_map[m.id]).items() if k in _INFO} for m in made]}


@EC2.operation()
def copy_snapshot(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account_id = str(ctx.account_id)
    resources.unsupported(
        p,
        "Encrypted",
        "KmsKeyId",
        "DestinationOutpostArn",
        "DestinationAvailabilityZone",
        "CompletionDurationMinutes",
    )
    if p["SourceRegion"] != ctx.region:
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({p['SourceRegion']}) for parameter SourceRegion is invalid: "
            f"snapshots are copied within this cloud's region ({ctx.region}).",
        )
    # The SDKs sign a PresignedUrl and send DestinationRegion (the client's region) with every copy
    # (botocore's inject_presigned_url_ec2): a copy within the region needs no URL, so it is not read.
    if p.get("DestinationRegion") not in (None, "", ctx.region):
        raise CloudError("UnsupportedOperation", "Mallee does not support DestinationRegion yet.")
    source_id = p["SourceSnapshotId"]
    description = _description(p, f"[Copied {source_id} from {ctx.region}]")
    s = ctx.session
    hold_write_lock(s, [f"snapshots:{account_id}", f"snapshot:{source_id}"])  # against its DeleteSnapshot
    source = restorable(s, account_id, source_id)
    _check_quota(s, account_id, 1)
    copy = record(
        s, account_id, source.volume_id, source.volume_size_gib, source.zone, description, source.id
    )
    tags.from_specifications(s, account_id, copy.id, "snapshot", p.get("TagSpecifications"))
    return {"SnapshotId": copy.id, "Tags": tags.tags_of(s, [copy.id])[copy.id]}


# -- delete, describe ------------------------------------------------------------------------------


@EC2.operation()
def delete_snapshot(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    hold_write_lock(s, [f"snapshot:{p['SnapshotId']}"])  # against a CreateVolume or CopySnapshot from it
    snapshot = owned_snapshot(ctx, p["SnapshotId"])
    users = _used_by_images(s, snapshot.id)
    if users:
        raise CloudError(
            "InvalidSnapshot.InUse", f"The snapshot {snapshot.id} is currently in use by {users[0]}"
        )
    # A pending snapshot may be deleted too, as on AWS: the reconciler has the SC stop and drop it.
    snapshot.state = "deleting"
    forget_permissions(s, snapshot.id)
    return {}


def _owners(s: Session, me: str, owners: list[str]) -> Any:
    wanted: set[str] = set()
    for owner in owners:
        if owner == "self":
            wanted.add(me)
        elif owner == "amazon":  # the cloud's own snapshots: the system account's
            wanted.add(_system_account_id(s) or "")
        elif ACCOUNT.match(owner):
            wanted.add(owner)
        elif owner not in ("aws-marketplace", "aws-backup-vault"):  # AWS's aliases that own none here
            raise CloudError("InvalidUserID.Malformed", f"Invalid user id: '{owner}'")
    return Snapshot.account_id.in_(wanted) if wanted else false()


def _restorable_by(me: str, users: list[str]) -> Any:
    conditions: list[Any] = []
    for user in users:
        if user == "all":
            conditions.append(public())
        elif user == "self" or ACCOUNT.match(user):
            conditions.append(restorable_by(me if user == "self" else user))
        else:
            raise CloudError("InvalidUserID.Malformed", f"Invalid user id: '{user}'")
    return or_(*conditions)


@EC2.operation()
def describe_snapshots(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, me = ctx.session, str(ctx.account_id)
    wanted = p.get("SnapshotIds") or []
    limit = p.get("MaxResults")
    if limit is not None:
        if wanted:
            raise CloudError(
                "InvalidParameterCombination",
                "The parameter snapshotSet cannot be used with the parameter maxResults",
            )
        if limit < 5:
            raise CloudError(
                "InvalidParameterValue",
                f"Value ({limit}) for parameter maxResults is invalid. Expecting a value greater than 5.",
            )
        limit = min(limit, 1000)  # AWS answers 1,000 at most
    for snapshot_id in wanted:
        check_id(snapshot_id)
    # By default: the caller's own, those shared with it, and the public ones (API_DescribeSnapshots).
    conditions = [live(), restorable_by(me)]
    if wanted:
        conditions.append(Snapshot.id.in_(wanted))
        seen = set(s.scalars(select(Snapshot.id).where(*conditions)))
        missing = [i for i in dict.fromkeys(wanted) if i not in seen]
        if missing:
            raise not_found(missing)
    if p.get("OwnerIds"):
        conditions.append(_owners(s, me, p["OwnerIds"]))
    if p.get("RestorableByUserIds"):
        conditions.append(_restorable_by(me, p["RestorableByUserIds"]))
    rows = list(s.scalars(select(Snapshot).where(*conditions).order_by(Snapshot.started, Snapshot.id)))
    # Tags are the caller's own: another account's tags on a shared snapshot are not shown.
    tag_map = tags.tags_of(s, [r.id for r in rows if r.account_id == me])
    system_account = _system_account_id(s)
    views = [view(r, tag_map.get(r.id, []), system_account) for r in rows]
    views = tags.with_tag_filters(views, p.get("Filters"), _FILTERS)
    chunk, token = page(views, p.get("NextToken"), limit, default=len(views) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {"Snapshots": chunk}
    if token:
        out["NextToken"] = token
    return out
