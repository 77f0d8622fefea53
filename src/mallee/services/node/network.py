"""This node's VPC network: the whole document the CLC last pushed (`apply_network`), kept on disk
before it is applied, so that a restarted node controller applies it again at start; documents are
applied in generation order (an older one never over a newer), converted to the driver's types.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from mallee.core.files import write_atomically
from mallee.drivers.network import vpc_contract as vpc
from mallee.rpc import node
from mallee.services.node.instances import tap_name

log = logging.getLogger(__name__)


def driver_state(network: node.NodeNetwork, underlay: vpc.NodeUnderlay) -> vpc.NodeNetwork:
    """The driver's view of a pushed network: each interface's device is its instance's tap.
    Raises ValueError for a document the driver cannot take (a bad MAC, address or rule)."""
    return vpc.NodeNetwork(underlay, tuple(_vpc(v) for v in network.vpcs))


def hostname(private_ip: str) -> str:
    """The name DHCP gives an interface: AWS's private host name, `ip-172-31-0-12`."""
    return "ip-" + private_ip.replace(".", "-")


class NodeNetworkManager:
    """Applies pushed networks through the driver, one at a time. `on_applied` is told of each
    applied network (the metadata proxy follows its VPCs; waiting launches start)."""

    def __init__(
        self,
        driver: vpc.VpcNetworkDriver,
        underlay: vpc.NodeUnderlay,
        saved: Path,
        on_applied: Callable[[node.NodeNetwork], None] = lambda _network: None,
    ) -> None:
        self.driver = driver
        self.underlay = underlay
        self.saved = saved
        self.on_applied = on_applied
        self.applied: node.NodeNetwork | None = None
        self._interfaces: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # one apply at a time, in the order they come

    @property
    def generation(self) -> int:
        """The generation of the last network applied here (0: none yet)."""
        applied = self.applied
        return applied.generation if applied is not None else 0

    def interface_applied(self, interface_id: str) -> bool:
        return interface_id in self._interfaces

    def vpc_ids(self) -> list[str]:
        applied = self.applied
        return [v.vpc_id for v in applied.vpcs] if applied is not None else []

    def restore(self) -> None:
        """At start: apply the network kept on disk again (the host may have lost it, or the node
        crashed half-way through applying it). A failure is logged: the CLC pushes it again."""
        try:
            network = msgspec.json.decode(self.saved.read_bytes(), type=node.NodeNetwork)
        except FileNotFoundError:
            return
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring the unreadable saved network %s: %s", self.saved, exc)
            return
        try:
            self.apply(network)
            log.info("applied the saved network (generation %d) again", network.generation)
        except (ValueError, vpc.VpcNetworkError) as exc:
            log.warning("the saved network (generation %d) did not apply: %s", network.generation, exc)

    def apply(self, network: node.NodeNetwork) -> bool:
        """Keep `network` on disk, then converge the host to it. Returns False, doing nothing, for a
        generation older than the one applied (a late or reordered push). Raises ValueError for a
        document the driver cannot take (nothing is kept) and VpcNetworkError when the host refused
        (it is kept: the next start or push tries again)."""
        with self._lock:
            if network.generation < self.generation:
                log.info("ignoring network generation %d: %d is applied", network.generation, self.generation)
                return False
            state = driver_state(network, self.underlay)
            self.saved.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.saved, msgspec.json.encode(network), fsync=True)
            self.driver.apply(state)
            self.applied = network
            self._interfaces = frozenset(i.interface_id for v in network.vpcs for i in v.interfaces)
            self.on_applied(network)
            return True


def _vpc(v: node.NetVpc) -> vpc.Vpc:
    return vpc.Vpc(
        vpc_id=v.vpc_id,
        vni=v.vni,
        cidr=v.cidr,
        subnets=tuple(vpc.Subnet(s.subnet_id, s.cidr) for s in v.subnets),
        interfaces=tuple(
            vpc.Interface(
                interface_id=i.interface_id,
                instance_id=i.instance_id,
                subnet_id=i.subnet_id,
                mac=i.mac,
                private_ip=i.private_ip,
                device=tap_name(i.instance_id),
                hostname=hostname(i.private_ip),
                group_ids=tuple(i.group_ids),
                public_ip=i.public_ip,
            )
            for i in v.interfaces
        ),
        groups=tuple(
            vpc.SecurityGroup(
                g.group_id,
                ingress=tuple(_rule(r) for r in g.ingress),
                egress=tuple(_rule(r) for r in g.egress),
                members=tuple(g.members),
            )
            for g in v.groups
        ),
        remote=tuple(vpc.RemoteInterface(r.mac, r.private_ip, r.node) for r in v.remote),
        peers=tuple(v.peers),
    )


def _rule(r: node.NetRule) -> vpc.Rule:
    return vpc.Rule(r.protocol, r.from_port, r.to_port, cidr=r.cidr, group_id=r.group_id)
