"""EBS volume modifications (Elastic Volumes): ModifyVolume and DescribeVolumesModifications.

ModifyVolume records the modification on the volume (volume_tables.py) as "modifying"; the
reconciler has the Storage Controller grow the volume and marks it completed.
"""

from __future__ import annotations

from typing import Any

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters, resources, volumes
from mallee.services.clc.volume_tables import Volume


def modification_view(v: Volume) -> dict[str, Any]:
    assert v.target_size_gib is not None and v.original_size_gib is not None
    target_type, original_type = str(v.target_volume_type), str(v.original_volume_type)
    out: dict[str, Any] = {
        "VolumeId": v.id,
        "ModificationState": v.modification_state,
        "TargetSize": v.target_size_gib,
        "TargetVolumeType": target_type,
        "TargetMultiAttachEnabled": False,
        "OriginalSize": v.original_size_gib,
        "OriginalVolumeType": original_type,
        "OriginalMultiAttachEnabled": False,
        "Progress": 0 if v.modification_state == "modifying" else 100,
        "StartTime": v.modification_started,
    }
    for key, value in (
        ("TargetIops", volumes.shown_iops(target_type, v.target_size_gib, v.target_iops)),
        ("OriginalIops", volumes.shown_iops(original_type, v.original_size_gib, v.original_iops)),
        ("TargetThroughput", v.target_throughput),
        ("OriginalThroughput", v.original_throughput),
        ("EndTime", v.modification_ended),
    ):
        if value is not None:
            out[key] = value
    return out


@EC2.operation()
def modify_volume(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    resources.unsupported(p, "MultiAttachEnabled", "MultiAvailabilityZoneConfiguration", "TrimOnAttach")
    s = ctx.session
    hold_write_lock(s, [f"volumes:{ctx.account_id}", f"volume:{p['VolumeId']}"])
    v = volumes.owned(ctx, p["VolumeId"])
    size = v.size_gib if p.get("Size") is None else int(p["Size"])
    volume_type = volumes.volume_type_named(p.get("VolumeType") or v.volume_type)
    if size < v.size_gib:
        raise CloudError(
            "InvalidParameterValue",
            f"New size {size}GiB cannot be smaller than the existing size {v.size_gib}GiB.",
        )
    volumes.check_size(volume_type, size)
    # AWS's defaults: the IOPS and throughput stay within a type; a new provisioned type starts at
    # 3,000 IOPS (and gp3 at 125 MiB/s).
    same_type = volume_type == v.volume_type
    iops = p.get("Iops") if p.get("Iops") is not None else (v.iops if same_type else None)
    throughput = (
        p.get("Throughput") if p.get("Throughput") is not None else (v.throughput if same_type else None)
    )
    iops, throughput = volumes.performance(volume_type, size, iops, throughput)
    if (size, volume_type, iops, throughput) == (v.size_gib, v.volume_type, v.iops, v.throughput):
        raise CloudError("InvalidParameterCombination", f"The modification asks for no change to {v.id}.")
    if v.modification_state == "modifying":
        raise CloudError(
            "IncorrectModificationState", f"Volume {v.id} is already being modified; wait for it to complete."
        )
    if v.state not in ("available", "in-use"):
        raise CloudError("IncorrectState", f"'{v.id}' is in the '{v.state}' state.")
    volumes.check_quota(s, str(ctx.account_id), 0, size - v.size_gib)
    v.original_size_gib, v.original_volume_type = v.size_gib, v.volume_type
    v.original_iops, v.original_throughput = v.iops, v.throughput
    v.target_size_gib, v.target_volume_type, v.target_iops, v.target_throughput = (
        size,
        volume_type,
        iops,
        throughput,
    )
    v.modification_state, v.modification_started, v.modification_ended = "modifying", clock.now(), None
    return {"VolumeModification": modification_view(v)}


_MODIFICATION_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "modification-state": lambda v: v["ModificationState"],
    "volume-id": lambda v: v["VolumeId"],
    "start-time": lambda v: clock.iso8601(v["StartTime"]),
    "target-size": lambda v: v["TargetSize"],
    "target-iops": lambda v: v.get("TargetIops"),
    "target-volume-type": lambda v: v["TargetVolumeType"],
    "target-throughput": lambda v: v.get("TargetThroughput"),
    "targetMultiAttachEnabled": lambda v: v["TargetMultiAttachEnabled"],
    "original-size": lambda v: v["OriginalSize"],
    "original-iops": lambda v: v.get("OriginalIops"),
    "original-volume-type": lambda v: v["OriginalVolumeType"],
    "original-throughput": lambda v: v.get("OriginalThroughput"),
    "originalMultiAttachEnabled": lambda v: v["OriginalMultiAttachEnabled"],
}


@EC2.operation()
def describe_volumes_modifications(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    named = p.get("VolumeIds") or []
    found = volumes.visible(ctx, named)
    unmodified = [v.id for v in found if v.modification_state is None and v.id in named]
    if unmodified:
        raise CloudError(
            "InvalidVolumeModification.NotFound", f"Modification for volume '{unmodified[0]}' does not exist."
        )
    views = [modification_view(v) for v in found if v.modification_state is not None]
    views = filters.apply(views, p.get("Filters"), _MODIFICATION_FILTERS)
    return volumes.one_page(p, views, "VolumesModifications", 500, with_ids=True)
