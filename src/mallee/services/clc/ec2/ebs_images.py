"""CreateImage: a new EBS-backed AMI, owned by the caller, from an EBS-backed instance's volumes.

With NoReboot, or from a stopped instance, each attached volume is snapshotted at once (the SC
takes a point-in-time copy: the volume stays in use). Without it, from a running instance, it is
done cleanly as AWS does: the instance is stopped, its volumes snapshotted, and it is started
again. Every step is recorded first (`Image.build_stage`: "stopping", then "snapshotting") and the
reconciler moves the build on (`advance_builds`), so a crash anywhere only delays it. The image is
`pending` until all its snapshots are completed, then `available` (`failed` if one failed or the
instance went away during the build).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc import placement
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import block_devices, images, instance_power, resources, snapshots, tags
from mallee.services.clc.ec2.instances import visible
from mallee.services.clc.tables import Image, Instance
from mallee.services.clc.volume_tables import Snapshot, Volume, VolumeAttachment

log = logging.getLogger(__name__)


def _snapshot_volumes(s: Session, image: Image, instance: Instance, dropped: set[str]) -> None:
    """Snapshot each volume attached to the instance (but those left out) into the image's mappings."""
    mappings = []
    attachments = s.scalars(
        select(VolumeAttachment)
        .where(VolumeAttachment.instance_id == instance.id, VolumeAttachment.state != "detaching")
        .order_by(VolumeAttachment.device)
    )
    for a in attachments:
        volume = s.get(Volume, a.volume_id)
        if volume is None or a.device in dropped:
            continue
        description = f"Created by CreateImage({instance.id}) for {image.id} from {volume.id}"
        snapshot = snapshots.record(s, image.account_id, volume.id, volume.size_gib, volume.zone, description)
        device = block_devices.Device(
            a.device,
            snapshot.id,
            volume.size_gib,
            volume.volume_type,
            volume.iops,
            volume.throughput,
            a.delete_on_termination,
            a.device == instance.root_device_name,
        )
        mappings.append(device.mapping())
    image.block_device_mappings = json.dumps(mappings)
    image.build_stage = "snapshotting" if image.build_instance_id else ""


def _dropped(mappings: list[dict[str, Any]], root_device: str) -> set[str]:
    """CreateImage's BlockDeviceMappings: only NoDevice (leave a volume out) is supported."""
    out = set()
    for m in mappings:
        device = m.get("DeviceName") or ""
        if "NoDevice" not in m:
            raise CloudError(
                "UnsupportedOperation",
                f"CreateImage here takes NoDevice mappings only (to leave a volume out), not {device}'s.",
            )
        if device == root_device:
            raise CloudError("InvalidBlockDeviceMapping", "The root device cannot be left out.")
        out.add(device)
    return out


@EC2.operation()
def create_image(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s = ctx.session
    account_id = str(ctx.account_id)
    name = images.checked_name(p.get("Name"))
    instance = visible(ctx, [p["InstanceId"]])[0]
    resources.unsupported(p, "SnapshotLocation")
    if instance.root_device_type != "ebs":
        raise CloudError(
            "InvalidParameterValue",
            f"The instance '{instance.id}' has an instance-store root: bundle it instead (CreateImage "
            "makes EBS-backed images).",
        )
    hold_write_lock(s, [f"images:{account_id}", f"instance-devices:{instance.id}"])
    images.refuse_duplicate(s, account_id, name)
    if instance.state not in ("running", "stopped"):
        raise CloudError(
            "IncorrectInstanceState",
            f"The instance '{instance.id}' is not in a state from which it can be imaged.",
        )
    dropped = _dropped(p.get("BlockDeviceMappings") or [], instance.root_device_name)
    reboot = instance.state == "running" and not p.get("NoReboot")
    specs = p.get("TagSpecifications") or []
    if reboot and any(t.get("ResourceType") == "snapshot" for t in specs):
        raise CloudError(
            "UnsupportedOperation", "Snapshot TagSpecifications need NoReboot (or a stopped instance) here."
        )
    image = Image(
        id=ids.resource_id("ami"),
        account_id=account_id,
        name=name,
        description=p.get("Description") or "",
        image_type="machine",
        location=f"{account_id}/{name}",
        source_format="ebs",
        manifest="",
        size=0,
        architecture="x86_64",
        kernel_id=instance.kernel_id,
        ramdisk_id=instance.ramdisk_id,
        virtualization_type="paravirtual" if instance.kernel_id else "hvm",
        root_device_name=instance.root_device_name,
        block_device_mappings=json.dumps([{"DeviceName": d, "NoDevice": ""} for d in sorted(dropped)]),
        is_public=False,
        state="pending",
        created=clock.now(),
        root_device_type="ebs",
        build_instance_id=instance.id if reboot else None,
        build_stage="stopping" if reboot else "",
    )
    s.add(image)
    s.flush()
    tags.from_specifications(
        s, account_id, image.id, "image", [t for t in specs if t.get("ResourceType") == "image"]
    )
    if reboot:
        placement.stopping(instance, f"CreateImage {image.id}")
    else:
        _snapshot_volumes(s, image, instance, dropped)
        _tag_snapshots(s, image, specs)
    s.commit()  # record, then ask
    if reboot:
        instance_power.ask_to_stop({instance.zone: [instance.id]})
    return {"ImageId": image.id}


def _tag_snapshots(s: Session, image: Image, specs: list[dict[str, Any]]) -> None:
    mine = [t for t in specs if t.get("ResourceType") == "snapshot"]
    for snapshot_id in _snapshot_ids(image):
        tags.from_specifications(s, image.account_id, snapshot_id, "snapshot", mine)


def _snapshot_ids(image: Image) -> list[str]:
    return [m["Ebs"]["SnapshotId"] for m in json.loads(image.block_device_mappings) if m.get("Ebs")]


def advance_builds(s: Session) -> None:
    """One reconciler step for every pending image: a stopped build instance is snapshotted; once
    the snapshots are done the instance is started again and the image is available (or failed)."""
    for image in list(
        s.scalars(select(Image).where(Image.state == "pending", Image.root_device_type == "ebs"))
    ):
        instance = s.get(Instance, image.build_instance_id) if image.build_instance_id else None
        if image.build_stage == "stopping":
            if instance is None or instance.state in ("shutting-down", "terminated"):
                image.state, image.build_stage = "failed", ""
            elif instance.state == "stopped":
                dropped = {
                    m["DeviceName"] for m in json.loads(image.block_device_mappings) if "NoDevice" in m
                }
                _snapshot_volumes(s, image, instance, dropped)
            continue
        states = [s.get(Snapshot, i) for i in _snapshot_ids(image)]
        if any(x is None or x.state in ("error", "deleting") for x in states):
            image.state = "failed"
        elif all(x is not None and x.state == "completed" for x in states):
            image.state = "available"
        else:
            continue
        if image.build_stage == "snapshotting" and instance is not None and instance.state == "stopped":
            try:
                instance_power.record_start(s, instance)  # placed by the reconciler's next pass
            except CloudError as exc:
                log.warning("%s stays stopped after building %s: %s", instance.id, image.id, exc.message)
        image.build_stage = ""
