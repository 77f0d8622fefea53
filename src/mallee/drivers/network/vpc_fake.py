"""An in-memory VPC network driver honouring the contract, for unit tests and simulated nodes.

It keeps the applied state and answers what the real data plane would do with a packet, from the
same pure model the real driver's rendering follows (vpc_groups.py): `dhcp_request`, `may_send`
(anti-spoofing), `ingress_allowed` / `egress_allowed` (a NEW flow through security groups),
`reaches` (both ends' groups, same VPC only) and `public_address_of`. Its metadata listener is a real
socket on loopback (there is no router namespace), so a simulated node's metadata proxy can serve it.
With a `state_dir` the last applied state (and the public bridge it made) is kept on disk
(`fake-vpc-network.json`) and read back by a new driver, as kernel objects outlive a killed node
controller: tests can see what such a node left wired.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import msgspec

from mallee.core.files import write_atomically
from mallee.drivers.network import vpc_groups
from mallee.drivers.network import vpc_model as names
from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    Vpc,
    VpcNetworkDriver,
    VpcNetworkError,
)


class FakeVpcDriver(VpcNetworkDriver):
    capabilities = {
        "dhcp": True,
        "security_groups": True,
        "anti_spoofing": True,
        "metadata": True,
        "elastic_ips": True,
        "vxlan": True,
        "real": False,
    }

    def __init__(self, state_dir: Path | None = None) -> None:
        self._state: NodeNetwork | None = None
        self._lock = threading.RLock()
        self._last: dict[str, object] = {}
        self.writes = 0  # how many VPCs would have been (re)built on the kernel
        self.public_bridge: tuple[str, str] | None = None  # (bridge, host address) it made
        self._file = state_dir / "fake-vpc-network.json" if state_dir is not None else None
        if self._file is not None and self._file.exists():
            saved = msgspec.json.decode(self._file.read_bytes(), type=_Saved)
            self._state, self.public_bridge = saved.state, saved.public_bridge

    def _save(self) -> None:
        if self._file is not None:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            saved = _Saved(state=self._state, public_bridge=self.public_bridge)
            write_atomically(self._file, msgspec.json.encode(saved))

    def apply(self, state: NodeNetwork) -> None:
        names.validate(state)
        with self._lock:
            started = time.monotonic()
            old = self._state
            if old is not None and old.underlay.prefix != state.underlay.prefix:
                raise VpcNetworkError(f"set up with prefix {old.underlay.prefix}; tear it down first")
            before = {v.vpc_id: v for v in old.vpcs} if old is not None else {}
            changed = [v.vpc_id for v in state.vpcs if before.get(v.vpc_id) != v]
            removed = sorted(set(before) - {v.vpc_id for v in state.vpcs})
            self.writes += len(changed)
            self._state = state
            self._save()
            self._last = {
                "seconds": time.monotonic() - started,
                "changed": changed,
                "removed": [before[r].vni for r in removed],
            }

    def metadata_listener(self, vpc_id: str, port: int = 80) -> socket.socket:
        self._vpc(vpc_id)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # no namespace to bind 169.254.169.254 in: any free port
        sock.listen(16)
        return sock

    def prepare_public_bridge(self, bridge: str, host_address: str) -> bool:
        with self._lock:
            if self.public_bridge is not None and self.public_bridge[0] != bridge:
                return False  # another bridge than the one it made: as if an operator's
            self.public_bridge = (bridge, host_address)
            self._save()
            return True

    def teardown(self) -> None:
        with self._lock:
            self._state = None
            self._last = {}
            self.public_bridge = None
            if self._file is not None:
                self._file.unlink(missing_ok=True)

    def describe(self) -> dict[str, object]:
        with self._lock:
            state = self._state
            vpcs: dict[str, object] = {}
            for vpc in state.vpcs if state is not None else ():
                vpcs[vpc.vpc_id] = {
                    "vni": vpc.vni,
                    "bridge": names.bridge(state.underlay.prefix, vpc.vni) if state else None,
                    "interfaces": sorted(i.interface_id for i in vpc.interfaces),
                    "vxlan": bool(vpc.peers),
                    "public_ips": sorted(i.public_ip for i in vpc.interfaces if i.public_ip),
                }
            prefix = state.underlay.prefix if state is not None else None
            return {
                "driver": "fake-vpc",
                "prefix": prefix,
                "vpcs": vpcs,
                "public_bridge": list(self.public_bridge) if self.public_bridge else None,
                "last_apply": dict(self._last),
            }

    # -- what the simulated network would do ----------------------------------------------------

    def dhcp_request(self, vpc_id: str, mac: str) -> tuple[str, str] | None:
        """(address, router) offered to `mac` in `vpc_id`, or None for an unknown MAC."""
        vpc = self._vpc(vpc_id)
        for iface in vpc.interfaces:
            if iface.mac == mac:
                subnet = next(s for s in vpc.subnets if s.subnet_id == iface.subnet_id)
                return iface.private_ip, subnet.gateway
        return None

    def may_send(self, device: str, mac: str, ip: str) -> bool:
        """Anti-spoofing: does a frame from `device` with source `mac` / `ip` get through?"""
        return any((i.device, i.mac, i.private_ip) == (device, mac, ip) for _, i in self._interfaces())

    def ingress_allowed(
        self, vpc_id: str, src: str, dst: str, protocol: str, port: int, code: int = -1
    ) -> bool:
        """Is a NEW flow from `src` admitted to this node's interface `dst` by its groups?"""
        vpc, iface = self._local(vpc_id, dst)
        return vpc_groups.allowed(vpc, iface, "ingress", src, protocol, port, code)

    def egress_allowed(
        self, vpc_id: str, src: str, dst: str, protocol: str, port: int, code: int = -1
    ) -> bool:
        """Is a NEW flow from this node's interface `src` to `dst` let out by its groups?"""
        vpc, iface = self._local(vpc_id, src)
        return vpc_groups.allowed(vpc, iface, "egress", dst, protocol, port, code)

    def reaches(self, vpc_id: str, src: str, dst: str, protocol: str, port: int, code: int = -1) -> bool:
        """A NEW flow between two interfaces of this node in one VPC: egress, then ingress."""
        return self.egress_allowed(vpc_id, src, dst, protocol, port, code) and self.ingress_allowed(
            vpc_id, src, dst, protocol, port, code
        )

    def public_address_of(self, private_ip: str, vpc_id: str) -> str | None:
        _, iface = self._local(vpc_id, private_ip)
        return iface.public_ip

    # -- helpers --------------------------------------------------------------------------------

    def _vpc(self, vpc_id: str) -> Vpc:
        for vpc in self._state.vpcs if self._state is not None else ():
            if vpc.vpc_id == vpc_id:
                return vpc
        raise VpcNetworkError(f"{vpc_id} is not applied on this node")

    def _local(self, vpc_id: str, ip: str) -> tuple[Vpc, Interface]:
        vpc = self._vpc(vpc_id)
        for iface in vpc.interfaces:
            if iface.private_ip == ip:
                return vpc, iface
        raise VpcNetworkError(f"{ip} is no interface of {vpc_id} on this node")

    def _interfaces(self) -> list[tuple[Vpc, Interface]]:
        return [(v, i) for v in (self._state.vpcs if self._state is not None else ()) for i in v.interfaces]


class _Saved(msgspec.Struct):
    """What the fake keeps on disk: the last applied state and the public bridge it made."""

    state: NodeNetwork | None = None
    public_bridge: tuple[str, str] | None = None
