"""The VPC network driver: the node's VPC data plane on Linux (bridges, router namespaces, dnsmasq,
nftables, VXLAN), converging to the `NodeNetwork` it is given (see vpc_contract.py).

One `apply` writes, in this order: the host's nftables table (guard and security groups first, so a
new bridge is never unguarded), the anti-spoofing table, then each new or changed VPC's links, router
table and DHCP, then removes what the state no longer names, and attaches declared taps that exist.
The last applied state and rulesets are kept in memory: the next apply sends nftables only the
objects that changed (one transaction), and leaves unchanged VPCs' links, routers and dnsmasq alone.
A new driver object (a restarted node controller) renders everything once and repairs what it finds.
`state_dir/vpc-state.json` keeps the prefix, the conntrack zone of each VPC (zones must not change
under tracked connections) and whether the driver created the public bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mallee.core.files import write_atomically
from mallee.drivers.network import dnsmasq, vpc_dhcp, vpc_links, vpc_nft
from mallee.drivers.network import vpc_model as names
from mallee.drivers.network.dnsmasq import Lease
from mallee.drivers.network.vpc_contract import (
    METADATA_IP,
    NodeNetwork,
    NodeUnderlay,
    Vpc,
    VpcNetworkDriver,
    VpcNetworkError,
)

BR_NETFILTER = "net.bridge.bridge-nf-call-iptables"


@dataclass
class _Saved:
    prefix: str | None = None
    zones: dict[int, int] = field(default_factory=dict)
    created_public_bridge: str | None = None

    @classmethod
    def load(cls, path: Path) -> _Saved:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        zones = {int(k): int(z) for k, z in raw.get("zones", {}).items()}
        return cls(raw.get("prefix"), zones, raw.get("created_public_bridge"))

    def save(self, path: Path) -> None:
        data = {
            "prefix": self.prefix,
            "zones": self.zones,
            "created_public_bridge": self.created_public_bridge,
        }
        write_atomically(path, json.dumps(data, indent=1, sort_keys=True))


class VpcDriver(VpcNetworkDriver):
    capabilities = {
        "dhcp": True,
        "security_groups": True,
        "anti_spoofing": True,
        "metadata": True,
        "elastic_ips": True,
        "vxlan": True,
        "real": True,
    }

    def __init__(
        self,
        state_dir: Path,
        *,
        dnsmasq_binary: str = dnsmasq.DNSMASQ,
        conntrack_zones: range = range(1, 65536),
    ) -> None:
        """`conntrack_zones`: the zones this driver gives its VPC bridges (see `_allocate_zones`)."""
        self._dir = state_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o755)  # dnsmasq reads its hosts files after dropping root
        self._file = state_dir / "vpc-state.json"
        self._saved = _Saved.load(self._file)
        self._binary = dnsmasq_binary
        self._zone_range = conntrack_zones
        self._lock = threading.RLock()
        self._applied: NodeNetwork | None = None
        self._host: vpc_nft.Table | None = None
        self._antispoof: vpc_nft.Table | None = None
        self._rendered: vpc_nft.RenderCache = {}
        self._last: dict[str, object] = {}

    # -- the contract ---------------------------------------------------------------------------

    def apply(self, state: NodeNetwork) -> None:
        under = state.underlay
        with self._lock:
            started = time.monotonic()
            checked = self._applied if self._applied and self._applied.underlay == under else None
            names.validate(state, {v.vni: v for v in checked.vpcs} if checked else {})
            if self._saved.prefix not in (None, under.prefix):
                raise VpcNetworkError(f"set up with prefix {self._saved.prefix}; tear it down first")
            self._require_br_netfilter()
            self._saved.prefix = under.prefix
            self._allocate_zones(state)
            self._saved.save(self._file)
            links_now, ns_now = vpc_links.links(), vpc_links.namespaces()
            nft_seconds = self._apply_host_table(state)
            nft_seconds += self._apply_antispoof(state, links_now)
            old = self._applied
            before = {v.vni: v for v in old.vpcs} if old is not None else {}
            changed = [v.vpc_id for v in state.vpcs if old is None or before.get(v.vni) != v]
            rebuilt, announce = [], []
            for vpc in state.vpcs:
                previous = before.get(vpc.vni)
                if (
                    old is not None
                    and previous is not None
                    and _links_view(previous, old.underlay) == _links_view(vpc, under)
                    and self._intact(vpc, links_now, ns_now)
                ):
                    continue
                rebuilt.append(vpc.vpc_id)
                announce.append((vpc.vni, self._build(vpc, under, links_now)))
            wanted = {v.vni for v in state.vpcs}
            gone = (
                vpc_links.ours(under.prefix, links_now, ns_now) | set(before) | set(self._saved.zones)
            ) - wanted
            for vni in sorted(gone):
                self._remove(under.prefix, vni, links_now, ns_now)
            links_now = vpc_links.links()
            devices = {i.device: names.bridge(under.prefix, v.vni) for v in state.vpcs for i in v.interfaces}
            vpc_links.attach(devices, links_now)
            for vni, ips in announce:  # after every move of this apply: the old holder is gone
                ns, mac = names.namespace(under.prefix, vni), names.public_mac(under.prefix, vni)
                vpc_links.gratuitous_arp(ns, names.ROUTER_PUBLIC_IF, mac, ips)
            self._saved.save(self._file)
            self._applied = state
            self._last = {
                "seconds": round(time.monotonic() - started, 4),
                "nft_seconds": round(nft_seconds, 4),
                "changed": changed,  # VPCs whose desired state differs from the last apply
                "rebuilt": rebuilt,  # ... whose links, router table and DHCP were written
                "removed": sorted(gone),  # VNIs
            }

    def metadata_listener(self, vpc_id: str, port: int = 80) -> socket.socket:
        with self._lock:
            vpc = self._vpc(vpc_id)
            prefix = self._prefix()
        try:
            return vpc_links.listener(names.namespace(prefix, vpc.vni), METADATA_IP, port)
        except OSError as exc:
            raise VpcNetworkError(f"no metadata listener in {vpc_id}: {exc}") from exc

    def prepare_public_bridge(self, bridge: str, host_address: str) -> bool:
        with self._lock:
            links_now = vpc_links.links()
            if bridge in links_now and self._saved.created_public_bridge != bridge:
                return False  # an operator's bridge: its addresses are theirs
            if bridge not in links_now:
                vpc_links.ip_batch(
                    [f"link add {bridge} type bridge stp_state 0 forward_delay 0", f"link set {bridge} up"]
                )
                self._saved.created_public_bridge = bridge
                self._saved.save(self._file)
            vpc_links.set_sysctl(f"net.ipv6.conf.{bridge}.disable_ipv6", "1")
            vpc_links.ip_batch([f"address replace {host_address} dev {bridge}", f"link set {bridge} up"])
            return True

    def teardown(self) -> None:
        with self._lock:
            prefix = self._saved.prefix
            for directory in self._dir.glob("vni-*"):
                vpc_dhcp.stop(directory)
            if prefix is not None:
                links_now, ns_now = vpc_links.links(), vpc_links.namespaces()
                for vni in sorted(vpc_links.ours(prefix, links_now, ns_now)):
                    self._remove(prefix, vni, links_now, ns_now)
                vpc_nft.apply(
                    vpc_nft.delete_script("inet", vpc_nft.host_table_name(prefix))
                    + vpc_nft.delete_script("bridge", vpc_nft.antispoof_table_name(prefix))
                )
            public = self._saved.created_public_bridge
            if public is not None and not vpc_links.bridge_ports(public, vpc_links.links()):
                vpc_links.run("ip", "link", "del", public, check=False)
            for directory in self._dir.glob("vni-*"):
                shutil.rmtree(directory, ignore_errors=True)
            self._file.unlink(missing_ok=True)
            self._saved = _Saved()
            self._applied = self._host = self._antispoof = None
            self._rendered.clear()

    def describe(self) -> dict[str, object]:
        with self._lock:
            state, prefix = self._applied, self._saved.prefix
            links_now = vpc_links.links()
            vpcs: dict[str, object] = {}
            for vpc in state.vpcs if state is not None else ():
                assert prefix is not None
                br = names.bridge(prefix, vpc.vni)
                ports = vpc_links.bridge_ports(br, links_now)
                known = {i.device for i in vpc.interfaces} | {names.router_leg(prefix, vpc.vni)}
                known.add(names.vxlan(prefix, vpc.vni))
                vpcs[vpc.vpc_id] = {
                    "vni": vpc.vni,
                    "bridge": br,
                    "bridge_exists": br in links_now,
                    "namespace": names.namespace(prefix, vpc.vni),
                    "conntrack_zone": self._saved.zones.get(vpc.vni),
                    "interfaces": sorted(i.interface_id for i in vpc.interfaces),
                    "ports": ports,
                    "unregistered_ports": [p for p in ports if p not in known],
                    "dnsmasq_pid": vpc_dhcp.running_pid(self._vpc_dir(vpc.vni)),
                    "vxlan": names.vxlan(prefix, vpc.vni) in links_now,
                    "public_ips": sorted(i.public_ip for i in vpc.interfaces if i.public_ip),
                }
            return {"driver": "vpc", "prefix": prefix, "vpcs": vpcs, "last_apply": dict(self._last)}

    # -- beyond the contract (tests, diagnostics) -------------------------------------------------

    def leases(self, vpc_id: str) -> list[Lease]:
        with self._lock:
            return vpc_dhcp.leases(self._vpc_dir(self._vpc(vpc_id).vni))

    def namespace(self, vpc_id: str) -> str:
        with self._lock:
            return names.namespace(self._prefix(), self._vpc(vpc_id).vni)

    # -- helpers --------------------------------------------------------------------------------

    def _prefix(self) -> str:
        if self._saved.prefix is None:
            raise VpcNetworkError("nothing applied yet")
        return self._saved.prefix

    def _vpc(self, vpc_id: str) -> Vpc:
        for vpc in self._applied.vpcs if self._applied is not None else ():
            if vpc.vpc_id == vpc_id:
                return vpc
        raise VpcNetworkError(f"{vpc_id} is not applied on this node")

    def _vpc_dir(self, vni: int) -> Path:
        return self._dir / f"vni-{vni}"

    @staticmethod
    def _require_br_netfilter() -> None:
        path = Path("/proc/sys") / BR_NETFILTER.replace(".", "/")
        if not path.exists():
            raise VpcNetworkError("br_netfilter is not loaded: security groups cannot see bridged traffic")
        vpc_links.set_sysctl(BR_NETFILTER, "1")

    def _allocate_zones(self, state: NodeNetwork) -> None:
        """A VPC's zone is its VNI folded into the range, or the next free one after it: node
        controllers sharing one machine's conntrack table (the tests' two nodes) then agree on a
        VPC's zone and give different VPCs different ones. Both matter there: the kernel hands a
        VXLAN frame between two local addresses to the other bridge with its conntrack entry, and
        VPCs with the same addresses must never share entries."""
        span = self._zone_range
        used = set(self._saved.zones.values())
        for vpc in state.vpcs:
            if vpc.vni in self._saved.zones:
                continue
            start = vpc.vni % len(span)
            candidates = (span[(start + i) % len(span)] for i in range(len(span)))
            zone = next((z for z in candidates if z not in used), None)
            if zone is None:
                raise VpcNetworkError("no conntrack zone left for another VPC")
            self._saved.zones[vpc.vni] = zone
            used.add(zone)

    def _apply_host_table(self, state: NodeNetwork) -> float:
        under = state.underlay
        vpcs = [vpc_nft.VpcOnNode(v, self._saved.zones[v.vni]) for v in state.vpcs]
        table = vpc_nft.host_table(under.prefix, under.public_bridge, vpcs, self._rendered)
        seconds = self._write(self._host, table)
        self._host = table
        return seconds

    def _apply_antispoof(self, state: NodeNetwork, links_now: vpc_links.Links) -> float:
        prefix = state.underlay.prefix
        known = {i.device for v in state.vpcs for i in v.interfaces}
        strangers = []
        for vpc in state.vpcs:
            known |= {names.router_leg(prefix, vpc.vni), names.vxlan(prefix, vpc.vni)}
            ports = vpc_links.bridge_ports(names.bridge(prefix, vpc.vni), links_now)
            strangers += [p for p in ports if p not in known]
        vxlans = [v.vni for v in state.vpcs if v.peers]
        table = vpc_nft.antispoof_table(prefix, state.vpcs, strangers, vxlans)
        seconds = self._write(self._antispoof, table)
        self._antispoof = table
        return seconds

    @staticmethod
    def _write(old: vpc_nft.Table | None, new: vpc_nft.Table) -> float:
        """Send only what changed; the whole table on the first write or when a diff is refused."""
        script = vpc_nft.diff_script(old, new) if old is not None else None
        if script == "":
            return 0.0
        if script is not None:
            with contextlib.suppress(VpcNetworkError):  # the kernel drifted from our memory
                return vpc_nft.apply(script)
        return vpc_nft.apply(vpc_nft.full_script(new))

    def _intact(self, vpc: Vpc, links_now: vpc_links.Links, ns_now: set[str]) -> bool:
        prefix = self._prefix()
        needed = [names.bridge(prefix, vpc.vni), names.router_leg(prefix, vpc.vni)]
        if vpc.peers:
            needed.append(names.vxlan(prefix, vpc.vni))
        if any(i.public_ip for i in vpc.interfaces):
            needed.append(names.public_leg(prefix, vpc.vni))
        return names.namespace(prefix, vpc.vni) in ns_now and all(n in links_now for n in needed)

    def _build(self, vpc: Vpc, under: NodeUnderlay, links_now: vpc_links.Links) -> list[str]:
        """Create or repair a VPC's links, router table and DHCP; returns public IPs new here."""
        prefix = under.prefix
        if any(i.public_ip for i in vpc.interfaces) and under.public_bridge not in links_now:
            vpc_links.ip_batch(
                [
                    f"link add {under.public_bridge} type bridge stp_state 0 forward_delay 0",
                    f"link set {under.public_bridge} up",
                ]
            )
            links_now[under.public_bridge] = {"ifname": under.public_bridge}
            self._saved.created_public_bridge = under.public_bridge
            self._saved.save(self._file)
        vpc_links.ensure_router(prefix, vpc, links_now, vpc_links.namespaces())
        announce = vpc_links.ensure_public_leg(prefix, vpc, under, links_now)
        vpc_links.ensure_vxlan(prefix, vpc, under, links_now)
        ns = names.namespace(prefix, vpc.vni)
        vpc_nft.apply(vpc_nft.full_script(vpc_nft.router_table(vpc)), namespace=ns)
        vpc_dhcp.ensure(vpc, prefix, self._vpc_dir(vpc.vni), self._binary)
        return announce

    def _remove(self, prefix: str, vni: int, links_now: vpc_links.Links, ns_now: set[str]) -> None:
        vpc_dhcp.stop(self._vpc_dir(vni))
        vpc_links.remove(prefix, vni, links_now, ns_now)
        shutil.rmtree(self._vpc_dir(vni), ignore_errors=True)
        self._saved.zones.pop(vni, None)


def _links_view(vpc: Vpc, under: NodeUnderlay) -> tuple[object, ...]:
    """What a VPC's links, router table and DHCP depend on (not its groups or taps)."""
    interfaces = sorted(
        (i.interface_id, i.subnet_id, i.mac, i.private_ip, i.hostname, i.public_ip) for i in vpc.interfaces
    )
    return (vpc.subnets, tuple(interfaces), vpc.remote, vpc.peers, under)
