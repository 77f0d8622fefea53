"""The fake VPC driver kept on disk: a new driver object sees what the last one applied (as kernel
objects outlive a killed node controller), and teardown forgets it."""

from __future__ import annotations

import json
from pathlib import Path

from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    NodeUnderlay,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
)
from mallee.drivers.network.vpc_fake import FakeVpcDriver

UNDERLAY = NodeUnderlay("m0", "127.0.0.1", "mpub0", "198.51.100.0/24")


def _state() -> NodeNetwork:
    iface = Interface(
        "eni-1", "i-1", "subnet-1", "d0:0d:00:00:00:01", "172.31.0.10", "vn1", "ip-172-31-0-10", ("sg-1",),
        public_ip="198.51.100.20",
    )  # fmt: skip
    group = SecurityGroup("sg-1", ingress=(Rule("tcp", 22, 22, cidr="0.0.0.0/0"),), members=("172.31.0.10",))
    vpc = Vpc("vpc-1", 7, "172.31.0.0/16", (Subnet("subnet-1", "172.31.0.0/20"),), (iface,), (group,))
    return NodeNetwork(UNDERLAY, (vpc,))


def test_a_new_fake_driver_sees_what_the_last_one_applied(tmp_path: Path) -> None:
    first = FakeVpcDriver(tmp_path)
    assert first.prepare_public_bridge("mpub0", "198.51.100.1/24")
    first.apply(_state())
    again = FakeVpcDriver(tmp_path)
    assert again.describe()["vpcs"] == first.describe()["vpcs"]
    assert again.public_bridge == ("mpub0", "198.51.100.1/24")
    assert again.public_address_of("172.31.0.10", "vpc-1") == "198.51.100.20"
    wired = json.loads((tmp_path / "fake-vpc-network.json").read_text())  # what tests count
    assert [i["instance_id"] for v in wired["state"]["vpcs"] for i in v["interfaces"]] == ["i-1"]


def test_teardown_forgets_the_state_on_disk(tmp_path: Path) -> None:
    first = FakeVpcDriver(tmp_path)
    first.apply(_state())
    first.teardown()
    assert not (tmp_path / "fake-vpc-network.json").exists()
    assert FakeVpcDriver(tmp_path).describe()["vpcs"] == {}


def test_only_the_bridge_it_made_is_its_own(tmp_path: Path) -> None:
    driver = FakeVpcDriver(tmp_path)
    assert driver.prepare_public_bridge("mpub0", "198.51.100.1/24")
    assert driver.prepare_public_bridge("mpub0", "198.51.100.1/24")  # idempotent
    assert not driver.prepare_public_bridge("other0", "198.51.100.1/24")
