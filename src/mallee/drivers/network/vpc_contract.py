"""The VPC network driver contract: what a node controller applies so that its instances live in
their VPCs (issue 13). It replaced EDGE mode's one flat bridge, whose drivers are gone.

The node is told its whole desired state at once (`NodeNetwork`) and converges to it; every value
comes from the CLC's records (via the CC), so after a crash the next `apply` repairs everything.

What a node builds for each VPC that has an interface on it (names derived from `NodeUnderlay.prefix`
and the VPC's `vni`, so two node controllers on one machine never touch each other's objects):
- a **VPC bridge** in the host namespace; instance taps are its ports (the hypervisor attaches them);
- a **router namespace** with a leg on that bridge carrying every subnet's gateway (the subnet's
  first host address, as on AWS) under one gateway MAC that is the same on every node (a distributed
  router: frames from it never cross VXLAN), and a leg on the public bridge when the VPC has public
  addresses here; routing between the VPC's subnets happens there;
- **DHCP** in that namespace: each interface's MAC gets its fixed private address, its subnet's
  gateway as router, its hostname; unknown MACs get nothing;
- the **metadata address** 169.254.169.254 on the router's loopback: `metadata_listener(vpc_id,
  port)` returns a listening TCP socket bound there, inside the namespace, so that the node's
  metadata proxy knows the VPC by the socket and the instance by the peer address;
- a **VXLAN** device (VNI = `vni`) on the bridge towards `peers`, with static forwarding entries for
  the remote interfaces' MACs, and no frame from or for the router's gateway address crossing it. A
  peer (and `RemoteInterface.node`) is an underlay address, or `address:port` when that node's VXLAN
  port is not this node's `vxlan_port` (two node controllers on one machine need two ports);
- **anti-spoofing** per tap (the interface's MAC and private IP only; ARP included; IPv6 dropped);
- **security groups**, stateful, enforced per tap in both directions as AWS's VPC groups: a packet
  passes when it belongs to a tracked connection, or when a rule of one of the interface's groups
  matches it (ingress: source CIDR or source group's member addresses; egress: destination), else it
  is dropped. Changing rules never breaks tracked connections that are still allowed, and the
  per-packet cost does not grow with the number of rules (sets and maps, not a chain of rules);
- **1:1 NAT** for each interface's `public_ip`: from the public network the instance is its public
  address (the router answers ARP for it and sends a gratuitous ARP when it moves here), inside the
  VPC it sees only private addresses; its outbound traffic to the public network leaves as its public
  address. Nothing is forwarded between the public bridge and any other host interface (the guard).
- An instance never reaches another VPC, the host's own services, or the underlay.

The hypervisor attaches an interface's `device` to `vpc_bridge(prefix, vni)`; an `apply` also attaches
declared devices that exist but sit elsewhere, and tolerates declared devices that do not exist yet.

Contract for every implementation (a shared contract test checks it):
- `apply(state)` is idempotent and atomic per VPC where the kernel allows; repeating the same state
  changes nothing (and is cheap: unchanged VPCs are not rewritten); objects of VPCs no longer in the
  state are removed. A changed rule set reaches the kernel within the call.
- `teardown()` removes everything the driver created under its prefix (and the public bridge when
  it created it); it succeeds when nothing is there.
- `describe()` returns a JSON-able status mapping, with the seconds the last apply took.
"""

from __future__ import annotations

import abc
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

METADATA_IP = "169.254.169.254"
PROTOCOLS = ("tcp", "udp", "icmp", "-1")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,3}$")


class VpcNetworkError(Exception):
    """The host refused an operation, or the desired state is inconsistent."""


def vpc_bridge(prefix: str, vni: int) -> str:
    """The name of VPC `vni`'s bridge on the node whose underlay prefix is `prefix`."""
    return f"{prefix}v{vni}"


def underlay_endpoint(peer: str, default_port: int) -> tuple[str, int]:
    """A peer as (address, VXLAN port): "10.0.0.2" or "10.0.0.2:4790"."""
    address, _, port = peer.partition(":")
    ipaddress.IPv4Address(address)
    number = int(port) if port else default_port
    if not 0 < number < 65536:
        raise ValueError(f"invalid VXLAN port in {peer!r}")
    return address, number


@dataclass(frozen=True)
class Rule:
    """One security-group rule. protocol: tcp, udp, icmp or -1 (all). tcp/udp: a port range
    (from_port..to_port; -1..-1 or 0..65535 = all); icmp: from_port is the type and to_port the code
    (-1 = any). Exactly one of `cidr` and `group_id` (a group of the same VPC) is set: for ingress
    it is the source, for egress the destination."""

    protocol: str
    from_port: int = -1
    to_port: int = -1
    cidr: str | None = None
    group_id: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"invalid protocol: {self.protocol!r}")
        if (self.cidr is None) == (self.group_id is None):
            raise ValueError("a rule needs exactly one of cidr and group_id")
        if self.cidr is not None:
            ipaddress.IPv4Network(self.cidr)


@dataclass(frozen=True)
class SecurityGroup:
    group_id: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    # Private addresses of every interface in the group, on any node: what rules naming this
    # group as their source or destination match.
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    cidr: str  # within the VPC's CIDR; the gateway is its first host address

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.IPv4Network(self.cidr).hosts()))


@dataclass(frozen=True)
class Interface:
    """An instance's network interface on this node (its primary ENI)."""

    interface_id: str  # eni-…
    instance_id: str
    subnet_id: str
    mac: str
    private_ip: str
    device: str  # the tap the hypervisor attaches to the VPC bridge
    hostname: str
    group_ids: tuple[str, ...]
    public_ip: str | None = None

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac):
            raise ValueError(f"invalid MAC: {self.mac!r}")
        if not _IFNAME.match(self.device):
            raise ValueError(f"invalid device: {self.device!r}")
        ipaddress.IPv4Address(self.private_ip)


@dataclass(frozen=True)
class RemoteInterface:
    """An interface of the same VPC on another node: where VXLAN sends frames for its MAC."""

    mac: str
    private_ip: str
    node: str  # that node's underlay address


@dataclass(frozen=True)
class Vpc:
    vpc_id: str
    vni: int  # cloud-unique, 1..16777215; also names this VPC's objects on the node
    cidr: str
    subnets: tuple[Subnet, ...]
    interfaces: tuple[Interface, ...]  # on this node
    groups: tuple[SecurityGroup, ...]  # every group an interface here uses or a rule here names
    remote: tuple[RemoteInterface, ...] = ()
    peers: tuple[str, ...] = ()  # underlay addresses of the other nodes hosting this VPC


@dataclass(frozen=True)
class NodeUnderlay:
    """This node: how it reaches other nodes, and where the public network is."""

    prefix: str  # a short name for this node's kernel objects, e.g. "m0" (bridges "m0v12", …)
    address: str  # this node's underlay address (VXLAN's local end)
    public_bridge: str  # the bridge carrying the public range (host-only in the all-in-one cloud)
    public_cidr: str  # the public network, e.g. 198.51.100.0/24
    public_gateway: str | None = None  # where routers send off-network public traffic, if anywhere
    vxlan_port: int = 4789
    underlay_device: str | None = None  # the device VXLAN uses (None: by route to the peers)

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(f"invalid prefix: {self.prefix!r}")
        ipaddress.IPv4Address(self.address)
        ipaddress.IPv4Network(self.public_cidr)


@dataclass(frozen=True)
class NodeNetwork:
    underlay: NodeUnderlay
    vpcs: tuple[Vpc, ...] = field(default=())


class VpcNetworkDriver(abc.ABC):
    capabilities: Mapping[str, bool] = {}

    @abc.abstractmethod
    def apply(self, state: NodeNetwork) -> None:
        """Converge this node's VPC networking to `state` (see the module's docstring)."""

    @abc.abstractmethod
    def metadata_listener(self, vpc_id: str, port: int = 80) -> socket.socket:
        """A listening TCP socket on 169.254.169.254:`port` inside `vpc_id`'s router namespace
        (the VPC must be in the applied state). The caller owns and closes it."""

    @abc.abstractmethod
    def prepare_public_bridge(self, bridge: str, host_address: str) -> bool:
        """Make `bridge` the node's own public bridge when it does not exist: create it (teardown
        removes it again) and give the host `host_address` ("198.51.100.1/24") on it, so that the
        host reaches instances' public addresses. A bridge that exists but this driver did not
        create (an operator's, on a real network) is left as it is. Idempotent; returns whether
        the bridge is the driver's own."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Remove everything this driver created under its prefix (idempotent)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, object]: ...
