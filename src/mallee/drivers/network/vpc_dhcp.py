"""DHCP for one VPC: dnsmasq inside the VPC's router namespace, on its leg on the VPC bridge, with one
static range per subnet (the subnet's gateway as router) and fixed MAC -> IP entries only. The
process handling (pid file checks, stop by pid, leases) is dnsmasq.py's."""

from __future__ import annotations

import ipaddress
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from mallee.core.files import write_atomically
from mallee.drivers.network import dnsmasq
from mallee.drivers.network import vpc_model as names
from mallee.drivers.network.dnsmasq import Lease
from mallee.drivers.network.vpc_contract import Interface, Vpc, VpcNetworkError
from mallee.drivers.network.vpc_links import run

LEASE_SECONDS = 3600


def files(directory: Path) -> dnsmasq.DnsmasqFiles:
    return dnsmasq.DnsmasqFiles.under(directory)


def command(vpc: Vpc, where: dnsmasq.DnsmasqFiles, binary: str = dnsmasq.DNSMASQ) -> list[str]:
    argv = [
        binary,
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        f"--interface={names.ROUTER_VPC_IF}",
        "--except-interface=lo",
        "--no-resolv",
        "--no-hosts",
        "--dhcp-authoritative",
    ]
    for n, subnet in enumerate(sorted(vpc.subnets, key=lambda s: s.subnet_id)):
        net = ipaddress.IPv4Network(subnet.cidr)
        argv += [
            f"--dhcp-range=set:s{n},{net.network_address},static,{net.netmask},{LEASE_SECONDS}",
            f"--dhcp-option=tag:s{n},option:router,{subnet.gateway}",
        ]
    return [
        *argv,
        f"--dhcp-hostsfile={where.hosts}",
        f"--dhcp-leasefile={where.leases}",
        f"--pid-file={where.pid}",
        f"--log-facility={where.log}",
        "--log-dhcp",
    ]


def render_hosts(interfaces: Sequence[Interface]) -> str:
    return "".join(f"{i.mac},{i.private_ip},{i.hostname}\n" for i in sorted(interfaces, key=lambda i: i.mac))


def ensure(vpc: Vpc, prefix: str, directory: Path, binary: str = dnsmasq.DNSMASQ) -> int:
    """Run dnsmasq for `vpc` with its current interfaces; returns its pid. A changed subnet list
    restarts it; changed interfaces reach it by SIGHUP, and a removed interface's lease is dropped
    so that its address can go to another MAC at once."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # dnsmasq re-reads the hosts file after dropping root
    where = files(directory)
    text = render_hosts(vpc.interfaces)
    try:
        changed = where.hosts.read_text() != text
    except FileNotFoundError:
        changed = True
    if changed:
        write_atomically(where.hosts, text)
    wanted = command(vpc, where, binary)
    pid = dnsmasq.running_pid(where)
    stale = _stale_leases(vpc.interfaces, where)
    if pid is not None and (dnsmasq.running_command(pid) != wanted or stale):
        dnsmasq.stop(where)
        pid = None
    if stale:
        lines = where.leases.read_text().splitlines(keepends=True)
        write_atomically(where.leases, "".join(ln for i, ln in enumerate(lines) if i not in stale))
    if pid is None:
        run("ip", "netns", "exec", names.namespace(prefix, vpc.vni), *wanted)
        pid = dnsmasq.running_pid(where)
        if pid is None:
            raise VpcNetworkError("dnsmasq started but left no pid file")
    elif changed:
        os.kill(pid, signal.SIGHUP)
    return pid


def _stale_leases(interfaces: Sequence[Interface], where: dnsmasq.DnsmasqFiles) -> set[int]:
    """Line numbers of leases that no longer match an interface (MAC and IP)."""
    try:
        lines = where.leases.read_text().splitlines()
    except FileNotFoundError:
        return set()
    current = {(i.mac, i.private_ip) for i in interfaces}
    stale = set()
    for n, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 3 and fields[0] != "duid" and (fields[1].lower(), fields[2]) not in current:
            stale.add(n)
    return stale


def stop(directory: Path) -> None:
    dnsmasq.stop(files(directory))


def running_pid(directory: Path) -> int | None:
    return dnsmasq.running_pid(files(directory))


def leases(directory: Path) -> list[Lease]:
    return dnsmasq.read_leases(files(directory))
