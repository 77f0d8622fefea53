"""The EDGE network driver against the real kernel: a bridge, dnsmasq and nftables, with network
namespaces as instances. Traffic stays inside the bridge and namespaces the tests create."""

from __future__ import annotations

import http.server
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mallee.drivers.network import nftables
from mallee.drivers.network.base import GroupRule, HostNetwork, InstanceInterface
from mallee.drivers.network.edge import EdgeNetworkDriver
from support import netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "dnsmasq", "busybox")),
    reason="needs root, iproute2, nftables, dnsmasq and busybox",
)
METADATA_URL = "http://169.254.169.254/latest/meta-data/instance-id"


@dataclass
class Net:
    driver: EdgeNetworkDriver
    host: HostNetwork
    workdir: Path
    a: netns.Guest
    b: netns.Guest
    ia: InstanceInterface
    ib: InstanceInterface


def _free_subnet() -> str:
    """A 10.x.y.0/24 no route of this host overlaps (parallel runs pick different ones)."""
    used = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True
    ).stdout
    while True:
        prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
        if f"{prefix}." not in used:
            return prefix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Metadata(http.server.BaseHTTPRequestHandler):
    by_ip: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802
        caller = self.client_address[0]
        body = f"{self.by_ip.get(caller, 'unknown')} {caller}".encode()
        if self.path != "/latest/meta-data/instance-id":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _mac() -> str:
    return "02:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(5))


def _state_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mallee-net-"))  # dnsmasq (as nobody) must read it


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    tag = netns.suffix()
    sub = _free_subnet()
    state = _state_dir()
    host = HostNetwork(f"mlbr-{tag}", f"{sub}.1", 24, f"{sub}.1", _free_port(), lease_seconds=600)
    driver = EdgeNetworkDriver(state)
    server: http.server.ThreadingHTTPServer | None = None
    try:
        started = time.monotonic()
        driver.setup(host)
        print(f"\nsetup (bridge + nft + dnsmasq): {time.monotonic() - started:.3f} s")
        server = http.server.ThreadingHTTPServer((host.metadata_host, host.metadata_port), _Metadata)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with (
            netns.guest(host.bridge, _mac(), state) as a,
            netns.guest(host.bridge, _mac(), state) as b,
        ):
            ia = InstanceInterface(f"i-a{tag}", a.mac, f"{sub}.10", "host-a", a.host_if)
            ib = InstanceInterface(f"i-b{tag}", b.mac, f"{sub}.11", "host-b", b.host_if)
            driver.add_instance(ia)
            driver.add_instance(ib)
            _Metadata.by_ip = {ia.ip: ia.instance_id, ib.ip: ib.instance_id}
            yield Net(driver, host, state, a, b, ia, ib)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        driver.teardown()
        shutil.rmtree(state, ignore_errors=True)


def test_dhcp_hands_out_the_fixed_ips(net: Net) -> None:
    for guest, iface in ((net.a, net.ia), (net.b, net.ib)):
        started = time.monotonic()
        assert guest.dhcp() == iface.ip
        print(f"\nDHCP lease for {guest.ns}: {time.monotonic() - started:.3f} s")
    leases = {(lease.mac, lease.ip, lease.hostname) for lease in net.driver.leases()}
    assert (net.ia.mac, net.ia.ip, "host-a") in leases
    assert (net.ib.mac, net.ib.ip, "host-b") in leases


def test_unknown_mac_gets_no_address(net: Net) -> None:
    with netns.guest(net.host.bridge, _mac(), net.workdir) as stranger:
        assert stranger.dhcp(timeout=20) is None


def test_metadata_redirect_sees_the_callers_ip(net: Net) -> None:
    _ensure_addresses(net)
    assert net.a.http_get(METADATA_URL) == f"{net.ia.instance_id} {net.ia.ip}"
    assert net.b.http_get(METADATA_URL) == f"{net.ib.instance_id} {net.ib.ip}"


def test_security_groups_are_stateful_and_default_deny(net: Net) -> None:
    _ensure_addresses(net)
    net.b.echo_server(22, 80)
    ssh = [GroupRule("sg-web", "tcp", 22, 22, cidr="0.0.0.0/0")]
    members = {"sg-web": [net.ib.ip]}

    started = time.monotonic()
    net.driver.apply_security_groups(ssh, members)
    nft_seconds = net.driver.timings["nft_apply"]
    print(f"\nsecurity groups applied: {time.monotonic() - started:.3f} s (nft -f: {nft_seconds:.3f} s)")
    assert net.a.can_reach(net.ib.ip, 22)
    assert not net.a.can_reach(net.ib.ip, 80)

    held = net.a.connect(net.ib.ip, 22)
    assert held is not None and netns.exchange(held, "before") == "22:before"
    net.driver.apply_security_groups([], members)  # the rule is gone
    assert not net.a.can_reach(net.ib.ip, 22)
    assert netns.exchange(held, "after") == "22:after"  # the established connection lives on
    netns.close(held)

    # EC2's default group: members admit each other on every port; others stay out
    default = [GroupRule("sg-default", "-1", source_group="sg-default")]
    net.driver.apply_security_groups(default, {"sg-default": [net.ia.ip, net.ib.ip]})
    assert net.a.can_reach(net.ib.ip, 80)
    net.driver.apply_security_groups(default, {"sg-default": [net.ib.ip]})
    assert not net.a.can_reach(net.ib.ip, 80)


def test_anti_spoofing_drops_changed_ip_or_mac(net: Net) -> None:
    _ensure_addresses(net)
    net.b.echo_server(2222)
    net.driver.apply_security_groups(
        [GroupRule("sg-open", "tcp", 2222, 2222, cidr="0.0.0.0/0")], {"sg-open": [net.ib.ip]}
    )
    assert net.a.can_reach(net.ib.ip, 2222)
    sub = net.host.address.rsplit(".", 1)[0]

    # another IP (with B's MAC known statically, so ARP is not what stops it)
    try:
        _set_ip(net, net.a, f"{sub}.99")
        net.a.run("ip", "neigh", "replace", net.ib.ip, "lladdr", net.b.mac, "dev", "eth0")
        assert not net.a.can_reach(net.ib.ip, 2222)
        assert net.a.http_get(METADATA_URL, timeout=1.5) is None
        _set_ip(net, net.a, net.ib.ip)  # B's own IP from A's port
        assert net.a.http_get(METADATA_URL, timeout=1.5) is None
    finally:
        _set_ip(net, net.a, net.ia.ip)
    assert net.a.can_reach(net.ib.ip, 2222)

    # another MAC, same IP
    net.a.run("ip", "link", "set", "eth0", "address", _mac())
    try:
        assert not net.a.can_reach(net.ib.ip, 2222)
        assert net.a.http_get(METADATA_URL, timeout=1.5) is None
    finally:
        net.a.run("ip", "link", "set", "eth0", "address", net.a.mac)
        net.a.run("ip", "neigh", "flush", "dev", "eth0")
        net.a.run("ip", "route", "replace", "default", "via", net.host.address)
    assert net.a.can_reach(net.ib.ip, 2222)


def test_instance_removal_and_readdition(net: Net) -> None:
    _ensure_addresses(net)
    net.driver.remove_instance(net.ia.instance_id)
    try:
        assert net.a.http_get(METADATA_URL, timeout=1.5) is None  # no longer pinned: dropped
        assert net.ia.mac not in {lease.mac for lease in net.driver.leases()}
    finally:
        net.driver.add_instance(net.ia)
    assert net.a.dhcp() == net.ia.ip
    assert net.a.http_get(METADATA_URL) == f"{net.ia.instance_id} {net.ia.ip}"


def test_guard_rule_and_describe(net: Net) -> None:
    listing = subprocess.run(
        ["nft", "list", "table", "inet", nftables.filter_table(net.host.bridge)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'iifname "{net.host.bridge}" oifname != "{net.host.bridge}"' in listing
    status = net.driver.describe()
    assert status["bridge_exists"] is True
    assert status["unregistered_ports"] == []
    assert status["dnsmasq_pid"] is not None


def test_setup_is_idempotent_and_teardown_removes_everything(tmp_path: Path) -> None:
    tag = netns.suffix()
    sub = _free_subnet()
    state = _state_dir()
    host = HostNetwork(f"mlbr-{tag}", f"{sub}.1", 24, f"{sub}.1", _free_port())
    driver = EdgeNetworkDriver(state)
    try:
        driver.setup(host)
        pid = driver.describe()["dnsmasq_pid"]
        driver.setup(host)
        assert driver.describe()["dnsmasq_pid"] == pid  # not restarted
        driver.add_instance(InstanceInterface(f"i-t{tag}", _mac(), f"{sub}.5", "t", f"mlv-t{tag}"))
        again = EdgeNetworkDriver(state)  # a restarted node controller sees the same state
        assert [i.instance_id for i in again.instances()] == [f"i-t{tag}"]
    finally:
        driver.teardown()
        driver.teardown()
        shutil.rmtree(state, ignore_errors=True)
    assert subprocess.run(["ip", "link", "show", host.bridge], capture_output=True).returncode != 0
    assert not nftables.table_exists("inet", nftables.filter_table(host.bridge))
    assert not nftables.table_exists("bridge", nftables.antispoof_table(host.bridge))
    assert isinstance(pid, int)
    assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()


def _set_ip(net: Net, guest: netns.Guest, ip: str) -> None:
    guest.run("ip", "addr", "flush", "dev", "eth0")
    guest.run("ip", "neigh", "flush", "dev", "eth0")
    guest.run("ip", "addr", "add", f"{ip}/{net.host.prefix}", "dev", "eth0")
    guest.run("ip", "route", "replace", "default", "via", net.host.address)


def _ensure_addresses(net: Net) -> None:
    for guest, iface in ((net.a, net.ia), (net.b, net.ib)):
        if iface.ip not in guest.run("ip", "-4", "-br", "addr", "show", "eth0").stdout:
            assert guest.dhcp() == iface.ip
