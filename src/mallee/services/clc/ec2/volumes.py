"""EBS volumes: CreateVolume, DeleteVolume, DescribeVolumes, DescribeVolumeStatus,
Describe/ModifyVolumeAttribute, and the rules and views volume_attachments.py and
volume_modifications.py share.

The handlers only record (volume_tables.py says who moves each state): the CLC wakes its reconciler
after every EC2 call that is not a Describe, and the reconciler asks the zone's Storage Controller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc import components, peers
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters, resources, snapshot_attributes, tags, zones
from mallee.services.clc.paging import page
from mallee.services.clc.tables import ServiceRecord
from mallee.services.clc.volume_tables import Snapshot, Volume, VolumeAttachment


@dataclass(frozen=True)
class Kind:
    """What a volume type allows (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-volume-types.html)."""

    min_gib: int
    max_gib: int
    iops: tuple[int, int] | None = None  # provisioned IOPS range; None: not provisioned
    iops_per_gib: int = 0  # the most IOPS per GiB (0: no ratio)


# io2 up to 64 TiB and 256,000 IOPS is Block Express, which needs Nitro instances: not offered.
KINDS = {
    "gp2": Kind(1, 16384),
    "gp3": Kind(1, 16384, iops=(3000, 16000)),
    "io1": Kind(4, 16384, iops=(100, 64000), iops_per_gib=50),
    "io2": Kind(4, 16384, iops=(100, 64000), iops_per_gib=500),
    "st1": Kind(125, 16384),
    "sc1": Kind(125, 16384),
    "standard": Kind(1, 1024),
}
GP3_IOPS, GP3_THROUGHPUT, THROUGHPUT = 3000, 125, (125, 1000)


# -- rules -----------------------------------------------------------------------------------------


def owned(ctx: RequestContext, volume_id: str) -> Volume:
    """The caller's volume: another account's volumes do not exist for it."""
    resources.check_id(volume_id, "vol", "InvalidVolumeID.Malformed")
    volume: Volume | None = ctx.session.get(Volume, volume_id)
    if volume is None or volume.account_id != ctx.account_id:
        raise CloudError("InvalidVolume.NotFound", f"The volume '{volume_id}' does not exist.")
    return volume


def volume_type_named(name: str | None) -> str:
    name = name or "gp2"
    if name in ("gp3a", "io2a"):
        raise CloudError("UnsupportedOperation", f"Mallee does not support {name} volumes yet.")
    if name not in KINDS:
        raise CloudError("InvalidParameterValue", f"Value ({name}) for parameter volumeType is invalid.")
    return name


def check_size(volume_type: str, size: int) -> None:
    kind = KINDS[volume_type]
    if size < kind.min_gib:
        raise CloudError(
            "InvalidParameterValue",
            f"Volume of {size}GiB is too small for volume type {volume_type}; minimum is {kind.min_gib}GiB.",
        )
    if size > kind.max_gib:
        raise CloudError(
            "InvalidParameterValue",
            f"Volume of {size}GiB is too large for volume type {volume_type}; maximum is {kind.max_gib}GiB.",
        )


def performance(
    volume_type: str, size: int, iops: int | None, throughput: int | None
) -> tuple[int | None, int | None]:
    """The IOPS and throughput to record for a volume of this type and size: `iops`/`throughput`
    as asked (None: the type's default), refused where the type has no such setting."""
    kind = KINDS[volume_type]
    if iops is not None and kind.iops is None:
        raise CloudError(
            "InvalidParameterCombination", f"The parameter iops is not supported for {volume_type} volumes."
        )
    if throughput is not None and volume_type != "gp3":
        raise CloudError(
            "InvalidParameterCombination",
            f"The parameter throughput is not supported for {volume_type} volumes.",
        )
    if kind.iops is None:
        return None, None
    iops = GP3_IOPS if iops is None else iops
    low, high = kind.iops
    if not low <= iops <= high:
        raise CloudError(
            "InvalidParameterValue",
            f"Volume iops of {iops} is not between {low} and {high} for {volume_type}.",
        )
    if kind.iops_per_gib and iops > kind.iops_per_gib * size:
        raise CloudError(
            "InvalidParameterValue",
            f"Iops to volume size ratio of {iops / size:f} is too high; maximum is {kind.iops_per_gib:f}.",
        )
    if volume_type != "gp3":
        return iops, None
    throughput = GP3_THROUGHPUT if throughput is None else throughput
    if not THROUGHPUT[0] <= throughput <= THROUGHPUT[1]:
        raise CloudError(
            "InvalidParameterValue", f"Throughput of {throughput} MiB/s is not between 125 and 1000."
        )
    if throughput * 4 > iops:
        raise CloudError(
            "InvalidParameterValue",
            f"Throughput (MiBps) to iops ratio of {throughput / iops:f} is too high; maximum is 0.250000 "
            "MiBps per iops.",
        )
    return iops, throughput


def shown_iops(volume_type: str, size: int, iops: int | None) -> int | None:
    """The IOPS a view shows: gp2's baseline is 3 per GiB (100 at least, 16,000 at most)."""
    if volume_type == "gp2":
        return max(100, min(16000, 3 * size))
    return iops


def _zone(ctx: RequestContext, p: dict[str, Any]) -> str:
    name, zone_id = p.get("AvailabilityZone"), p.get("AvailabilityZoneId")
    if name and zone_id:
        raise CloudError(
            "InvalidParameterCombination", "Specify either AvailabilityZone or AvailabilityZoneId, not both."
        )
    if not name and not zone_id:
        raise CloudError("MissingParameter", "The request must contain the parameter AvailabilityZone")
    known = zones.zone_ids(ctx.session, ctx.region)
    if zone_id:  # as DescribeAvailabilityZones numbers them
        by_id = {zid: zone for zone, zid in known.items()}
        if zone_id not in by_id:
            raise CloudError("InvalidZone.NotFound", f"The zone ID '{zone_id}' does not exist.")
        name = by_id[zone_id]
    if name not in known:
        raise CloudError("InvalidZone.NotFound", f"The zone '{name}' does not exist.")
    return str(name)


def check_storage(s: Session, zone: str, snapshot_ids: Sequence[str] = ()) -> None:
    """That volumes (from `snapshot_ids`, if any) can be made in `zone` now. Refused by name rather
    than recorded as volumes nobody would make: a zone without a storage controller (none was
    registered: `mallee storage register`), one whose controller stopped heartbeating (503, as the
    zone's other volume work, which it would only hold up), and a snapshot another zone's controller
    keeps: each SC reads only its own zone's part of the snapshot bucket (services/storage/chunks.py),
    so the volume would end in `error`."""
    if zone not in peers.get().storage:
        raise CloudError(
            "Unsupported",
            f"The zone '{zone}' has no storage controller: EBS volumes are not available there.",
        )
    check_storage_answers(s, zone)
    for snapshot_id in snapshot_ids:
        kept_in = s.scalar(select(Snapshot.zone).where(Snapshot.id == snapshot_id))
        if kept_in is not None and kept_in != zone:
            raise CloudError(
                "Unsupported",
                f"The snapshot '{snapshot_id}' is kept in the zone '{kept_in}': volumes from it can be "
                f"made in '{kept_in}' only (Mallee does not move snapshots between zones yet).",
            )


def check_storage_answers(s: Session, zone: str) -> None:
    """ServiceUnavailable (503) while the zone's storage controller does not heartbeat: volume work
    recorded there would wait for it (components.py: NOTREADY after STALE_AFTER seconds)."""
    beat = s.scalar(select(ServiceRecord).where(ServiceRecord.type == "sc", ServiceRecord.partition == zone))
    if beat is not None and components.state_of(beat) != "ENABLED":
        raise CloudError(
            "ServiceUnavailable",
            f"The storage controller of the zone '{zone}' is not answering: EBS volumes and snapshots "
            "there cannot be changed now. Try again later, or use another zone.",
            503,
        )


def check_quota(s: Session, account_id: str, more_volumes: int, more_gib: int) -> None:
    """VolumeLimitExceeded past the account's quotas (a modification in flight counts at its target)."""
    rows = s.execute(
        select(Volume.size_gib, Volume.target_size_gib, Volume.modification_state).where(
            Volume.account_id == account_id
        )
    ).all()
    gib = sum(max(size, target or 0) if state == "modifying" else size for size, target, state in rows)
    most_volumes, most_gib = peers.get().max_volumes, peers.get().max_volume_gib
    if len(rows) + more_volumes > most_volumes:
        raise CloudError(
            "VolumeLimitExceeded", f"The maximum number of volumes ({most_volumes}) has been reached."
        )
    if gib + more_gib > most_gib:
        raise CloudError(
            "VolumeLimitExceeded",
            f"You have exceeded your maximum storage limit of {most_gib} GiB in this region.",
        )


# -- views -----------------------------------------------------------------------------------------


def attachment_view(a: VolumeAttachment) -> dict[str, Any]:
    return {
        "VolumeId": a.volume_id,
        "InstanceId": a.instance_id,
        "Device": a.device,
        "State": a.state,
        "AttachTime": a.attach_time,
        "DeleteOnTermination": a.delete_on_termination,
    }


def attachments_of(s: Session, volume_ids: list[str]) -> dict[str, list[VolumeAttachment]]:
    """Volume id -> its attachments (one at most: no multi-attach), in one query."""
    out: dict[str, list[VolumeAttachment]] = {v: [] for v in volume_ids}
    if volume_ids:
        for a in s.scalars(select(VolumeAttachment).where(VolumeAttachment.volume_id.in_(volume_ids))):
            out[a.volume_id].append(a)
    return out


def view(v: Volume, attachments: list[VolumeAttachment], tag_list: list[dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "VolumeId": v.id,
        "Size": v.size_gib,
        "SnapshotId": v.snapshot_id or "",
        "AvailabilityZone": v.zone,
        "State": v.state,
        "CreateTime": v.created,
        "Attachments": [attachment_view(a) for a in attachments],
        "Encrypted": False,
        "VolumeType": v.volume_type,
        "MultiAttachEnabled": False,
        "Tags": tag_list,
    }
    iops = shown_iops(v.volume_type, v.size_gib, v.iops)
    if iops is not None:
        out["Iops"] = iops
    if v.throughput is not None:
        out["Throughput"] = v.throughput
    return out


def _each(key: str) -> filters.Getter[dict[str, Any]]:
    return lambda v: [a[key] for a in v["Attachments"]]


_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "attachment.attach-time": lambda v: [clock.iso8601(a["AttachTime"]) for a in v["Attachments"]],
    "attachment.delete-on-termination": _each("DeleteOnTermination"),
    "attachment.device": _each("Device"),
    "attachment.instance-id": _each("InstanceId"),
    "attachment.status": _each("State"),
    "availability-zone": lambda v: v["AvailabilityZone"],
    "create-time": lambda v: clock.iso8601(v["CreateTime"]),
    "encrypted": lambda v: v["Encrypted"],
    "fast-restored": lambda v: False,  # fast snapshot restore is not offered
    "multi-attach-enabled": lambda v: v["MultiAttachEnabled"],
    "size": lambda v: v["Size"],
    "snapshot-id": lambda v: v["SnapshotId"],
    "status": lambda v: v["State"],
    "volume-id": lambda v: v["VolumeId"],
    "volume-type": lambda v: v["VolumeType"],
}


def visible(ctx: RequestContext, volume_ids: list[str] | None) -> list[Volume]:
    """The caller's volumes, or those of them `volume_ids` names (each must exist)."""
    for volume_id in volume_ids or []:
        resources.check_id(volume_id, "vol", "InvalidVolumeID.Malformed")
    q = select(Volume).where(Volume.account_id == ctx.account_id).order_by(Volume.created, Volume.id)
    if volume_ids:
        q = q.where(Volume.id.in_(volume_ids))
    found = list(ctx.session.scalars(q))
    missing = [v for v in dict.fromkeys(volume_ids or []) if v not in {f.id for f in found}]
    if missing:
        raise CloudError("InvalidVolume.NotFound", f"The volume '{', '.join(missing)}' does not exist.")
    return found


def one_page(
    p: dict[str, Any], items: list[dict[str, Any]], key: str, most: int, *, with_ids: bool = False
) -> dict[str, Any]:
    """One page: MaxResults is 5 at least and `most` at the most (AWS answers `most` for more), and
    goes `with_ids` (named volumes) only where AWS says so."""
    limit = p.get("MaxResults")
    if limit is not None:
        if p.get("VolumeIds") and not with_ids:
            raise CloudError(
                "InvalidParameterCombination",
                "The parameter volumeSet cannot be used with the parameter maxResults",
            )
        if limit < 5:
            raise CloudError(
                "InvalidParameterValue",
                f"Value ({limit}) for parameter maxResults is invalid. Expecting a value greater than 5.",
            )
        limit = min(limit, most)
    chunk, token = page(items, p.get("NextToken"), limit, default=len(items) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {key: chunk}
    if token:
        out["NextToken"] = token
    return out


# -- create, delete, describe ----------------------------------------------------------------------


@EC2.operation()
def create_volume(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    account_id = ctx.account_id
    assert account_id is not None
    if p.get("Encrypted") or p.get("KmsKeyId"):
        raise CloudError("UnsupportedOperation", "Mallee does not support encrypted volumes yet.")
    if p.get("MultiAttachEnabled"):
        raise CloudError("UnsupportedOperation", "Mallee does not support Multi-Attach volumes yet.")
    resources.unsupported(
        p,
        "OutpostArn",
        "VolumeInitializationRate",
        "Operator",
        "MultiAvailabilityZoneConfiguration",
        "TrimOnAttach",
    )
    snapshot_id = p.get("SnapshotId") or None
    if p.get("Size") is None and snapshot_id is None:
        raise CloudError("MissingParameter", "The request must contain the parameter size or snapshotId")
    volume_type = volume_type_named(p.get("VolumeType"))
    s = ctx.session
    # The quota and the client token, read then written; the snapshot, against its DeleteSnapshot.
    hold_write_lock(s, [f"volumes:{account_id}", *([f"snapshot:{snapshot_id}"] if snapshot_id else [])])
    if snapshot_id is not None:  # the SC restores it (the reconciler asks) while the volume is creating
        snapshot = snapshot_attributes.restorable(s, account_id, snapshot_id)
        size = snapshot.volume_size_gib if p.get("Size") is None else int(p["Size"])
        if size < snapshot.volume_size_gib:
            raise CloudError(
                "InvalidParameterValue",
                f"Volume of {size}GiB is smaller than snapshot '{snapshot_id}', expect size >= "
                f"{snapshot.volume_size_gib}GiB",
            )
    else:
        size = int(p["Size"])
    check_size(volume_type, size)
    if volume_type in ("io1", "io2") and p.get("Iops") is None:
        raise CloudError(
            "MissingParameter", f"The request must contain the parameter iops for {volume_type} volumes"
        )
    iops, throughput = performance(volume_type, size, p.get("Iops"), p.get("Throughput"))
    zone = _zone(ctx, p)
    check_storage(s, zone, [snapshot_id] if snapshot_id else [])
    token = p.get("ClientToken")
    if token:
        earlier = s.scalar(
            select(Volume).where(Volume.account_id == account_id, Volume.client_token == token)
        )
        if earlier is not None:  # an idempotent retry: the same volume, if asked the same way
            asked = (size, volume_type, iops, throughput, zone, snapshot_id)
            if (
                earlier.size_gib,
                earlier.volume_type,
                earlier.iops,
                earlier.throughput,
                earlier.zone,
                earlier.snapshot_id,
            ) != asked:
                raise CloudError(
                    "IdempotentParameterMismatch",
                    f"The client token '{token}' was used for a volume with other parameters.",
                )
            return view(
                earlier,
                attachments_of(s, [earlier.id])[earlier.id],
                tags.tags_of(s, [earlier.id])[earlier.id],
            )
    check_quota(s, account_id, 1, size)
    volume = Volume(
        id=ids.resource_id("vol"),
        account_id=account_id,
        zone=zone,
        size_gib=size,
        volume_type=volume_type,
        iops=iops,
        throughput=throughput,
        snapshot_id=snapshot_id,
        state="creating",
        state_reason="",
        created=clock.now(),
        client_token=token,
        auto_enable_io=False,
    )
    s.add(volume)
    s.flush()
    tags.from_specifications(s, account_id, volume.id, "volume", p.get("TagSpecifications"))
    return view(volume, [], tags.tags_of(s, [volume.id])[volume.id])


@EC2.operation()
def delete_volume(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    hold_write_lock(ctx.session, [f"volume:{p['VolumeId']}"])  # against an AttachVolume meanwhile
    volume = owned(ctx, p["VolumeId"])
    attachment = ctx.session.get(VolumeAttachment, volume.id)
    if attachment is not None:
        raise CloudError(
            "VolumeInUse", f"Volume {volume.id} is currently attached to {attachment.instance_id}"
        )
    if volume.state in ("available", "error"):
        volume.state = "deleting"  # the reconciler removes the row (and its tags) once the SC has
    elif volume.state != "deleting":  # deleting again is no error
        raise CloudError("IncorrectState", f"'{volume.id}' is in the '{volume.state}' state.")
    return {}


@EC2.operation()
def describe_volumes(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    # IncludeManagedResources needs no refusal: no volume here is managed by another service.
    found = visible(ctx, p.get("VolumeIds"))
    held = attachments_of(ctx.session, [v.id for v in found])
    tag_map = tags.tags_of(ctx.session, [v.id for v in found])
    views = [view(v, held[v.id], tag_map[v.id]) for v in found]
    return one_page(p, tags.with_tag_filters(views, p.get("Filters"), _FILTERS), "Volumes", 500)


def _status_view(v: Volume, attachments: list[VolumeAttachment]) -> dict[str, Any]:
    status, io = {
        "available": ("ok", "passed"),
        "in-use": ("ok", "passed"),
        "error": ("impaired", "failed"),
    }.get(v.state, ("insufficient-data", "insufficient-data"))
    return {
        "VolumeId": v.id,
        "AvailabilityZone": v.zone,
        "VolumeStatus": {
            "Status": status,
            "Details": [
                {"Name": "io-enabled", "Status": io},
                {"Name": "io-performance", "Status": "not-applicable"},
            ],
        },
        "Events": [],
        "Actions": [],
        "AttachmentStatuses": [
            {"InstanceId": a.instance_id, "IoPerformance": "not-applicable"} for a in attachments
        ],
    }


def _details(key: str) -> filters.Getter[dict[str, Any]]:
    return lambda v: [d[key] for d in v["VolumeStatus"]["Details"]]


def _none(_: dict[str, Any]) -> list[str]:
    return []  # no volume here has events or actions


_STATUS_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "action.code": _none,
    "action.description": _none,
    "action.event-id": _none,
    "attachment-status.instance-id": lambda v: [a["InstanceId"] for a in v["AttachmentStatuses"]],
    "attachment-status.io-performance": lambda v: [a["IoPerformance"] for a in v["AttachmentStatuses"]],
    "availability-zone": lambda v: v["AvailabilityZone"],
    "event.description": _none,
    "event.event-id": _none,
    "event.event-type": _none,
    "event.not-after": _none,
    "event.not-before": _none,
    "volume-status.details-name": _details("Name"),
    "volume-status.details-status": _details("Status"),
    "volume-status.status": lambda v: v["VolumeStatus"]["Status"],
}


@EC2.operation()
def describe_volume_status(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = visible(ctx, p.get("VolumeIds"))
    held = attachments_of(ctx.session, [v.id for v in found])
    views = filters.apply([_status_view(v, held[v.id]) for v in found], p.get("Filters"), _STATUS_FILTERS)
    return one_page(p, views, "VolumeStatuses", 1000)


@EC2.operation()
def describe_volume_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    volume = owned(ctx, p["VolumeId"])
    if p["Attribute"] == "autoEnableIO":
        return {"VolumeId": volume.id, "AutoEnableIO": {"Value": volume.auto_enable_io}}
    if p["Attribute"] == "productCodes":
        return {"VolumeId": volume.id, "ProductCodes": []}
    raise CloudError("InvalidParameterValue", f"Value ({p['Attribute']}) for parameter attribute is invalid.")


@EC2.operation()
def modify_volume_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    volume = owned(ctx, p["VolumeId"])
    if (p.get("AutoEnableIO") or {}).get("Value") is None:
        raise CloudError("MissingParameter", "The request must contain the parameter AutoEnableIO")
    volume.auto_enable_io = bool(p["AutoEnableIO"]["Value"])  # recorded: I/O is never suspended here
    return {}
