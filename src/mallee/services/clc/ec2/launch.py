"""What RunInstances needs beyond its own parameters: the image (and its kernel and ramdisk) the
caller may launch, the key pair, and the launch description sent to the cluster (where the
instance goes in its VPC is interfaces.py's)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import node
from mallee.services.clc import peers
from mallee.services.clc.ec2 import interfaces, tags
from mallee.services.clc.network_tables import NetworkInterface
from mallee.services.clc.tables import Image, Instance, InstanceType, KeyPair, LaunchPermission

URL_SECONDS = 3600  # how long a node may take to start fetching an image


@dataclass(frozen=True)
class LaunchImage:
    image_id: str
    kernel_id: str | None
    ramdisk_id: str | None
    machine: Image
    kernel: Image | None
    ramdisk: Image | None


def _launchable(ctx: RequestContext, image_id: str, kind: str) -> Image:
    prefix = {"machine": "ami", "kernel": "aki", "ramdisk": "ari"}[kind]
    if not ids.is_resource_id(image_id, prefix):
        code = "InvalidAMIID.Malformed" if kind == "machine" else "InvalidParameterValue"
        raise CloudError(code, f'Invalid id: "{image_id}" (expecting "{prefix}-...")')
    image: Image | None = ctx.session.get(Image, image_id)
    allowed = image is not None and (
        image.account_id == ctx.account_id
        or image.is_public
        or ctx.session.get(LaunchPermission, (image_id, ctx.account_id)) is not None
    )
    if image is None or not allowed or image.state != "available":
        code = "InvalidAMIID.NotFound" if kind == "machine" else "InvalidParameterValue"
        raise CloudError(code, f"The image id '[{image_id}]' does not exist")
    return image


def resolve_image(ctx: RequestContext, p: dict[str, Any]) -> LaunchImage:
    if not p.get("ImageId"):
        raise CloudError("MissingParameter", "The request must contain the parameter ImageId")
    machine = _launchable(ctx, p["ImageId"], "machine")
    kernel_id = p.get("KernelId") or machine.kernel_id
    ramdisk_id = p.get("RamdiskId") or machine.ramdisk_id
    kernel = _launchable(ctx, kernel_id, "kernel") if kernel_id else None
    ramdisk = _launchable(ctx, ramdisk_id, "ramdisk") if ramdisk_id else None
    return LaunchImage(machine.id, kernel_id, ramdisk_id, machine, kernel, ramdisk)


def resolve_key(ctx: RequestContext, name: str | None) -> KeyPair | None:
    if not name:
        return None
    key: KeyPair | None = ctx.session.scalar(
        select(KeyPair).where(KeyPair.account_id == ctx.account_id, KeyPair.name == name)
    )
    if key is None:
        raise CloudError("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    return key


def _source(image: Image) -> node.ImageSource:
    bucket, _, key = image.location.partition("/")
    presign = peers.get().presign
    url = presign(bucket, key, URL_SECONDS)
    if image.source_format != "bundle":
        fmt: Literal["raw", "qcow2"] = "qcow2" if image.source_format == "qcow2" else "raw"
        return node.ImageSource(key=image.id, url=url, size=image.size or None, format=fmt)
    if not image.manifest:
        raise CloudError(
            "InvalidManifest", f"{image.id} was registered without its manifest: register it again."
        )
    manifest = msgspec.json.decode(image.manifest, type=node.BundleManifest)
    # Each part is an object named by its file name, next to the manifest (as euca-upload-bundle
    # stores them).
    directory = key.rpartition("/")[0]
    prefix = f"{directory}/" if directory else ""
    parts = tuple(presign(bucket, prefix + name, URL_SECONDS) for name, _digest in manifest.parts)
    return node.ImageSource(
        key=image.id, url=url, size=image.size or None, format="bundle", parts=parts, bundle=manifest
    )


def image_sources(image: LaunchImage) -> node.LaunchImage:
    """What a node fetches to boot `image` (presigned URLs, good for URL_SECONDS); an EBS-backed
    image's root is a volume (block_devices.py), not a file."""
    return node.LaunchImage(
        root=None if image.machine.root_device_type == "ebs" else _source(image.machine),
        kernel=_source(image.kernel) if image.kernel else None,
        ramdisk=_source(image.ramdisk) if image.ramdisk else None,
    )


def boot_sources(s: Session, record: Instance) -> node.LaunchImage:
    """An EBS-backed instance's kernel and ramdisk again, with fresh URLs (StartInstances)."""
    found = {}
    for image_id in (record.kernel_id, record.ramdisk_id):
        if image_id:
            image = s.get(Image, image_id)
            if image is None or image.state != "available":
                raise CloudError(
                    "IncorrectInstanceState",
                    f"The instance '{record.id}' cannot start: its {image_id} is no longer registered.",
                )
            found[image_id] = image
    return node.LaunchImage(
        kernel=_source(found[record.kernel_id]) if record.kernel_id else None,
        ramdisk=_source(found[record.ramdisk_id]) if record.ramdisk_id else None,
    )


def launch_request(
    record: Instance,
    itype: InstanceType,
    sources: node.LaunchImage,
    key: KeyPair | None,
    where: interfaces.Placement,
    eni: NetworkInterface,
    block_devices: list[node.LaunchVolume],
) -> node.InstanceLaunch:
    """The launch of one instance as its node receives it, with its primary interface `eni`."""
    return node.InstanceLaunch(
        instance_id=record.id,
        reservation_id=record.reservation_id,
        account_id=record.account_id,
        instance_type=node_type(itype),
        image=sources,
        private_ip=record.private_ip,
        mac=record.mac,
        hostname=record.id,
        key_name=key.name if key else None,
        public_key=key.public_key if key else None,
        user_data=record.user_data,
        availability_zone=record.zone,
        launch_index=record.launch_index,
        interface=node.LaunchInterface(
            interface_id=eni.id, vpc_id=where.vpc.id, vni=where.vpc.vni, subnet_id=where.subnet.id
        ),
        block_devices=block_devices,
    )


def node_type(itype: InstanceType) -> node.InstanceType:
    return node.InstanceType(
        name=itype.name, cpus=itype.cpus, memory_mib=itype.memory_mib, disk_gib=itype.disk_gib
    )


def apply_tags(ctx: RequestContext, records: list[Instance], specs: list[dict[str, Any]] | None) -> None:
    """The instance's TagSpecifications (those for its volumes went with them, block_devices.py)."""
    assert ctx.account_id is not None
    mine = [spec for spec in specs or [] if spec.get("ResourceType") != "volume"]
    for record in records:
        ctx.session.flush()
        tags.from_specifications(ctx.session, ctx.account_id, record.id, "instance", mine)


def user_data_bytes(record: Instance) -> bytes:
    return base64.b64decode(record.user_data) if record.user_data else b""
