"""The network driver contract: what a node controller applies for its zone in EDGE mode.

A node has one bridge for the zone's private subnet. Instances are attached to it through their own
port (a tap for a VM, a veth in tests). The driver owns, for that bridge:
- the bridge itself and its address (the subnet's gateway on this node);
- DHCP that hands each known MAC its fixed private IP (and nothing to unknown MACs);
- anti-spoofing: frames from an instance's port must carry its MAC and IP (ARP included);
- security groups: stateful ingress filtering of traffic to instances, matched by instance IP;
- a guard: nothing from the bridge is forwarded to any other interface (no path to the uplink);
- the redirect of 169.254.169.254:80 to the node's metadata proxy, which sees the caller's real IP.

Contract for every implementation (checked by tests/unit/drivers/test_network_contract.py):
- Every operation is idempotent: repeating a call with the same arguments changes nothing and
  succeeds. Operations take the whole desired state of what they manage, so the caller converges by
  repeating its latest intent (after a crash, the next reconcile pass repairs the node).
- `setup(host)` creates or repairs the host side. Calling it again with a changed HostNetwork for
  the same bridge reconfigures in place; a different bridge name needs `teardown()` first
  (NetworkError). Instances and groups survive a repeated `setup`.
- `teardown()` removes everything the driver created and forgets instances and groups; it succeeds
  when nothing (or only part) is there.
- `add_instance(iface)` before `setup` raises NetworkError. Adding the same interface again is a
  no-op; adding a changed one for a known instance_id replaces it. A MAC, IP or device already used
  by another instance raises ConflictError and changes nothing.
- `remove_instance(instance_id)` of an unknown instance succeeds. Its DHCP entry and lease are
  gone (the IP can go to another MAC at once); a port left on the bridge gets nothing through.
- `apply_security_groups(rules, members)` replaces all groups at once (atomically for real drivers:
  a packet sees either the old or the new rules, never a mix). Semantics, as EC2's ingress rules:
  traffic to an instance is allowed when it belongs to an established or related flow, or when a rule
  of a group the destination IP is a member of matches it (protocol, port range, source CIDR or
  source group's member IPs). Everything else to instances is dropped. Egress is not filtered.
  A group with no rules admits nothing; EC2's "default" group is a group with a rule whose
  source_group is itself. Rules naming a group in neither `rules` nor `members` have no members.
- `leases()` lists current DHCP leases; `describe()` returns a JSON-able status mapping.
"""

from __future__ import annotations

import abc
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

METADATA_IP = "169.254.169.254"

_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
PROTOCOLS = ("tcp", "udp", "icmp", "-1")


class NetworkError(Exception):
    """The host refused an operation, or the call does not fit the driver's state."""


class ConflictError(NetworkError):
    """A MAC, IP or device already belongs to another instance."""


def _check(pattern: re.Pattern[str], value: str, what: str) -> None:
    if not pattern.match(value):
        raise ValueError(f"invalid {what}: {value!r}")


@dataclass(frozen=True)
class HostNetwork:
    """This node's side of the zone's private subnet."""

    bridge: str  # Linux interface name, <= 15 characters
    address: str  # the subnet's gateway on this node, e.g. 10.0.0.1
    prefix: int  # e.g. 24
    # where 169.254.169.254:80 is redirected to: an address of this node (the bridge address works;
    # 127.0.0.1 would need route_localnet, and a remote host is stopped by the guard)
    metadata_host: str
    metadata_port: int
    lease_seconds: int = 3600

    def __post_init__(self) -> None:
        _check(_IFNAME, self.bridge, "bridge name")
        ipaddress.IPv4Interface(f"{self.address}/{self.prefix}")
        ipaddress.IPv4Address(self.metadata_host)
        if not 0 < self.metadata_port < 65536 or self.lease_seconds < 120:
            raise ValueError("invalid metadata port or lease time")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.address}/{self.prefix}").network


@dataclass(frozen=True)
class InstanceInterface:
    """An instance's interface on the bridge. `device` is the bridge port (tap) it is attached
    through; register it before the port joins the bridge."""

    instance_id: str
    mac: str  # lower case, colon separated
    ip: str
    hostname: str
    device: str

    def __post_init__(self) -> None:
        _check(_ID, self.instance_id, "instance id")
        _check(_MAC, self.mac, "MAC address")
        ipaddress.IPv4Address(self.ip)
        _check(_HOSTNAME, self.hostname, "hostname")
        _check(_IFNAME, self.device, "device name")


@dataclass(frozen=True)
class GroupRule:
    """One ingress rule of a security group. protocol is tcp, udp, icmp or -1 (all). For tcp/udp
    the ports are a range (-1..-1 or 0..65535 = all); for icmp from_port is the type and to_port
    the code (-1 = any). Exactly one of cidr and source_group is set."""

    group_id: str
    protocol: str
    from_port: int = -1
    to_port: int = -1
    cidr: str | None = None
    source_group: str | None = None

    def __post_init__(self) -> None:
        _check(_ID, self.group_id, "group id")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"invalid protocol: {self.protocol!r}")
        if (self.cidr is None) == (self.source_group is None):
            raise ValueError("a rule needs exactly one of cidr and source_group")
        if self.cidr is not None:
            ipaddress.IPv4Network(self.cidr, strict=False)
        if self.source_group is not None:
            _check(_ID, self.source_group, "group id")
        low = -1 if self.protocol in ("icmp", "-1") else 0
        for port in (self.from_port, self.to_port):
            if not (low <= port <= 65535 or port == -1):
                raise ValueError(f"invalid port: {port}")
        if self.protocol in ("tcp", "udp") and self.from_port > self.to_port:
            raise ValueError("from_port is above to_port")


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expires: int  # Unix time; 0 = never


class NetworkDriver(abc.ABC):
    # What the driver can do: "dhcp", "security_groups", "anti_spoofing", "metadata_redirect",
    # "elastic_ips", "real" (touches the kernel).
    capabilities: Mapping[str, bool] = {}

    @abc.abstractmethod
    def setup(self, host: HostNetwork) -> None:
        """Create or repair the bridge, DHCP, filters and metadata redirect for `host`."""

    @abc.abstractmethod
    def teardown(self) -> None:
        """Remove everything the driver created (idempotent)."""

    @abc.abstractmethod
    def add_instance(self, iface: InstanceInterface) -> None:
        """Give iface.mac its fixed IP over DHCP and pin its port to that MAC and IP."""

    @abc.abstractmethod
    def remove_instance(self, instance_id: str) -> None:
        """Forget an instance's DHCP entry and anti-spoofing pin (unknown ids succeed)."""

    @abc.abstractmethod
    def apply_security_groups(self, rules: list[GroupRule], members: dict[str, list[str]]) -> None:
        """Replace all security groups: `rules` for every group, `members` = group id -> member IPs."""

    @abc.abstractmethod
    def instances(self) -> list[InstanceInterface]:
        """The registered instances, sorted by instance id."""

    @abc.abstractmethod
    def leases(self) -> list[Lease]: ...

    @abc.abstractmethod
    def describe(self) -> dict[str, object]: ...
