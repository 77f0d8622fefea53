"""The VPC network-driver contract (vpc_contract.py), run against the fake and the real driver (the
real one only as root with iproute2, nftables and dnsmasq: it creates bridges, namespaces and tables
under a random prefix and removes them)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import string
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mallee.drivers.network import vpc_model, vpc_nft
from mallee.drivers.network.vpc import VpcDriver
from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    NodeUnderlay,
    RemoteInterface,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
    VpcNetworkDriver,
    VpcNetworkError,
)
from mallee.drivers.network.vpc_fake import FakeVpcDriver

REAL = os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nft", "dnsmasq", "bridge"))


@pytest.fixture(params=["fake", "real"])
def driver(request: pytest.FixtureRequest) -> Iterator[VpcNetworkDriver]:
    if request.param == "real" and not REAL:
        pytest.skip("the real VPC driver needs root, iproute2, nftables and dnsmasq")
    state = Path(tempfile.mkdtemp(prefix="mallee-vpc-"))
    d: VpcNetworkDriver = FakeVpcDriver() if request.param == "fake" else VpcDriver(state)
    try:
        yield d
    finally:
        d.teardown()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def underlay() -> NodeUnderlay:
    prefix = "t" + "".join(random.choices(string.ascii_lowercase + string.digits, k=3))
    return NodeUnderlay(prefix, "10.254.1.1", f"{prefix}pub", "198.51.100.0/24")


def _vpc(n: int, vni: int | None = None, **changes: object) -> Vpc:
    vni = vni if vni is not None else random.randint(100_000, 16_000_000)
    web = SecurityGroup(
        f"sg-web{n}",
        ingress=(Rule("tcp", 22, 22, cidr="0.0.0.0/0"), Rule("-1", group_id=f"sg-web{n}")),
        egress=(Rule("-1", cidr="0.0.0.0/0"),),
        members=("172.31.0.10", "172.31.0.11"),
    )
    ifaces = tuple(
        Interface(
            f"eni-{n}{k}",
            f"i-{n}{k}",
            "subnet-a",
            f"02:00:00:00:{n:02x}:{k:02x}",
            f"172.31.0.{10 + k}",
            f"mlq{vni % 100000}x{k}",  # devices that do not exist: tolerated
            f"host-{k}",
            (web.group_id,),
            public_ip=f"198.51.100.{n * 10 + k}" if k == 0 else None,
        )
        for k in range(2)
    )
    base = Vpc(f"vpc-{n}", vni, "172.31.0.0/16", (Subnet("subnet-a", "172.31.0.0/24"),), ifaces, (web,))
    return replace(base, **changes)


def _changed(driver: VpcNetworkDriver) -> list[str]:
    last = driver.describe()["last_apply"]
    assert isinstance(last, dict)
    return list(last["changed"])


def test_apply_is_idempotent(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    state = NodeNetwork(underlay, (_vpc(1), _vpc(2)))
    driver.apply(state)
    assert sorted(_changed(driver)) == ["vpc-1", "vpc-2"]
    driver.apply(state)
    assert _changed(driver) == []
    status = driver.describe()
    assert sorted(status["vpcs"]) == ["vpc-1", "vpc-2"]
    last = status["last_apply"]
    assert isinstance(last, dict) and last["seconds"] >= 0


def test_a_changed_rule_changes_only_its_vpc(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    one, two = _vpc(1), _vpc(2)
    driver.apply(NodeNetwork(underlay, (one, two)))
    group = replace(two.groups[0], ingress=(Rule("tcp", 80, 80, cidr="10.0.0.0/8"),))
    driver.apply(NodeNetwork(underlay, (one, replace(two, groups=(group,)))))
    assert _changed(driver) == ["vpc-2"]


def test_vpcs_no_longer_in_the_state_are_removed(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    one, two = _vpc(1), _vpc(2)
    driver.apply(NodeNetwork(underlay, (one, two)))
    driver.apply(NodeNetwork(underlay, (one,)))
    assert sorted(driver.describe()["vpcs"]) == ["vpc-1"]
    if driver.capabilities.get("real"):
        assert not _link_exists(vpc_model.bridge(underlay.prefix, two.vni))
        assert vpc_model.namespace(underlay.prefix, two.vni) not in _namespaces()
        assert _link_exists(vpc_model.bridge(underlay.prefix, one.vni))


def _bad_states() -> dict[str, Vpc]:
    good = _vpc(1)
    a, b = good.interfaces
    group = good.groups[0]
    return {
        "duplicate MAC": replace(good, interfaces=(a, replace(b, mac=a.mac))),
        "duplicate private IP": replace(good, interfaces=(a, replace(b, private_ip=a.private_ip))),
        "duplicate device": replace(good, interfaces=(a, replace(b, device=a.device))),
        "address outside its subnet": replace(good, interfaces=(a, replace(b, private_ip="172.31.9.9"))),
        "the gateway's address": replace(good, interfaces=(a, replace(b, private_ip="172.31.0.1"))),
        "unknown subnet": replace(good, interfaces=(a, replace(b, subnet_id="subnet-x"))),
        "unknown group": replace(good, interfaces=(a, replace(b, group_ids=("sg-nope",)))),
        "rule naming an unknown group": replace(
            good, groups=(replace(group, ingress=(Rule("tcp", 1, 2, group_id="sg-nope"),)),)
        ),
        "bad port range": replace(
            good, groups=(replace(group, ingress=(Rule("tcp", 9, 2, cidr="0.0.0.0/0"),)),)
        ),
        "public IP off the public network": replace(good, interfaces=(a, replace(b, public_ip="192.0.2.7"))),
        "subnet outside the VPC": replace(good, subnets=(Subnet("subnet-a", "10.9.0.0/24"),)),
        "VNI out of range": replace(good, vni=0),
        # Among many good remote entries on one node, one whose node is no address, or a bad port:
        # each distinct node is checked once, and every entry's is checked.
        "remote node not an address": replace(good, remote=(*_remotes(9), _remote(99, "not-an-ip"))),
        "remote node's port out of range": replace(
            good, remote=(*_remotes(9), _remote(99, "10.0.0.8:70000"))
        ),
    }


def _remote(k: int, node: str = "10.0.0.7") -> RemoteInterface:
    return RemoteInterface(f"02:00:00:00:fe:{k:02x}", f"172.31.0.{100 + k}", node)


def _remotes(count: int) -> tuple[RemoteInterface, ...]:
    return tuple(_remote(k) for k in range(count))


@pytest.mark.parametrize("case", sorted(_bad_states()))
def test_an_inconsistent_state_is_refused_whole(
    driver: VpcNetworkDriver, underlay: NodeUnderlay, case: str
) -> None:
    good = _vpc(2)
    driver.apply(NodeNetwork(underlay, (good,)))
    before = driver.describe()["vpcs"]
    with pytest.raises(VpcNetworkError):
        driver.apply(NodeNetwork(underlay, (good, _bad_states()[case])))
    assert driver.describe()["vpcs"] == before


def test_two_vpcs_may_not_share_a_vni(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    one = _vpc(1)
    with pytest.raises(VpcNetworkError):
        driver.apply(NodeNetwork(underlay, (one, _vpc(2, vni=one.vni))))


def test_teardown_is_idempotent(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    driver.teardown()  # nothing applied yet
    vpc = _vpc(1)
    driver.apply(NodeNetwork(underlay, (vpc,)))
    driver.teardown()
    driver.teardown()
    assert driver.describe()["vpcs"] == {}
    if driver.capabilities.get("real"):
        assert not _link_exists(vpc_model.bridge(underlay.prefix, vpc.vni))
        assert not _link_exists(underlay.public_bridge)  # it created it
        assert vpc_model.namespace(underlay.prefix, vpc.vni) not in _namespaces()
        for family, name in (
            ("inet", vpc_nft.host_table_name(underlay.prefix)),
            ("bridge", vpc_nft.antispoof_table_name(underlay.prefix)),
        ):
            assert subprocess.run(["nft", "list", "table", family, name], capture_output=True).returncode != 0
    driver.apply(NodeNetwork(underlay, (vpc,)))  # usable again
    assert list(driver.describe()["vpcs"]) == ["vpc-1"]


def test_the_public_bridge_it_makes_carries_the_host_address(
    driver: VpcNetworkDriver, underlay: NodeUnderlay
) -> None:
    bridge = underlay.public_bridge
    assert driver.prepare_public_bridge(bridge, "198.51.100.1/24")
    assert driver.prepare_public_bridge(bridge, "198.51.100.1/24")  # idempotent
    if driver.capabilities.get("real"):
        shown = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True
        )
        assert "198.51.100.1/24" in shown.stdout
    driver.apply(NodeNetwork(underlay, (_vpc(1),)))  # an interface with a public address uses it
    driver.teardown()
    if driver.capabilities.get("real"):
        assert not _link_exists(bridge)  # it made it: it removes it


def test_an_existing_public_bridge_is_left_as_it_is(underlay: NodeUnderlay) -> None:
    if not REAL:
        pytest.skip("needs the real driver")
    bridge = underlay.public_bridge
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    state = Path(tempfile.mkdtemp(prefix="mallee-vpc-"))
    driver = VpcDriver(state)
    try:
        assert not driver.prepare_public_bridge(bridge, "198.51.100.1/24")  # an operator's
        shown = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True
        )
        assert "198.51.100.1" not in shown.stdout
        driver.teardown()
        assert _link_exists(bridge)
    finally:
        driver.teardown()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def test_another_prefix_needs_a_teardown(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    driver.apply(NodeNetwork(underlay, (_vpc(1),)))
    with pytest.raises(VpcNetworkError):
        other = underlay.prefix[:3] + ("a" if underlay.prefix[3] != "a" else "b")
        driver.apply(NodeNetwork(replace(underlay, prefix=other), (_vpc(1),)))


def test_metadata_listener(driver: VpcNetworkDriver, underlay: NodeUnderlay) -> None:
    with pytest.raises(VpcNetworkError):
        driver.metadata_listener("vpc-1")
    driver.apply(NodeNetwork(underlay, (_vpc(1),)))
    with pytest.raises(VpcNetworkError):
        driver.metadata_listener("vpc-9")
    sock = driver.metadata_listener("vpc-1", 8080)
    try:
        assert sock.type == socket.SOCK_STREAM
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        if driver.capabilities.get("real"):
            assert sock.getsockname() == ("169.254.169.254", 8080)
    finally:
        sock.close()


def test_node_controllers_on_one_machine_agree_on_a_vpcs_conntrack_zone(underlay: NodeUnderlay) -> None:
    """They share the kernel's conntrack table: one VPC must have one zone on both (the kernel hands
    a VXLAN frame between local addresses over with its entry), different VPCs different zones."""
    if not REAL:
        pytest.skip("needs the real driver")
    dirs = [Path(tempfile.mkdtemp(prefix="mallee-vpc-")) for _ in range(2)]
    first, second = VpcDriver(dirs[0]), VpcDriver(dirs[1])
    prefix = underlay.prefix[:3] + ("y" if underlay.prefix.endswith("z") else "z")
    other = replace(underlay, prefix=prefix, public_bridge=f"{prefix}pub")
    try:
        shared = _vpc(1)
        only_first = _vpc(2, vni=shared.vni + 1)
        first.apply(NodeNetwork(underlay, (only_first, shared)))  # the first node saw another VPC first
        second.apply(NodeNetwork(other, (shared,)))
        zones = [d.describe()["vpcs"] for d in (first, second)]
        assert zones[0]["vpc-1"]["conntrack_zone"] == zones[1]["vpc-1"]["conntrack_zone"]
        assert zones[0]["vpc-2"]["conntrack_zone"] != zones[0]["vpc-1"]["conntrack_zone"]
    finally:
        first.teardown()
        second.teardown()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def test_a_restarted_driver_takes_over(underlay: NodeUnderlay) -> None:
    if not REAL:
        pytest.skip("needs the real driver")
    state = Path(tempfile.mkdtemp(prefix="mallee-vpc-"))
    first = VpcDriver(state)
    try:
        one, two = _vpc(1), _vpc(2)
        first.apply(NodeNetwork(underlay, (one, two)))
        zone = first.describe()["vpcs"]["vpc-1"]["conntrack_zone"]
        again = VpcDriver(state)  # a restarted node controller: renders everything once
        again.apply(NodeNetwork(underlay, (one,)))
        assert again.describe()["vpcs"]["vpc-1"]["conntrack_zone"] == zone
        assert not _link_exists(vpc_model.bridge(underlay.prefix, two.vni))  # found and removed
        again.teardown()
        assert vpc_model.namespace(underlay.prefix, one.vni) not in _namespaces()
    finally:
        first.teardown()
        shutil.rmtree(state, ignore_errors=True)


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def _namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()
