"""The Node Controller's contract (one NC per host), called by its zone's Cluster Controller.

Every operation is idempotent on the instance id the CLC chose: a repeated `run_instance` never
makes a second VM, and terminating an instance that is gone succeeds.
"""

from __future__ import annotations

from typing import Literal

from mallee.rpc.contract import Api, Message, Ok, Operation
from mallee.rpc.storage import VolumeExport

# 2: launches name their VPC interface; nodes take their network whole (apply_network).
# 3: volumes: attach_volume, detach_volume, and the volumes each instance has.
# 4: EBS-backed instances: launches with block devices (an EBS root), stop_instance, the volumes a
#    pending instance awaits.
API = Api("node", version=4, oldest=4)

InstanceState = Literal["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]
# A node reports an instance in one of these once, then forgets it.
FINAL_STATES = ("stopped", "terminated")


class Resources(Message):
    """Cores, memory and disk: what a node offers, what an instance needs."""

    cores: int = 0
    memory_mib: int = 0
    disk_gib: int = 0

    def fits(self, need: Resources) -> bool:
        return (
            self.cores >= need.cores and self.memory_mib >= need.memory_mib and self.disk_gib >= need.disk_gib
        )

    def minus(self, other: Resources) -> Resources:
        return Resources(
            cores=self.cores - other.cores,
            memory_mib=self.memory_mib - other.memory_mib,
            disk_gib=self.disk_gib - other.disk_gib,
        )

    def plus(self, other: Resources) -> Resources:
        return Resources(
            cores=self.cores + other.cores,
            memory_mib=self.memory_mib + other.memory_mib,
            disk_gib=self.disk_gib + other.disk_gib,
        )


class InstanceType(Message):
    name: str
    cpus: int
    memory_mib: int
    disk_gib: int

    @property
    def needs(self) -> Resources:
        return Resources(cores=self.cpus, memory_mib=self.memory_mib, disk_gib=self.disk_gib)


class BundleManifest(Message):
    """What a node needs of a bundle's manifest to unbundle it, read once when the image was
    registered: the wrapped key and IV, the parts' names and SHA-1s in order, the tar's SHA-1."""

    encrypted_key: str
    encrypted_iv: str
    digest: str
    parts: list[tuple[str, str]]  # (file name, SHA-1 hex)


class ImageSource(Message):
    """One image file the node fetches into its cache."""

    key: str  # stable name of the image (its image id), used as the cache file name
    url: str  # where to fetch it (a presigned Walrus URL; a bundle's manifest)
    size: int | None = None
    sha256: str | None = None
    format: Literal["raw", "qcow2", "bundle"] = "raw"
    parts: tuple[str, ...] = ()  # a bundle's part URLs, in the manifest's order
    bundle: BundleManifest | None = None  # a bundle's manifest, as the CLC read it


class LaunchImage(Message):
    root: ImageSource | None = None  # none: the root is an EBS volume (InstanceLaunch.block_devices)
    kernel: ImageSource | None = None  # none: the root disk boots itself
    ramdisk: ImageSource | None = None


class LaunchInterface(Message):
    """The instance's primary network interface: the node starts the VM once its network (pushed
    with apply_network) has this interface, and plugs it into the VPC's bridge."""

    interface_id: str
    vpc_id: str
    vni: int
    subnet_id: str


class LaunchVolume(Message):
    """An EBS volume the instance starts with, plugged in as guest disk `target` (vda: the root).
    The node starts the VM once it was given every one's export (attach_volume while pending)."""

    volume_id: str
    target: str


class InstanceLaunch(Message):
    """Everything a node needs to start one instance, as the CLC recorded it."""

    instance_id: str
    reservation_id: str
    account_id: str
    instance_type: InstanceType
    image: LaunchImage
    private_ip: str
    mac: str
    hostname: str
    availability_zone: str
    key_name: str | None = None
    public_key: str | None = None
    user_data: str = ""  # base64, as the user sent it
    launch_index: int = 0
    interface: LaunchInterface | None = None  # None: the node's EDGE network (before VPCs)
    block_devices: list[LaunchVolume] = []

    @property
    def ebs_root(self) -> bool:
        return self.image.root is None

    @property
    def needs(self) -> Resources:
        """What the instance takes of its node: an EBS root lives on the SC, not the node's disk."""
        needs = self.instance_type.needs
        return Resources(cores=needs.cores, memory_mib=needs.memory_mib) if self.ebs_root else needs


class RunInstance(Message):
    launch: InstanceLaunch


class InstanceRef(Message):
    instance_id: str


class StopInstance(Message):
    """Shut the EBS-backed instance down (ACPI, then off after a timeout; at once with `force`) and
    forget it here: it reports `stopping`, then `stopped` once, and its volumes stay on the SC."""

    instance_id: str
    force: bool = False


class ConsoleOutput(Message):
    output: str  # base64 of the console's last 64 KiB


class DescribeNode(Message):
    """The poll of a node by its CC; `cluster_url` is where the node pushes state changes."""

    cluster_url: str = ""


class NodeInstance(Message):
    state: InstanceState
    needs: Resources
    reason: str = ""
    private_ip: str = ""
    volumes: dict[str, str] = {}  # volume id -> the guest disk it is plugged in as (vdb, …)
    awaiting: list[str] = []  # a pending instance's block devices whose export it was not given yet


class AttachVolume(Message):
    """Hot-plug the volume into the running instance at the first free disk (vdb, vdc, …), with the
    volume id as the disk's serial; the same volume again is a no-op. For a pending instance, the
    export of one of its launch's block devices (it starts once it has them all)."""

    instance_id: str
    export: VolumeExport


class DetachVolume(Message):
    """Unplug the volume; returns once the guest let go of it (or at once with `force`, as a pulled
    disk). A volume that is not attached is success."""

    instance_id: str
    volume_id: str
    force: bool = False


class NodeReport(Message):
    instances: dict[str, NodeInstance]
    resources: Resources
    hypervisor: str
    network_generation: int = 0  # of the last network the node applied
    underlay: str = ""  # where other nodes send this node's VXLAN traffic ("address:port")


# -- the node's network: the VPCs of its instances, whole (drivers/network/vpc_contract.py) ----


class NetRule(Message):
    """A security-group rule: protocol tcp, udp, icmp or -1; ports (icmp: type and code; -1 any);
    exactly one of cidr and group_id, the peer (source for ingress, destination for egress)."""

    protocol: str
    from_port: int = -1
    to_port: int = -1
    cidr: str | None = None
    group_id: str | None = None


class NetGroup(Message):
    group_id: str
    ingress: list[NetRule] = []
    egress: list[NetRule] = []
    members: list[str] = []  # private addresses of the group's interfaces, on any node


class NetSubnet(Message):
    subnet_id: str
    cidr: str


class NetInterface(Message):
    interface_id: str
    instance_id: str
    subnet_id: str
    mac: str
    private_ip: str
    group_ids: list[str]
    public_ip: str | None = None


class NetRemote(Message):
    """An interface of the same VPC on another node."""

    mac: str
    private_ip: str
    node: str  # that node's underlay ("address:port")


class NetVpc(Message):
    vpc_id: str
    vni: int
    cidr: str
    subnets: list[NetSubnet]
    interfaces: list[NetInterface]  # on this node
    groups: list[NetGroup]
    remote: list[NetRemote] = []
    peers: list[str] = []  # underlays of the other nodes with interfaces in this VPC


class NodeNetwork(Message):
    """The whole network a node should have; `generation` grows with every change the CLC makes,
    so a node reports which one it applied and an older one is never applied over a newer."""

    generation: int
    vpcs: list[NetVpc]


RUN_INSTANCE = Operation(API, "run_instance", RunInstance, Ok)
TERMINATE_INSTANCE = Operation(API, "terminate_instance", InstanceRef, Ok)
STOP_INSTANCE = Operation(API, "stop_instance", StopInstance, Ok)
REBOOT_INSTANCE = Operation(API, "reboot_instance", InstanceRef, Ok)
DESCRIBE = Operation(API, "describe", DescribeNode, NodeReport)
CONSOLE_OUTPUT = Operation(API, "console_output", InstanceRef, ConsoleOutput)
APPLY_NETWORK = Operation(API, "apply_network", NodeNetwork, Ok)
ATTACH_VOLUME = Operation(API, "attach_volume", AttachVolume, Ok)
DETACH_VOLUME = Operation(API, "detach_volume", DetachVolume, Ok)
