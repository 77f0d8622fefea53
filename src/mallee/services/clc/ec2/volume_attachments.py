"""Volume attachments: AttachVolume, DetachVolume, and the DeleteOnTermination flag that
ModifyInstanceAttribute's BlockDeviceMappings sets. Record only, as volumes.py: the reconciler has
the node plug and unplug the volume (volume_tables.py)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, volumes
from mallee.services.clc.tables import Image, Instance
from mallee.services.clc.volume_tables import VolumeAttachment

# AWS's device names for Linux instances (https://docs.aws.amazon.com/ebs/latest/userguide/
# device_naming.html): /dev/sd[a-z] with an optional partition 1–15, /dev/hd[a-z], /dev/xvd[a-z],
# /dev/xvd[b-c][a-z], and the bare xvd[a-z] names Windows instances use.
_DEVICE = re.compile(r"^(/dev/(sd|hd)[a-z]([1-9]|1[0-5])?|/dev/xvd[a-z]|/dev/xvd[bc][a-z]|xvd[a-z])$")


# The node's domains have this many spare PCIe ports for hot-plugged disks (domain_xml.py).
MAX_ATTACHED = 8
_ROOT_DEVICE = re.compile(r"^/dev/vd[a-z]$")  # also a root device name (images.ROOT_DEVICES)


def valid_device(device: str) -> bool:
    return bool(_DEVICE.match(device) or _ROOT_DEVICE.match(device))


def _disk(device: str) -> str:
    """The disk a device name stands for: Xen kernels rename /dev/sdf to /dev/xvdf, so sdf, xvdf and
    hdf are one disk, and /dev/sda1 is a partition of the disk sda."""
    name = device.removeprefix("/dev/")
    for prefix in ("xvd", "hd"):
        if name.startswith(prefix):
            name = "sd" + name[len(prefix) :]
    return name.rstrip("0123456789")


def _instance(ctx: RequestContext, instance_id: str) -> Instance:
    resources.check_id(instance_id, "i", "InvalidInstanceID.Malformed")
    instance: Instance | None = ctx.session.get(Instance, instance_id)
    if instance is None or instance.account_id != ctx.account_id:
        raise CloudError("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist")
    return instance


def _root_device(ctx: RequestContext, instance: Instance) -> str:
    if instance.root_device_type == "ebs":
        return instance.root_device_name
    image = ctx.session.get(Image, instance.image_id)
    return image.root_device_name if image is not None and image.root_device_name else "/dev/sda1"


@EC2.operation()
def attach_volume(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    resources.unsupported(p, "EbsCardIndex")
    device = p["Device"]
    if not _DEVICE.match(device):
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name.",
        )
    s = ctx.session
    hold_write_lock(s, [f"volume:{p['VolumeId']}", f"instance-devices:{p['InstanceId']}"])
    volume = volumes.owned(ctx, p["VolumeId"])
    instance = _instance(ctx, p["InstanceId"])
    # What the caller can fix comes first; the volume's state (which the reconciler moves) last.
    if instance.zone != volume.zone:
        raise CloudError(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{volume.id}' is not in the same availability zone as instance '{instance.id}'",
        )
    volumes.check_storage_answers(s, volume.zone)
    if instance.state not in ("running", "stopped"):  # a stopped one has it plugged in at its start
        raise CloudError("IncorrectState", f"Instance '{instance.id}' is not 'running'.")
    root = _root_device(ctx, instance)
    taken = [
        a.device
        for a in s.scalars(select(VolumeAttachment).where(VolumeAttachment.instance_id == instance.id))
    ]
    # An EBS root is one of the attachments (a stopped instance's may be detached and replaced).
    reserved = [] if instance.root_device_type == "ebs" else [root]
    if _disk(device) in {_disk(d) for d in [*taken, *reserved]}:
        raise CloudError("InvalidParameterValue", f"Attachment point {device} is already in use")
    if len([d for d in taken if d != root]) >= MAX_ATTACHED:
        raise CloudError(
            "AttachmentLimitExceeded",
            f"Instance '{instance.id}' has {len(taken)} volumes: the most it can have.",
        )
    held = s.get(VolumeAttachment, volume.id)
    if held is not None:
        raise CloudError("VolumeInUse", f"{volume.id} is already attached to an instance")
    if volume.state != "available":
        raise CloudError("IncorrectState", f"'{volume.id}' is in the '{volume.state}' state.")
    attachment = VolumeAttachment(
        volume_id=volume.id,
        instance_id=instance.id,
        device=device,
        state="attaching",
        force=False,
        delete_on_termination=False,
        attach_time=clock.now(),
        target="",
    )
    s.add(attachment)
    volume.state = "in-use"
    s.flush()
    return volumes.attachment_view(attachment)


@EC2.operation()
def detach_volume(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    hold_write_lock(ctx.session, [f"volume:{p['VolumeId']}"])
    volume = volumes.owned(ctx, p["VolumeId"])
    if p.get("InstanceId"):
        resources.check_id(p["InstanceId"], "i", "InvalidInstanceID.Malformed")
    attachment = ctx.session.get(VolumeAttachment, volume.id)
    if attachment is None:
        raise CloudError("IncorrectState", f"'{volume.id}' is in the '{volume.state}' state.")
    instance_id, device = p.get("InstanceId") or attachment.instance_id, p.get("Device") or attachment.device
    if (instance_id, device) != (attachment.instance_id, attachment.device):
        raise CloudError(
            "InvalidAttachment.NotFound",
            f"Volume '{volume.id}' is not attached to instance '{instance_id}' at '{device}'.",
        )
    instance = ctx.session.get(Instance, attachment.instance_id)
    if instance is not None and instance.state in ("pending", "stopping"):  # its node may be waiting for it
        raise CloudError("IncorrectState", f"Instance '{instance.id}' is {instance.state}: detach it later.")
    if (
        instance is not None
        and attachment.device == instance.root_device_name
        and instance.root_device_type == "ebs"
        and instance.state != "stopped"
    ):
        raise CloudError(
            "IncorrectState",
            f"Unable to detach root volume '{volume.id}' from instance '{instance.id}': stop it first.",
        )
    # Detaching again is no error; Force on a detach that is stuck asks the node to pull it anyway.
    attachment.state = "detaching"
    attachment.force = attachment.force or bool(p.get("Force"))
    return volumes.attachment_view(attachment)


def set_delete_on_termination(
    ctx: RequestContext, instance: Instance, mappings: list[dict[str, Any]]
) -> None:
    """ModifyInstanceAttribute's BlockDeviceMappings: each names an attached volume by its device
    (and, optionally, its id) and sets its DeleteOnTermination."""
    s = ctx.session
    hold_write_lock(s, [f"instance-devices:{instance.id}"])
    attached = {
        a.device: a
        for a in s.scalars(select(VolumeAttachment).where(VolumeAttachment.instance_id == instance.id))
    }
    for mapping in mappings:
        resources.unsupported(mapping, "VirtualName", "NoDevice")
        device, ebs = mapping.get("DeviceName") or "", mapping.get("Ebs") or {}
        found = attached.get(device)
        if found is None or ebs.get("VolumeId") not in (None, "", found.volume_id):
            raise CloudError(
                "InvalidParameterValue",
                f"The instance '{instance.id}' has no such volume attached at '{device}'.",
            )
        if ebs.get("DeleteOnTermination") is None:
            raise CloudError(
                "MissingParameter", f"The mapping of '{device}' must contain Ebs.DeleteOnTermination"
            )
        found.delete_on_termination = bool(ebs["DeleteOnTermination"])
