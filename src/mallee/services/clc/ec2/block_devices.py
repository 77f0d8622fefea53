"""The EBS volumes an instance starts with: from its image's block device mappings (an EBS-backed
image's root and other disks are snapshots) and RunInstances' own BlockDeviceMappings, which may
change a mapping's size, type and DeleteOnTermination, add volumes or drop one (NoDevice).

RunInstances records each as a `creating` volume with an `attaching` attachment (volume_tables.py)
next to the instance; the launch names them (rpc/node.py LaunchVolume), the node waits for their
exports, and the volume reconciler creates, exports and hands them over like any other attachment.
StartInstances sends the instance's attachments at the time (a volume attached while it was
stopped is there at boot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import node
from mallee.services.clc.ec2 import snapshot_attributes, tags, volume_attachments, volumes
from mallee.services.clc.tables import Image, Instance
from mallee.services.clc.volume_tables import Volume, VolumeAttachment

ROOT_TARGET = "vda"
_TARGETS = [f"vd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz"]


@dataclass(frozen=True)
class Device:
    """One volume to make for each instance of a launch."""

    device_name: str
    snapshot_id: str | None
    size_gib: int
    volume_type: str
    iops: int | None
    throughput: int | None
    delete_on_termination: bool
    root: bool

    def mapping(self) -> dict[str, Any]:
        """The device as an image's BlockDeviceMapping, the way AWS shows it."""
        ebs: dict[str, Any] = {
            "DeleteOnTermination": self.delete_on_termination,
            "VolumeSize": self.size_gib,
            "VolumeType": self.volume_type,
            "Encrypted": False,
        }
        if self.snapshot_id:
            ebs["SnapshotId"] = self.snapshot_id
        if self.iops is not None:
            ebs["Iops"] = self.iops
        if self.throughput is not None:
            ebs["Throughput"] = self.throughput
        return {"DeviceName": self.device_name, "Ebs": ebs}


def image_mappings(image: Image) -> list[dict[str, Any]]:
    mappings: list[dict[str, Any]] = json.loads(image.block_device_mappings)
    return mappings


def _requested(m: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """A mapping's device name and Ebs settings (None: NoDevice), refusing what Mallee has not."""
    device = m.get("DeviceName") or ""
    if not device:
        raise CloudError("InvalidBlockDeviceMapping", "Each block device mapping needs a DeviceName.")
    if not volume_attachments.valid_device(device):
        raise CloudError("InvalidBlockDeviceMapping", f"{device} is not a valid EBS device name.")
    if m.get("VirtualName"):
        raise CloudError(
            "UnsupportedOperation", f"Mallee has no instance store volumes ({device}: {m['VirtualName']})."
        )
    if "NoDevice" in m:
        return device, None
    ebs = m.get("Ebs")
    if not ebs:
        raise CloudError("InvalidBlockDeviceMapping", f"The mapping of {device} names no Ebs volume.")
    if ebs.get("Encrypted") or ebs.get("KmsKeyId"):
        raise CloudError("UnsupportedOperation", "Mallee does not support encrypted volumes yet.")
    return device, {k: v for k, v in ebs.items() if v is not None}


def _merged(image: Image, requested: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Device name -> its Ebs settings: the image's (EBS images only), changed by the request's."""
    out: dict[str, dict[str, Any]] = {}
    if image.root_device_type == "ebs":
        for m in image_mappings(image):
            if m.get("Ebs"):
                out[m["DeviceName"]] = dict(m["Ebs"])
    for m in requested:
        device, ebs = _requested(m)
        if ebs is None and device == image.root_device_name:
            raise CloudError("InvalidBlockDeviceMapping", "The root device cannot be left out (NoDevice).")
        if ebs is None:
            out.pop(device, None)
        else:
            out[device] = {**out.get(device, {}), **ebs}
    return out


def _source(ctx: RequestContext, device: str, ebs: dict[str, Any]) -> tuple[str | None, int]:
    """The snapshot a mapping's volume is made from (completed, usable by the caller) and its size."""
    snapshot_id = ebs.get("SnapshotId") or None
    if snapshot_id is None:
        if not ebs.get("VolumeSize"):
            raise CloudError("InvalidBlockDeviceMapping", f"{device} needs a VolumeSize or a SnapshotId.")
        return None, int(ebs["VolumeSize"])
    snapshot = snapshot_attributes.restorable(ctx.session, str(ctx.account_id), snapshot_id)
    if snapshot.state != "completed":
        raise CloudError("IncorrectState", f"Snapshot '{snapshot_id}' is {snapshot.state}, not completed.")
    size = int(ebs.get("VolumeSize") or snapshot.volume_size_gib)
    if size < snapshot.volume_size_gib:
        raise CloudError(
            "InvalidBlockDeviceMapping",
            f"Volume of {size}GiB is smaller than snapshot '{snapshot_id}' ({snapshot.volume_size_gib}GiB).",
        )
    return snapshot_id, size


def _device(ctx: RequestContext, name: str, ebs: dict[str, Any], root: bool, keep_default: bool) -> Device:
    """One mapping's volume (its device name checked by `_requested`), checked as CreateVolume checks a
    volume."""
    snapshot_id, size = _source(ctx, name, ebs)
    volume_type = volumes.volume_type_named(ebs.get("VolumeType"))
    volumes.check_size(volume_type, size)
    iops, throughput = volumes.performance(volume_type, size, ebs.get("Iops"), ebs.get("Throughput"))
    keep = ebs.get("DeleteOnTermination")
    return Device(
        name,
        snapshot_id,
        size,
        volume_type,
        iops,
        throughput,
        keep_default if keep is None else bool(keep),
        root,
    )


def plan(ctx: RequestContext, image: Image, requested: list[dict[str, Any]] | None) -> list[Device]:
    """The volumes each instance gets (the root first), checked as CreateVolume checks them."""
    root_name = image.root_device_name if image.root_device_type == "ebs" else None
    devices = [
        _device(ctx, name, ebs, name == root_name, keep_default=name == root_name)
        for name, ebs in _merged(image, requested or []).items()
    ]
    if root_name is not None and not any(d.root for d in devices):
        raise CloudError("InvalidBlockDeviceMapping", f"{image.id} maps no volume at its root {root_name}.")
    if len(devices) > volume_attachments.MAX_ATTACHED + (1 if root_name else 0):
        raise CloudError("InvalidBlockDeviceMapping", "Too many block device mappings.")
    devices.sort(key=lambda d: (not d.root, d.device_name))
    return devices


def record(
    s: Session, instance: Instance, devices: list[Device], tag_specs: list[dict[str, Any]] | None
) -> list[node.LaunchVolume]:
    """The instance's volumes as `creating`, attached (`attaching`) at their devices; their targets."""
    launch_volumes = []
    now = clock.now()
    for index, d in enumerate(devices):
        volume = Volume(
            id=ids.resource_id("vol"),
            account_id=instance.account_id,
            zone=instance.zone,
            size_gib=d.size_gib,
            volume_type=d.volume_type,
            iops=d.iops,
            throughput=d.throughput,
            snapshot_id=d.snapshot_id,
            state="creating",
            state_reason="",
            created=now,
            client_token=None,
            auto_enable_io=False,
        )
        s.add(volume)
        target = ROOT_TARGET if d.root else _TARGETS[index - (1 if devices[0].root else 0)]
        s.add(
            VolumeAttachment(
                volume_id=volume.id,
                instance_id=instance.id,
                device=d.device_name,
                state="attaching",
                force=False,
                delete_on_termination=d.delete_on_termination,
                attach_time=now,
                target=target,
            )
        )
        s.flush()
        tags.from_specifications(
            s,
            instance.account_id,
            volume.id,
            "volume",
            [t for t in tag_specs or [] if t.get("ResourceType") == "volume"],
        )
        launch_volumes.append(node.LaunchVolume(volume_id=volume.id, target=target))
    return launch_volumes


def launch_volumes(s: Session, instance: Instance) -> list[node.LaunchVolume]:
    """What a start plugs in: the root at vda, the other attached volumes after it in device order."""
    attached = list(
        s.scalars(
            select(VolumeAttachment).where(
                VolumeAttachment.instance_id == instance.id, VolumeAttachment.state != "detaching"
            )
        )
    )
    root = [a for a in attached if a.device == instance.root_device_name]
    others = sorted((a for a in attached if a.device != instance.root_device_name), key=lambda a: a.device)
    out = [node.LaunchVolume(volume_id=a.volume_id, target=ROOT_TARGET) for a in root]
    out += [
        node.LaunchVolume(volume_id=a.volume_id, target=t) for a, t in zip(others, _TARGETS, strict=False)
    ]
    return out


def discard(s: Session, instance: Instance) -> None:
    """A launch that was refused: the volumes recorded for it go with it (AWS never shows them)."""
    for a in list(s.scalars(select(VolumeAttachment).where(VolumeAttachment.instance_id == instance.id))):
        volume = s.get(Volume, a.volume_id)
        s.delete(a)
        if volume is not None:
            tags.remove_all(s, volume.id)
            s.delete(volume)


def for_image(ctx: RequestContext, mappings: list[dict[str, Any]], root_device: str) -> list[dict[str, Any]]:
    """RegisterImage's BlockDeviceMappings for an EBS-backed image, checked and completed as AWS
    shows them: each volume from a completed snapshot the caller may use (or empty, with a size);
    the root must come from a snapshot."""
    out: list[dict[str, Any]] = []
    for m in mappings:
        device, ebs = _requested(m)
        if ebs is None:
            continue
        if device == root_device and not ebs.get("SnapshotId"):
            raise CloudError(
                "InvalidBlockDeviceMapping", f"The root device {root_device} needs a SnapshotId."
            )
        out.append(_device(ctx, device, ebs, device == root_device, keep_default=True).mapping())
    if not any(m["DeviceName"] == root_device for m in out):
        raise CloudError(
            "InvalidBlockDeviceMapping",
            f"An EBS-backed image maps a snapshot at its root device {root_device}.",
        )
    return out
