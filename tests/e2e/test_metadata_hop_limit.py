"""The IMDSv2 hop limit on the wire: the node's MetadataProxy serving a real VPC's metadata listener
(the data plane of test_vpc_network.py: one node, one subnet), a network namespace as the instance,
and a second namespace (a "container") routed behind it and masqueraded as it, as Docker's default
bridge network is. At hop limit 1, EC2's default, the instance gets a token and the container does
not; at 2 both do. The CLC is a stand-in that answers the hop limit: what is tested is the TTL the
token's answer leaves with. Everything created is removed at the end, also after a failure."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mallee.drivers.network.vpc import VpcDriver
from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    NodeUnderlay,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
)
from mallee.rpc import cloud
from mallee.services.node.metadata_proxy import MetadataProxy, token_valid
from support import netns
from support.loops import running_loop

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("ip", "nft", "dnsmasq", "bridge"))
    or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
    reason="needs root, iproute2, nftables and dnsmasq",
)
KEY = b"k" * 32
VPC_ID = "vpc-hops"
GUEST_IP = "172.31.0.10"
CONTAINER_NET = "192.168.240"  # the guest's side is .1, the container .2 (inside namespaces only)
LOCAL_IPV4 = "http://169.254.169.254/latest/meta-data/local-ipv4"

# PUT /latest/api/token; prints the token, or exits 3 when no answer came within argv[1] seconds.
TOKEN_PUT = r"""
import sys, urllib.request
put = urllib.request.Request("http://169.254.169.254/latest/api/token", method="PUT",
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
try:
    print(urllib.request.urlopen(put, timeout=float(sys.argv[1])).read().decode())
except OSError as e:
    print("no answer:", e)
    sys.exit(3)
"""


class StandInClc:
    """Answers the node's metadata rpc as the CLC does for one instance whose
    HttpPutResponseHopLimit is `hop_limit`; a GET is answered with the address that asked."""

    def __init__(self) -> None:
        self.hop_limit = 1

    def call(self, operation: Any, request: cloud.MetadataRequest) -> cloud.MetadataAnswer:
        assert operation is cloud.METADATA
        if request.token_request:
            return cloud.MetadataAnswer(status=200, body=b"", hop_limit=self.hop_limit)
        return cloud.MetadataAnswer(status=200, body=request.private_ip.encode())


@dataclass
class Hops:
    clc: StandInClc
    guest: netns.Guest
    container: netns.Guest


def _token(ns: netns.Guest, timeout: float = 2.0) -> str | None:
    done = ns.run(sys.executable, "-c", TOKEN_PUT, str(timeout), check=False, timeout=timeout + 10)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def hops() -> Iterator[Hops]:
    tag = netns.suffix()
    workdir = Path(tempfile.mkdtemp(prefix="mallee-hops-e2e-"))
    workdir.chmod(0o755)  # dnsmasq (as nobody) reads its hosts files below it
    prefix = "h" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=3))
    underlay = NodeUnderlay(prefix, "10.253.254.1", f"{prefix}pub", "198.51.100.0/24")
    driver = VpcDriver(workdir / "node")
    clc = StandInClc()
    proxy = MetadataProxy(KEY, clc)  # type: ignore[arg-type]
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.callback(driver.teardown)
        mac = "02:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(5))
        guest = stack.enter_context(netns.guest(None, mac, workdir, host_if=f"mlh{tag}"))
        interface = Interface(
            "eni-hops", "i-hops", "subnet-1", mac, GUEST_IP, guest.host_if, "host-hops", ("sg-hops",)
        )
        group = SecurityGroup("sg-hops", (), (Rule("-1", cidr="0.0.0.0/0"),), (GUEST_IP,))
        subnet = Subnet("subnet-1", "172.31.0.0/24")
        vni = random.randint(100_000, 16_000_000)
        vpc = Vpc(VPC_ID, vni, "172.31.0.0/16", (subnet,), (interface,), (group,))
        driver.apply(NodeNetwork(underlay, (vpc,)))
        guest.run("ip", "addr", "add", f"{GUEST_IP}/24", "dev", "eth0")
        guest.run("ip", "route", "replace", "default", "via", subnet.gateway)
        proxy.bind(stack.enter_context(running_loop()))
        proxy.follow([VPC_ID], lambda vpc_id: driver.metadata_listener(vpc_id, 80))
        stack.callback(_stop, proxy)
        container = stack.enter_context(_container_behind(guest, workdir))
        yield Hops(clc, guest, container)


def test_at_hop_limit_one_the_instance_gets_a_token_and_a_container_behind_it_does_not(hops: Hops) -> None:
    hops.clc.hop_limit = 1
    token = _token(hops.guest)
    assert token is not None and token_valid(KEY, VPC_ID, GUEST_IP, token)
    # The container reaches the service (a GET's answer has no hop limit) and shows as the
    # instance; only the token's answer stops at the instance.
    assert hops.container.http_get(LOCAL_IPV4) == GUEST_IP
    assert _token(hops.container) is None


def test_at_hop_limit_two_a_container_behind_the_instance_gets_a_token_too(hops: Hops) -> None:
    hops.clc.hop_limit = 2
    for ns in (hops.guest, hops.container):
        token = _token(ns)
        assert token is not None and token_valid(KEY, VPC_ID, GUEST_IP, token), ns.ns


def _stop(proxy: MetadataProxy) -> None:
    assert proxy.loop is not None
    asyncio.run_coroutine_threadsafe(proxy.stop(), proxy.loop).result(10)


@contextmanager
def _container_behind(guest: netns.Guest, workdir: Path) -> Iterator[netns.Guest]:
    """A namespace one routed hop behind `guest`: a veth pair between the two on a /30 of its own,
    the guest forwarding and masquerading what the container sends out of its eth0."""
    container = netns.Guest(ns=f"mlct-{netns.suffix()}", host_if="", mac="", workdir=workdir)
    try:
        netns.sh("ip", "netns", "add", container.ns)
        netns.sh("ip", "-n", guest.ns, "link", "add", "ctr0", "type", "veth",
                 "peer", "name", "eth0", "netns", container.ns)  # fmt: skip
        guest.run("ip", "addr", "add", f"{CONTAINER_NET}.1/30", "dev", "ctr0")
        guest.run("ip", "link", "set", "ctr0", "up")
        container.run("ip", "link", "set", "lo", "up")
        container.run("ip", "addr", "add", f"{CONTAINER_NET}.2/30", "dev", "eth0")
        container.run("ip", "link", "set", "eth0", "up")
        container.run("ip", "route", "add", "default", "via", f"{CONTAINER_NET}.1")
        guest.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        guest.run("nft", "add", "table", "ip", "mlmasq")
        guest.run("nft", "add", "chain", "ip", "mlmasq", "out",
                  "{ type nat hook postrouting priority srcnat; }")  # fmt: skip
        guest.run("nft", "add", "rule", "ip", "mlmasq", "out", "oifname", "eth0", "masquerade")
        yield container
    finally:
        for proc in container.procs:
            netns.close(proc)
        # Both go with the namespaces too; removed here so that nothing outlives the test even if
        # a namespace is kept open by someone else.
        guest.run("nft", "delete", "table", "ip", "mlmasq", check=False)
        netns.sh("ip", "-n", guest.ns, "link", "del", "ctr0", check=False)
        netns.sh("ip", "netns", "del", container.ns, check=False)
