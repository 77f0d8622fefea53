"""The node's instance manager on the fake drivers: launch, report, guest-initiated shutdown."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mallee.drivers import registry
from mallee.rpc.node import (
    ImageSource,
    InstanceLaunch,
    InstanceType,
    LaunchImage,
    LaunchInterface,
    NodeInstance,
)
from mallee.services.node.imagecache import ImageCache
from mallee.services.node.instances import InstanceManager


def _launch(instance_id: str) -> InstanceLaunch:
    return InstanceLaunch(
        instance_id=instance_id,
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=InstanceType(name="m1.small", cpus=1, memory_mib=256, disk_gib=1),
        image=LaunchImage(root=ImageSource(key="emi-1", url="unused", format="raw")),
        mac="d0:0d:00:00:00:01",
        private_ip="10.111.0.2",
        hostname=instance_id,
        availability_zone="mallee-1a",
        interface=LaunchInterface(
            interface_id="eni-" + instance_id[2:], vpc_id="vpc-1", vni=7, subnet_id="subnet-1"
        ),
    )


def _manager(tmp_path: Path) -> tuple[InstanceManager, Any]:
    def fetch(source: ImageSource, target: Path) -> None:
        target.write_bytes(b"\0" * 65536)

    hypervisor = registry.hypervisor("fake")
    manager = InstanceManager(
        tmp_path / "instances",
        hypervisor,
        ImageCache(tmp_path / "cache", 10**9, fetch),
        "m0",
        lambda _interface_id: True,  # every interface is applied (see test_node_network.py)
    )
    return manager, hypervisor


def _wait(manager: InstanceManager, instance_id: str, state: str) -> NodeInstance:
    deadline = time.monotonic() + 10
    while True:
        report = manager.describe()
        if instance_id in report and report[instance_id].state == state:
            return report[instance_id]
        assert time.monotonic() < deadline, report
        time.sleep(0.05)


def test_an_instance_whose_guest_powers_off_is_terminated(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    manager.run(_launch("i-0123456789abcdef0"))
    _wait(manager, "i-0123456789abcdef0", "running")
    hypervisor.destroy("i-0123456789abcdef0")  # the guest went away on its own
    report = _wait(manager, "i-0123456789abcdef0", "terminated")
    assert report.reason.startswith("Client.InstanceInitiatedShutdown")
    assert not (tmp_path / "instances" / "i-0123456789abcdef0").exists()


def test_run_is_idempotent_on_the_instance_id(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    manager.run(_launch("i-0123456789abcdef1"))
    manager.run(_launch("i-0123456789abcdef1"))
    _wait(manager, "i-0123456789abcdef1", "running")
    assert hypervisor.list_instances() == ["i-0123456789abcdef1"]
