"""Volumes on one node: hot-plugging the SC's exports into running instances and unplugging them
(rpc/node.py ATTACH_VOLUME, DETACH_VOLUME).

A volume is plugged in as the instance's first free virtio disk (vdb, vdc, …) with the volume id as
the disk's serial, without its dash so that it fits virtio's 20 bytes (`vol0123…`, as AWS's NVMe
serial): the guest finds it in /dev/disk/by-id/virtio-vol0123…, whatever order disks came in. The
hypervisor keeps attached disks in the domain's stored spec, so they are known again after a node
controller restart and reported with their instance (`attached`).
"""

from __future__ import annotations

import logging
import string
from dataclasses import replace
from pathlib import Path

from mallee.drivers.hypervisor import base as hv
from mallee.rpc.node import AttachVolume, DetachVolume
from mallee.rpc.storage import VolumeExport

log = logging.getLogger(__name__)


class VolumeRefused(ValueError):
    """An attach this node cannot do (the instance is not running here, no free disk, a bad export)."""


def serial_of(volume_id: str) -> str:
    return volume_id.replace("-", "", 1)


def volume_of(serial: str | None) -> str | None:
    if not serial or not serial.startswith("vol") or serial.startswith("vol-"):
        return None
    return "vol-" + serial[3:]


def attached(spec: hv.InstanceSpec | None) -> dict[str, str]:
    """Volume id -> guest disk, for the volumes plugged into an instance."""
    found: dict[str, str] = {}
    for disk in spec.disks if spec is not None else ():
        volume_id = volume_of(disk.serial)
        if volume_id is not None:
            found[volume_id] = disk.target
    return found


def disk_for(export: VolumeExport, target: str) -> hv.DiskSpec:
    if export.protocol != "nbd" or not export.endpoints:
        raise VolumeRefused(f"{export.volume_id}: this node opens NBD exports only, not {export.protocol!r}")
    where = export.endpoints[0]
    disk = hv.DiskSpec(
        target=target, format="raw", serial=serial_of(export.volume_id), nbd_export=export.name
    )
    if where.socket:
        return replace(disk, nbd_socket=Path(where.socket))
    return replace(disk, nbd_host=where.host, nbd_port=where.port)


def _free_target(spec: hv.InstanceSpec) -> str:
    used = {disk.target for disk in spec.disks}
    for letter in string.ascii_lowercase[1:]:
        if f"vd{letter}" not in used:
            return f"vd{letter}"
    raise VolumeRefused(f"{spec.instance_id} has no free disk left")


def attach(hypervisor: hv.Hypervisor, request: AttachVolume) -> str:
    """Plug the volume in (a no-op when it is in already); returns its guest disk."""
    spec = hypervisor.describe(request.instance_id)
    if spec is None or hypervisor.state(request.instance_id) is not hv.PowerState.RUNNING:
        raise VolumeRefused(f"{request.instance_id} is not running on this node")
    present = attached(spec).get(request.export.volume_id)
    if present is not None:
        return present
    target = _free_target(spec)
    hypervisor.attach_disk(request.instance_id, disk_for(request.export, target))
    log.info("attached %s to %s as %s", request.export.volume_id, request.instance_id, target)
    return target


def detach(hypervisor: hv.Hypervisor, request: DetachVolume) -> None:
    """Unplug the volume once the guest let go of it (the hypervisor waits); gone is success."""
    target = attached(hypervisor.describe(request.instance_id)).get(request.volume_id)
    if target is None:
        return
    hypervisor.detach_disk(request.instance_id, target)
    log.info("detached %s from %s (%s)", request.volume_id, request.instance_id, target)
