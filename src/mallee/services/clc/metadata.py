"""The EC2 instance metadata service's answers (169.254.169.254). A node controller proxies each
guest request here with the guest's VPC and private address; together they identify the instance
(addresses repeat across VPCs), so an instance only ever reads its own metadata. A guest's IMDSv2
token PUT is asked here too: the node issues the token only when `token_answer` allows it."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.services.clc import instance_credentials
from mallee.services.clc.ec2.instance_identity import options_of
from mallee.services.clc.ec2.instance_views import Network, public_dns
from mallee.services.clc.ec2.tags import tags_of
from mallee.services.clc.identity_document import DocumentSigner
from mallee.services.clc.network_tables import NetworkInterface, Subnet, Vpc
from mallee.services.clc.tables import Instance, KeyPair
from mallee.services.clc.volume_tables import VolumeAttachment

Tree = dict[str, Any]  # a nested directory: str leaves, dict subdirectories
# Every version EC2's metadata service lists at `/`, oldest first; `latest` is the newest. A dated
# version serves what existed at that version (cloud-init asks for 2021-03-23, then 2018-09-24).
DATED = (
    "1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
    "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12", "2014-02-25", "2014-11-05",
    "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02", "2018-03-28", "2018-08-17", "2018-09-24",
    "2019-10-01", "2020-10-27", "2021-01-03", "2021-03-23", "2021-07-15", "2022-09-24",
)  # fmt: skip
VERSIONS = (*DATED, "latest")
# The version each meta-data category came with (EC2's "version introduced"; a category introduced
# between two listed versions appears from the next). Anything not named here came with 1.0.
INTRODUCED = {
    "local-hostname": "2007-01-19",
    "public-hostname": "2007-01-19",
    "public-ipv4": "2007-01-19",
    "instance-type": "2007-08-29",
    "ramdisk-id": "2007-10-10",
    "block-device-mapping": "2007-12-15",
    "kernel-id": "2008-02-01",
    "placement": "2008-02-01",
    "placement/region": "2020-10-27",
    "instance-action": "2008-09-01",
    "mac": "2011-01-01",
    "network": "2011-01-01",
    "network/interfaces/macs/*/vpc-ipv4-cidr-blocks": "2016-06-30",
    "iam": "2012-01-12",
    "services": "2014-02-25",
    "services/partition": "2015-10-20",
    "instance-life-cycle": "2019-10-01",
    "tags": "2021-03-23",
}
DYNAMIC_SINCE = "2009-04-04"  # dynamic/ (the instance identity document) came then


def _block_devices(s: Session, i: Instance) -> Tree:
    """ami and root: the root device; ebs1, ebs2, …: the other volumes attached, in device order."""
    tree: Tree = {"ami": i.root_device_name, "root": i.root_device_name}
    q = select(VolumeAttachment.device).where(
        VolumeAttachment.instance_id == i.id, VolumeAttachment.device != i.root_device_name
    )
    for n, device in enumerate(sorted(s.scalars(q)), start=1):
        tree[f"ebs{n}"] = device
    return tree


class Lazy:
    """A part of the tree worked out only when a request reaches it or lists its directory: most
    GETs read one leaf, and each part costs queries. `make()` gives the value, or None: absent."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = functools.cache(make)


def _resolve(value: Any) -> Any:
    return value.make() if isinstance(value, Lazy) else value


def _tree(s: Session, i: Instance, tagged: bool = False) -> Tree:
    """`tagged`: with the instance's tags (InstanceMetadataTags enabled)."""
    hostname = f"ip-{i.private_ip.replace('.', '-')}"
    net = functools.cache(lambda: _Interface.of(s, i))
    meta: Tree = {
        "ami-id": i.image_id,
        "ami-launch-index": str(i.launch_index),
        "ami-manifest-path": "(unknown)",
        "block-device-mapping": Lazy(lambda: _block_devices(s, i)),
        "hostname": hostname,
        "instance-action": "none",
        "instance-id": i.id,
        "instance-life-cycle": "on-demand",
        "instance-type": i.instance_type,
        "local-hostname": hostname,
        "local-ipv4": i.private_ip,
        "mac": i.mac,
        "network": Lazy(lambda: _network(s, i, net(), hostname)),
        "placement": {"availability-zone": i.zone, "region": i.zone[:-1]},
        "public-hostname": lambda: net().public_hostname,
        "public-ipv4": lambda: net().public_ip,
        "reservation-id": i.reservation_id,
        "security-groups": lambda: "\n".join(g["GroupName"] for g in net().groups) or "default",
        "services": {"domain": "amazonaws.com", "partition": "aws"},
    }
    if i.kernel_id:
        meta["kernel-id"] = i.kernel_id
    if i.ramdisk_id:
        meta["ramdisk-id"] = i.ramdisk_id
    if i.key_name:
        meta["public-keys"] = Lazy(lambda: _public_keys(s, i))
    if tagged:
        meta["tags"] = Lazy(lambda: {"instance": {t["Key"]: t["Value"] for t in tags_of(s, [i.id])[i.id]}})
    # With an instance profile: its role's credentials.
    meta["iam"] = Lazy(lambda: instance_credentials.iam_tree(s, i))
    return meta


class _Interface(NamedTuple):
    """The instance's primary interface as the metadata shows it (one lookup, when first needed)."""

    eni: NetworkInterface | None
    public_ip: str
    public_hostname: str
    groups: list[dict[str, str]]

    @classmethod
    def of(cls, s: Session, i: Instance) -> _Interface:
        net = Network.of(s, [i])
        eni, public_ip = net.interfaces.get(i.id, (None, None))
        groups = net.groups_of(eni) if eni is not None else []
        public_hostname = public_dns(public_ip, i.zone[:-1]) if public_ip else ""
        return cls(eni, public_ip or "", public_hostname, groups)


def _network(s: Session, i: Instance, net: _Interface, hostname: str) -> Tree | None:
    """network/interfaces/macs/<mac>/: what cloud-init reads to configure the interface."""
    eni = net.eni
    if eni is None:
        return None
    mac: Tree = {
        "device-number": "0",
        "interface-id": eni.id,
        "local-hostname": hostname,
        "local-ipv4s": eni.private_ip,
        "mac": eni.mac,
        "owner-id": i.account_id,
        "security-group-ids": "\n".join(g["GroupId"] for g in net.groups),
        "security-groups": "\n".join(g["GroupName"] for g in net.groups),
        "subnet-id": eni.subnet_id,
        "vpc-id": eni.vpc_id,
    }
    subnet, vpc = s.get(Subnet, eni.subnet_id), s.get(Vpc, eni.vpc_id)
    if subnet is not None:
        mac["subnet-ipv4-cidr-block"] = subnet.cidr
    if vpc is not None:
        mac["vpc-ipv4-cidr-block"] = mac["vpc-ipv4-cidr-blocks"] = vpc.cidr
    if net.public_ip:
        mac["public-ipv4s"] = net.public_ip
        mac["public-hostname"] = net.public_hostname
    return {"interfaces": {"macs": {eni.mac: mac}}}


def _public_keys(s: Session, i: Instance) -> Tree | None:
    key = s.scalar(select(KeyPair).where(KeyPair.account_id == i.account_id, KeyPair.name == i.key_name))
    return {"0": {"openssh-key": key.public_key + "\n"}} if key is not None else None


def as_of(version: str, tree: Tree, at: str = "") -> Tree:
    """`tree` as a dated `version` serves it: without the categories introduced after it."""
    kept: Tree = {}
    for name, value in tree.items():
        path = f"{at}/{name}" if at else name
        if _introduced(path) > version:  # "1.0" sorts before every date
            continue
        if isinstance(value, Lazy):  # filtered when worked out
            kept[name] = _lazy_as_of(version, value, path)
        else:
            kept[name] = _as_of_value(version, value, path)
    return kept


def _lazy_as_of(version: str, value: Lazy, path: str) -> Lazy:
    return Lazy(lambda: _as_of_value(version, value.make(), path))


def _as_of_value(version: str, value: Any, path: str) -> Any:
    return as_of(version, value, path) if isinstance(value, dict) else value


def _introduced(path: str) -> str:
    parts = path.split("/")
    if parts[:3] == ["network", "interfaces", "macs"] and len(parts) > 4:
        parts[3] = "*"  # one entry for every interface's MAC
    return INTRODUCED.get("/".join(parts), "1.0")


def _listing(tree: Tree) -> str:
    names = []
    for name, value in tree.items():
        value = _resolve(value)
        if value is None:
            continue
        if name == "public-keys":  # EC2 lists keys as "0=<key name>"
            names.append(name + "/")
        else:
            names.append(name + "/" if isinstance(value, dict) else name)
    return "\n".join(names)


def answer(
    s: Session,
    vpc_id: str,
    private_ip: str,
    path: str,
    signer: DocumentSigner | None = None,
    with_token: bool = False,
) -> tuple[int, bytes]:
    """(HTTP status, body) for a guest's GET of `path` (e.g. /latest/meta-data/instance-id), as
    the instance's metadata options allow (`with_token`: it carried a valid IMDSv2 token).
    `signer`: the cloud's, for the identity document's signatures (none without it)."""
    instance = _instance(s, vpc_id, private_ip)
    if instance is None:
        return 404, b"Not Found"
    options = options_of(s, instance.id)
    if options.http_endpoint == "disabled":
        return 403, b"Forbidden"
    if options.http_tokens == "required" and not with_token:
        return 401, b"Unauthorized"
    tagged = options.instance_metadata_tags == "enabled"
    parts = [p for p in path.split("/") if p]
    if not parts:
        return 200, "\n".join(VERSIONS).encode()
    version = parts[0] if parts[0] != "latest" else DATED[-1]
    if version not in DATED:
        return 404, b"Not Found"
    dynamic = version >= DYNAMIC_SINCE  # "1.0" sorts before every date
    if len(parts) == 1:
        return 200, b"dynamic\nmeta-data\nuser-data" if dynamic else b"meta-data\nuser-data"
    section = parts[1]
    if section == "user-data":
        data = base64.b64decode(instance.user_data) if instance.user_data else b""
        return (200, data) if data else (404, b"Not Found")
    handlers: dict[str, Callable[[], Tree]] = {
        "meta-data": lambda: as_of(version, _tree(s, instance, tagged)),
        "dynamic": lambda: {"instance-identity": _identity_tree(instance, signer)},
    }
    if section not in handlers or (section == "dynamic" and not dynamic):
        return 404, b"Not Found"
    node: Any = handlers[section]()
    for name in parts[2:]:
        if not isinstance(node, dict) or name not in node:
            return 404, b"Not Found"
        node = _resolve(node[name])
        if node is None:
            return 404, b"Not Found"
    if isinstance(node, dict):
        if parts[2:] == ["public-keys"] and instance.key_name:
            return 200, f"0={instance.key_name}".encode()
        return 200, _listing(node).encode()
    return 200, str(node() if callable(node) else node).encode()


def token_answer(s: Session, vpc_id: str, private_ip: str) -> tuple[int, bytes, int]:
    """(HTTP status, body, hop limit) for a guest's IMDSv2 token PUT: 404 when no instance has the
    address, 403 when its metadata endpoint is disabled (as EC2 answers both), else 200 and its
    HttpPutResponseHopLimit, the IP TTL the node sends the token with (so it travels no further)."""
    instance = _instance(s, vpc_id, private_ip)
    if instance is None:
        return 404, b"Not Found", 1
    options = options_of(s, instance.id)
    if options.http_endpoint == "disabled":
        return 403, b"Forbidden", 1
    return 200, b"", options.http_put_response_hop_limit


def _instance(s: Session, vpc_id: str, private_ip: str) -> Instance | None:
    """The live instance at `private_ip` in `vpc_id`."""
    return s.scalar(
        select(Instance).where(
            Instance.vpc_id == vpc_id,
            Instance.private_ip == private_ip,
            Instance.state.in_(("pending", "running")),
        )
    )


def _identity_tree(i: Instance, signer: DocumentSigner | None) -> Tree:
    """The instance identity document and, with the cloud's signer, its signatures (computed
    only when asked for: an RSA signature costs ~1 ms)."""
    document = _identity(i)
    tree: Tree = {"document": document}
    if signer is not None:
        data = document.encode()
        tree["pkcs7"] = lambda: signer.pkcs7(data)
        tree["rsa2048"] = lambda: signer.pkcs7(data)
        tree["signature"] = lambda: signer.signature(data)
    return tree


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
