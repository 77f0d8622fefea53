"""A VPC's links on a node through iproute2: its bridge, the router namespace with its legs on the
VPC bridge and the public bridge, the VXLAN device with its forwarding entries, and the two things
Python must do inside a namespace (a listening socket, a gratuitous ARP) from a short-lived thread
that joins the namespace (a socket stays in the namespace it was created in)."""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from mallee.drivers.network import vpc_model as names
from mallee.drivers.network.vpc_contract import (
    METADATA_IP,
    NodeUnderlay,
    Vpc,
    VpcNetworkError,
    underlay_endpoint,
)

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
Links = dict[str, dict[str, object]]


def run(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise VpcNetworkError(f"{' '.join(argv[:6])}: {done.stderr.strip()[:1000]}")
    return done


def ip_batch(commands: Iterable[str], namespace: str | None = None) -> None:
    script = "\n".join(commands)
    if script:
        where = ["-n", namespace] if namespace else []
        run("ip", *where, "-batch", "-", stdin=script + "\n")


def links() -> Links:
    """Every link of the host namespace by name."""
    return {link["ifname"]: link for link in json.loads(run("ip", "-j", "link", "show").stdout or "[]")}


def namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def ours(prefix: str, links_now: Links, namespaces_now: set[str]) -> set[int]:
    """The VNIs that have any link or namespace of this prefix on the host."""
    link = re.compile(rf"^{prefix}[vrpx](\d+)$")
    ns = re.compile(rf"^{re.escape(names.namespace(prefix, 0)[:-1])}(\d+)$")
    found = {int(m.group(1)) for name in links_now if (m := link.match(name))}
    return found | {int(m.group(1)) for name in namespaces_now if (m := ns.match(name))}


def set_sysctl(key: str, value: str) -> None:
    """A host sysctl (dotted key), written only when it differs."""
    path = Path("/proc/sys") / key.replace(".", "/")
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except FileNotFoundError:
        pass


def addresses(dev: str, namespace: str) -> set[str]:
    done = run("ip", "-n", namespace, "-j", "addr", "show", "dev", dev, check=False)
    found = set()
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                found.add(f"{info['local']}/{info['prefixlen']}")
    return found


def _sync_addresses(dev: str, namespace: str, wanted: set[str]) -> list[str]:
    have = addresses(dev, namespace)
    return [f"addr del {a} dev {dev}" for a in sorted(have - wanted)] + [
        f"addr replace {a} dev {dev}" for a in sorted(wanted - have)
    ]


def ensure_router(prefix: str, vpc: Vpc, links_now: Links, namespaces_now: set[str]) -> None:
    """The VPC bridge and the router namespace with its leg on it (gateways, metadata address)."""
    v = vpc.vni
    ns, br, leg = names.namespace(prefix, v), names.bridge(prefix, v), names.router_leg(prefix, v)
    if ns not in namespaces_now:
        run("ip", "netns", "add", ns)
    host = []
    if br not in links_now:
        host.append(f"link add {br} type bridge stp_state 0 forward_delay 0")
    if leg not in links_now:
        host.append(f"link add {leg} type veth peer name {names.ROUTER_VPC_IF} netns {ns}")
    ip_batch([*host, f"link set {leg} master {br} up", f"link set {br} up"])
    for dev in (br, leg):
        set_sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", "1")
    run(
        "ip", "netns", "exec", ns, "sysctl", "-q", "-w",
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.default.send_redirects=0",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    )  # fmt: skip
    gateways = {f"{s.gateway}/{ipaddress.IPv4Network(s.cidr).prefixlen}" for s in vpc.subnets}
    ip_batch(
        [
            "link set lo up",
            f"addr replace {METADATA_IP}/32 dev lo",
            f"link set {names.ROUTER_VPC_IF} address {names.gateway_mac(v)}",
            f"link set {names.ROUTER_VPC_IF} up",
            *_sync_addresses(names.ROUTER_VPC_IF, ns, gateways),
            *_sync_neighbours(ns, {r.private_ip: r.mac for r in vpc.remote}),
        ],
        ns,
    )


def _sync_neighbours(namespace: str, wanted: dict[str, str]) -> list[str]:
    """Static neighbour entries for the remote interfaces: the router never ARPs across VXLAN (its
    ARP, from the shared gateway MAC, is fenced off there)."""
    dev = names.ROUTER_VPC_IF
    done = run("ip", "-n", namespace, "-j", "neigh", "show", "dev", dev, "nud", "permanent", check=False)
    have = {n["dst"]: n.get("lladdr") for n in json.loads(done.stdout or "[]")}
    commands = [f"neigh del {ip} dev {dev}" for ip in sorted(set(have) - set(wanted))]
    for ip, mac in sorted(wanted.items()):
        if have.get(ip) != mac:
            commands.append(f"neigh replace {ip} lladdr {mac} dev {dev} nud permanent")
    return commands


def ensure_public_leg(prefix: str, vpc: Vpc, under: NodeUnderlay, links_now: Links) -> list[str]:
    """The router's leg on the public bridge with the VPC's public addresses here (removed when it
    has none); returns the public addresses it did not carry before (to announce)."""
    v = vpc.vni
    ns, leg, pub = names.namespace(prefix, v), names.public_leg(prefix, v), names.ROUTER_PUBLIC_IF
    wanted = {f"{i.public_ip}/32" for i in vpc.interfaces if i.public_ip}
    if not wanted:
        if leg in links_now:
            run("ip", "link", "del", leg)
        return []
    if leg not in links_now:
        run("ip", "link", "add", leg, "type", "veth", "peer", "name", pub, "netns", ns)
    ip_batch([f"link set {leg} master {under.public_bridge} up"])
    set_sysctl(f"net.ipv6.conf.{leg}.disable_ipv6", "1")
    run(
        "ip", "netns", "exec", ns, "sysctl", "-q", "-w",
        f"net.ipv4.conf.{pub}.arp_ignore=1", f"net.ipv4.conf.{pub}.arp_announce=2",
    )  # fmt: skip
    before = addresses(pub, ns)
    routes = [f"route replace {under.public_cidr} dev {pub} scope link"]
    if under.public_gateway:
        routes.append(f"route replace default via {under.public_gateway} dev {pub} onlink")
    commands = [f"link set {pub} address {names.public_mac(prefix, v)}", f"link set {pub} up"]
    ip_batch([*commands, *_sync_addresses(pub, ns, wanted), *routes], ns)
    return sorted(a.split("/")[0] for a in wanted - before)


def ensure_vxlan(prefix: str, vpc: Vpc, under: NodeUnderlay, links_now: Links) -> bool:
    """The VXLAN port towards the VPC's peers with static forwarding entries (removed without
    peers); returns whether the device exists afterwards."""
    v = vpc.vni
    vx, br = names.vxlan(prefix, v), names.bridge(prefix, v)
    if not vpc.peers:
        if vx in links_now:
            run("ip", "link", "del", vx)
        return False
    if vx not in links_now:
        # MTU 1500 keeps the bridge (and the instances) at 1500: the underlay carries 1550-byte
        # frames, or the kernel fragments the outer packets.
        argv = ["ip", "link", "add", vx, "mtu", "1500", "type", "vxlan", "id", str(v), "local", under.address]
        argv += ["dstport", str(under.vxlan_port), "nolearning"]
        if under.underlay_device:
            argv += ["dev", under.underlay_device]
        run(*argv)
    ip_batch([f"link set {vx} master {br} up"])
    set_sysctl(f"net.ipv6.conf.{vx}.disable_ipv6", "1")
    wanted = {("00:00:00:00:00:00", *underlay_endpoint(p, under.vxlan_port)) for p in vpc.peers}
    wanted |= {(r.mac, *underlay_endpoint(r.node, under.vxlan_port)) for r in vpc.remote}
    have = set()
    for entry in json.loads(run("bridge", "-j", "fdb", "show", "dev", vx).stdout or "[]"):
        if "dst" in entry:
            have.add((entry["mac"], entry["dst"], int(entry.get("port", under.vxlan_port))))
    commands = [f"fdb del {mac} dev {vx} dst {dst} self" for mac, dst, _ in sorted(have - wanted)]
    commands += [
        f"fdb append {mac} dev {vx} dst {dst} port {port} self permanent"
        for mac, dst, port in sorted(wanted - have)
    ]
    if commands:
        run("bridge", "-batch", "-", stdin="\n".join(commands) + "\n")
    return True


def attach(devices: dict[str, str], links_now: Links) -> None:
    """Put each existing device (-> bridge) on its bridge and up; missing devices are left alone."""
    commands = [
        f"link set {dev} master {br} up"
        for dev, br in sorted(devices.items())
        if dev in links_now
        and (links_now[dev].get("master") != br or "UP" not in str(links_now[dev].get("flags")))
    ]
    ip_batch(commands)


def remove(prefix: str, vni: int, links_now: Links, namespaces_now: set[str]) -> None:
    """Delete a VPC's links and namespace (the legs explicitly: a socket still open in the namespace
    would keep it, and its devices, alive)."""
    doomed = [n(prefix, vni) for n in (names.router_leg, names.public_leg, names.vxlan, names.bridge)]
    ip_batch(f"link del {name}" for name in doomed if name in links_now)
    if names.namespace(prefix, vni) in namespaces_now:
        run("ip", "netns", "del", names.namespace(prefix, vni))


def bridge_ports(bridge: str, links_now: Links) -> list[str]:
    return sorted(name for name, link in links_now.items() if link.get("master") == bridge)


def in_namespace(namespace: str, work: Callable[[], T]) -> T:
    """Run `work` in a thread that has joined network namespace `namespace`."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {namespace}: {os.strerror(err)}")
            finally:
                os.close(fd)
            results.append(work())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def listener(namespace: str, address: str, port: int) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    return in_namespace(namespace, make)


def gratuitous_arp(namespace: str, dev: str, mac: str, ips: Iterable[str]) -> None:
    """Announce `ips` at `mac` on `dev` (request and reply forms), so neighbours update at once."""
    hw = bytes.fromhex(mac.replace(":", ""))
    frames = []
    for ip in ips:
        addr = socket.inet_aton(ip)
        for op, target in ((1, b"\0" * 6), (2, b"\xff" * 6)):
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, hw, addr, target, addr)
            frames.append(b"\xff" * 6 + hw + b"\x08\x06" + arp)

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((dev, 0))
            for frame in frames:
                sock.send(frame)

    if frames:
        in_namespace(namespace, send)
