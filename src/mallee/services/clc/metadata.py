"""The EC2 instance metadata service's answers (169.254.169.254). A node controller proxies each
guest request here with the guest's VPC and private address; together they identify the instance
(addresses repeat across VPCs), so an instance only ever reads its own metadata."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.services.clc.ec2.instance_views import Network, public_dns
from mallee.services.clc.tables import Instance, KeyPair
from mallee.services.clc.volume_tables import VolumeAttachment

Tree = dict[str, Any]  # a nested directory: str leaves, dict subdirectories
# The dated versions answered (all alike); cloud-init asks for 2021-03-23, then 2018-09-24, first.
VERSIONS = ("latest", "2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23")


def _block_devices(s: Session, i: Instance) -> Tree:
    """ami and root: the root device; ebs1, ebs2, …: the other volumes attached, in device order."""
    tree: Tree = {"ami": i.root_device_name, "root": i.root_device_name}
    q = select(VolumeAttachment.device).where(
        VolumeAttachment.instance_id == i.id, VolumeAttachment.device != i.root_device_name
    )
    for n, device in enumerate(sorted(s.scalars(q)), start=1):
        tree[f"ebs{n}"] = device
    return tree


def _tree(s: Session, i: Instance) -> Tree:
    key = (
        s.scalar(select(KeyPair).where(KeyPair.account_id == i.account_id, KeyPair.name == i.key_name))
        if i.key_name
        else None
    )
    hostname = f"ip-{i.private_ip.replace('.', '-')}"
    net = Network.of(s, [i])
    eni, public_ip = net.interfaces.get(i.id, (None, None))
    groups = net.groups_of(eni) if eni is not None else []
    public_hostname = public_dns(public_ip, i.zone[:-1]) if public_ip else ""
    meta: Tree = {
        "ami-id": i.image_id,
        "ami-launch-index": str(i.launch_index),
        "ami-manifest-path": "(unknown)",
        "block-device-mapping": _block_devices(s, i),
        "hostname": hostname,
        "instance-action": "none",
        "instance-id": i.id,
        "instance-type": i.instance_type,
        "local-hostname": hostname,
        "local-ipv4": i.private_ip,
        "mac": i.mac,
        "placement": {"availability-zone": i.zone, "region": i.zone[:-1]},
        "public-hostname": public_hostname,
        "public-ipv4": public_ip or "",
        "reservation-id": i.reservation_id,
        "security-groups": "\n".join(g["GroupName"] for g in groups) or "default",
    }
    if eni is not None:  # what cloud-init reads to configure the interface
        mac: Tree = {
            "device-number": "0",
            "interface-id": eni.id,
            "local-hostname": hostname,
            "local-ipv4s": eni.private_ip,
            "mac": eni.mac,
            "owner-id": i.account_id,
            "security-group-ids": "\n".join(g["GroupId"] for g in groups),
            "security-groups": "\n".join(g["GroupName"] for g in groups),
            "subnet-id": eni.subnet_id,
            "vpc-id": eni.vpc_id,
        }
        if public_ip:
            mac["public-ipv4s"] = public_ip
            mac["public-hostname"] = public_hostname
        meta["network"] = {"interfaces": {"macs": {eni.mac: mac}}}
    if i.kernel_id:
        meta["kernel-id"] = i.kernel_id
    if i.ramdisk_id:
        meta["ramdisk-id"] = i.ramdisk_id
    if key is not None:
        meta["public-keys"] = {"0": {"openssh-key": key.public_key + "\n"}}
    return meta


def _listing(tree: Tree) -> str:
    names = []
    for name, value in tree.items():
        if name == "public-keys":  # EC2 lists keys as "0=<key name>"
            names.append(name + "/")
        else:
            names.append(name + "/" if isinstance(value, dict) else name)
    return "\n".join(names)


def answer(s: Session, vpc_id: str, private_ip: str, path: str) -> tuple[int, bytes]:
    """(HTTP status, body) for a guest's GET of `path` (e.g. /latest/meta-data/instance-id)."""
    instance = s.scalar(
        select(Instance).where(
            Instance.vpc_id == vpc_id,
            Instance.private_ip == private_ip,
            Instance.state.in_(("pending", "running")),
        )
    )
    if instance is None:
        return 404, b"Not Found"
    parts = [p for p in path.split("/") if p]
    if not parts:
        return 200, b"latest"
    if parts[0] not in VERSIONS:
        return 404, b"Not Found"
    if len(parts) == 1:
        return 200, b"dynamic\nmeta-data\nuser-data"
    section = parts[1]
    if section == "user-data":
        data = base64.b64decode(instance.user_data) if instance.user_data else b""
        return (200, data) if data else (404, b"Not Found")
    handlers: dict[str, Callable[[], Tree]] = {
        "meta-data": lambda: _tree(s, instance),
        "dynamic": lambda: {"instance-identity": {"document": _identity(instance)}},
    }
    if section not in handlers:
        return 404, b"Not Found"
    node: Any = handlers[section]()
    for name in parts[2:]:
        if not isinstance(node, dict) or name not in node:
            return 404, b"Not Found"
        node = node[name]
    if isinstance(node, dict):
        if parts[2:] == ["public-keys"] and instance.key_name:
            return 200, f"0={instance.key_name}".encode()
        return 200, _listing(node).encode()
    return 200, str(node).encode()


def _identity(i: Instance) -> str:
    return json.dumps(
        {
            "accountId": i.account_id,
            "architecture": "x86_64",
            "availabilityZone": i.zone,
            "imageId": i.image_id,
            "instanceId": i.id,
            "instanceType": i.instance_type,
            "privateIp": i.private_ip,
            "region": i.zone[:-1],
            "version": "2017-09-30",
        },
        indent=2,
    )
