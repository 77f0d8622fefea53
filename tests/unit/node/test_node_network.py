"""The node's VPC network on the fake drivers: pushed networks applied in generation order and kept
on disk first, launches that wait for their interface and then start on their VPC's bridge, and a
restarted node that applies its saved network again before it re-adopts its instances."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from mallee.drivers.hypervisor.fake import FakeHost, FakeHypervisor
from mallee.drivers.network.vpc_contract import NodeNetwork, NodeUnderlay, VpcNetworkError, vpc_bridge
from mallee.drivers.network.vpc_fake import FakeVpcDriver
from mallee.rpc import node
from mallee.services.node.imagecache import ImageCache
from mallee.services.node.instances import InstanceManager, LaunchRefused, tap_name
from mallee.services.node.network import NodeNetworkManager, hostname

UNDERLAY = NodeUnderlay("m0", "127.0.0.1", "mpub0", "198.51.100.0/24")
VNI = 4242
INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0123456789abcdef1"


def _launch(instance_id: str, n: int = 10) -> node.InstanceLaunch:
    return node.InstanceLaunch(
        instance_id=instance_id,
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=node.InstanceType(name="t1.micro", cpus=1, memory_mib=256, disk_gib=1),
        image=node.LaunchImage(root=node.ImageSource(key="emi-1", url="unused", format="raw")),
        mac=f"d0:0d:00:00:00:{n:02x}",
        private_ip=f"172.31.0.{n}",
        hostname=instance_id,
        availability_zone="mallee-1a",
        interface=node.LaunchInterface(
            interface_id=f"eni-{instance_id[2:]}", vpc_id="vpc-1", vni=VNI, subnet_id="subnet-1"
        ),
    )


def _network(generation: int, *launches: node.InstanceLaunch, vpc_id: str = "vpc-1") -> node.NodeNetwork:
    interfaces = [
        node.NetInterface(
            interface_id=launch.interface.interface_id,
            instance_id=launch.instance_id,
            subnet_id="subnet-1",
            mac=launch.mac,
            private_ip=launch.private_ip,
            group_ids=["sg-1"],
        )
        for launch in launches
        if launch.interface is not None
    ]
    group = node.NetGroup(
        group_id="sg-1",
        ingress=[node.NetRule(protocol="-1", group_id="sg-1")],
        egress=[node.NetRule(protocol="-1", cidr="0.0.0.0/0")],
        members=[i.private_ip for i in interfaces],
    )
    vpc = node.NetVpc(
        vpc_id=vpc_id,
        vni=VNI,
        cidr="172.31.0.0/16",
        subnets=[node.NetSubnet(subnet_id="subnet-1", cidr="172.31.0.0/20")],
        interfaces=interfaces,
        groups=[group],
    )
    return node.NodeNetwork(generation=generation, vpcs=[vpc])


@dataclass
class Node:
    """One node controller's parts, as its app wires them."""

    driver: FakeVpcDriver
    network: NodeNetworkManager
    manager: InstanceManager
    hypervisor: FakeHypervisor


def _node(tmp_path: Path, host: FakeHost, driver: FakeVpcDriver | None = None) -> Node:
    def fetch(source: node.ImageSource, target: Path) -> None:
        target.write_bytes(b"\0" * 65536)

    driver = driver or FakeVpcDriver(tmp_path / "network")
    hypervisor = FakeHypervisor(host)
    manager: InstanceManager | None = None

    def applied(_network: node.NodeNetwork) -> None:
        assert manager is not None
        manager.network_applied()

    network = NodeNetworkManager(driver, UNDERLAY, tmp_path / "node-network.json", on_applied=applied)
    manager = InstanceManager(
        tmp_path / "instances",
        hypervisor,
        ImageCache(tmp_path / "cache", 10**9, fetch),
        UNDERLAY.prefix,
        network.interface_applied,
    )
    return Node(driver, network, manager, hypervisor)


def _wait(manager: InstanceManager, instance_id: str, state: str) -> node.NodeInstance:
    deadline = time.monotonic() + 10
    while True:
        report = manager.describe()
        if instance_id in report and report[instance_id].state == state:
            return report[instance_id]
        assert time.monotonic() < deadline, report
        time.sleep(0.02)


def _applied_interfaces(driver: FakeVpcDriver) -> list[str]:
    return [i for v in driver.describe()["vpcs"].values() for i in v["interfaces"]]  # type: ignore[attr-defined]


def test_a_network_older_than_the_applied_one_is_ignored(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    assert n.network.apply(_network(2, _launch(INSTANCE)))
    assert not n.network.apply(_network(1))  # a late push of an older network
    assert n.network.generation == 2 and _applied_interfaces(n.driver) == [f"eni-{INSTANCE[2:]}"]
    saved = msgspec.json.decode((tmp_path / "node-network.json").read_bytes(), type=node.NodeNetwork)
    assert saved.generation == 2
    assert n.network.apply(_network(2, _launch(INSTANCE)))  # the same one again: applied (idempotent)
    assert n.network.apply(_network(3))
    assert n.network.generation == 3 and _applied_interfaces(n.driver) == []


def test_the_network_is_kept_on_disk_before_the_driver_applies_it(tmp_path: Path) -> None:
    saved = tmp_path / "node-network.json"
    seen: list[int] = []

    class Refusing(FakeVpcDriver):
        def apply(self, state: NodeNetwork) -> None:
            seen.append(msgspec.json.decode(saved.read_bytes(), type=node.NodeNetwork).generation)
            raise VpcNetworkError("the host refused")

    n = _node(tmp_path, FakeHost(), Refusing())
    with pytest.raises(VpcNetworkError):
        n.network.apply(_network(5, _launch(INSTANCE)))
    assert seen == [5]  # on disk when the driver was called
    assert n.network.generation == 0 and not n.network.interface_applied(f"eni-{INSTANCE[2:]}")


def test_a_network_the_driver_cannot_take_is_refused_and_not_kept(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    bad = _network(1, _launch(INSTANCE))
    bad.vpcs[0].interfaces[0].mac = "not-a-mac"
    with pytest.raises(ValueError):
        n.network.apply(bad)
    assert not (tmp_path / "node-network.json").exists() and n.network.generation == 0


def test_interfaces_get_their_instance_tap_and_an_aws_host_name(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    n.network.apply(_network(1, _launch(INSTANCE, 12)))
    assert n.driver.may_send(tap_name(INSTANCE), "d0:0d:00:00:00:0c", "172.31.0.12")
    assert n.driver.dhcp_request("vpc-1", "d0:0d:00:00:00:0c") == ("172.31.0.12", "172.31.0.1")
    assert hostname("172.31.0.12") == "ip-172-31-0-12"


def test_a_launch_waits_for_its_interface_then_starts_on_its_vpc_bridge(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    n.network.apply(_network(1))  # a network without the interface yet
    n.manager.run(_launch(INSTANCE))
    time.sleep(0.3)  # long enough to have started, had it not waited
    assert n.manager.describe()[INSTANCE].state == "pending" and n.hypervisor.list_instances() == []
    n.network.apply(_network(2, _launch(INSTANCE)))
    _wait(n.manager, INSTANCE, "running")
    spec = n.hypervisor.describe(INSTANCE)
    assert spec is not None
    (nic,) = spec.nics
    assert (nic.bridge, nic.mac, nic.device) == (
        vpc_bridge("m0", VNI),
        "d0:0d:00:00:00:0a",
        tap_name(INSTANCE),
    )


def test_a_launch_terminated_while_it_waits_never_starts(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    n.manager.run(_launch(INSTANCE))
    time.sleep(0.2)
    n.manager.terminate(INSTANCE)
    _wait(n.manager, INSTANCE, "terminated")
    n.network.apply(_network(1, _launch(INSTANCE)))
    time.sleep(0.1)
    assert n.hypervisor.list_instances() == [] and not (tmp_path / "instances" / INSTANCE).exists()


def test_a_launch_without_an_interface_is_refused(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    edge = msgspec.structs.replace(_launch(INSTANCE), interface=None)
    with pytest.raises(LaunchRefused):
        n.manager.run(edge)
    assert n.manager.describe() == {} and not (tmp_path / "instances" / INSTANCE).exists()


def test_terminate_leaves_the_interface_to_the_next_network(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    n.network.apply(_network(1, _launch(INSTANCE)))
    n.manager.run(_launch(INSTANCE))
    _wait(n.manager, INSTANCE, "running")
    n.manager.terminate(INSTANCE)
    _wait(n.manager, INSTANCE, "terminated")
    assert _applied_interfaces(n.driver) == [f"eni-{INSTANCE[2:]}"]  # until the CLC drops it
    n.network.apply(_network(2))
    assert _applied_interfaces(n.driver) == []


def test_a_restarted_node_applies_its_saved_network_before_it_adopts(tmp_path: Path) -> None:
    host = FakeHost()
    first = _node(tmp_path, host)
    first.network.apply(_network(3, _launch(INSTANCE, 10), _launch(OTHER, 11)))
    first.manager.run(_launch(INSTANCE, 10))
    _wait(first.manager, INSTANCE, "running")
    # A launch kept on disk whose VM never started (the node died right after keeping it).
    crashed = tmp_path / "instances" / OTHER
    crashed.mkdir(parents=True)
    (crashed / "launch.json").write_bytes(msgspec.json.encode(_launch(OTHER, 11)))

    # The restarted node controller on a host that lost its network (a fresh driver, no state).
    again = _node(tmp_path, host, FakeVpcDriver())
    assert again.network.generation == 0 and again.driver.describe()["vpcs"] == {}
    again.network.restore()
    assert again.network.generation == 3
    assert sorted(_applied_interfaces(again.driver)) == [f"eni-{INSTANCE[2:]}", f"eni-{OTHER[2:]}"]
    again.manager.adopt()
    assert again.manager.describe()[INSTANCE].state == "running"
    _wait(again.manager, OTHER, "running")  # its interface is applied: it starts at once
    assert again.hypervisor.list_instances() == sorted([INSTANCE, OTHER])


def test_a_restart_without_a_saved_network_applies_nothing(tmp_path: Path) -> None:
    n = _node(tmp_path, FakeHost())
    n.network.restore()
    assert n.network.generation == 0 and n.driver.describe()["vpcs"] == {}
