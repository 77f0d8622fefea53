"""The network-driver contract, run against every driver (the edge driver only as root with
iproute2, nftables and dnsmasq: it creates a real bridge with a random name and removes it)."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mallee.drivers.network.base import (
    ConflictError,
    GroupRule,
    HostNetwork,
    InstanceInterface,
    NetworkDriver,
    NetworkError,
)
from mallee.drivers.network.edge import EdgeNetworkDriver
from mallee.drivers.network.fake import FakeNetworkDriver

REAL = os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nft", "dnsmasq"))
DRIVERS: dict[str, Callable[[Path], NetworkDriver]] = {
    "fake": lambda _: FakeNetworkDriver(),
    "edge": EdgeNetworkDriver,
}


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Iterator[NetworkDriver]:
    if request.param == "edge" and not REAL:
        pytest.skip("the edge driver needs root, iproute2, nftables and dnsmasq")
    state = Path(tempfile.mkdtemp(prefix="mallee-net-"))
    d = DRIVERS[request.param](state)
    try:
        yield d
    finally:
        d.teardown()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def host() -> HostNetwork:
    sub = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    return HostNetwork(f"mlc-{secrets.token_hex(3)}", f"{sub}.1", 24, f"{sub}.1", 8775)


def _iface(host: HostNetwork, n: int, **changes: str) -> InstanceInterface:
    sub = host.address.rsplit(".", 1)[0]
    fields = {
        "instance_id": f"i-{n:017x}",
        "mac": f"02:00:00:00:00:{n:02x}",
        "ip": f"{sub}.{n + 10}",
        "hostname": f"host-{n}",
        "device": f"mlt{n}-{host.bridge[-6:]}",
    }
    fields.update(changes)
    return InstanceInterface(**fields)


def test_instances_need_setup(driver: NetworkDriver, host: HostNetwork) -> None:
    with pytest.raises(NetworkError):
        driver.add_instance(_iface(host, 1))
    with pytest.raises(NetworkError):
        driver.apply_security_groups([], {})
    driver.remove_instance("i-unknown")  # nothing to remove is fine


def test_setup_and_teardown_are_idempotent(driver: NetworkDriver, host: HostNetwork) -> None:
    driver.setup(host)
    driver.setup(host)
    driver.add_instance(_iface(host, 1))
    driver.setup(host)  # instances survive a repeated setup
    assert [i.instance_id for i in driver.instances()] == [_iface(host, 1).instance_id]
    status = driver.describe()
    assert status["bridge"] == host.bridge and status["bridge_exists"] is True
    json.dumps(status)
    driver.teardown()
    driver.teardown()
    assert driver.instances() == []
    assert driver.describe()["bridge"] is None


def test_another_bridge_needs_teardown_first(driver: NetworkDriver, host: HostNetwork) -> None:
    driver.setup(host)
    other = HostNetwork(f"mlo-{secrets.token_hex(3)}", "10.1.2.1", 24, "10.1.2.1", 1)
    with pytest.raises(NetworkError):
        driver.setup(other)
    assert driver.describe()["bridge"] == host.bridge


def test_add_is_idempotent_and_replaces_changed_interfaces(driver: NetworkDriver, host: HostNetwork) -> None:
    driver.setup(host)
    first = _iface(host, 1)
    driver.add_instance(first)
    driver.add_instance(first)
    moved = _iface(host, 1, ip=host.address.rsplit(".", 1)[0] + ".99")
    driver.add_instance(moved)
    assert driver.instances() == [moved]


@pytest.mark.parametrize("clash", ["mac", "ip", "device"])
def test_conflicting_instances_are_refused(driver: NetworkDriver, host: HostNetwork, clash: str) -> None:
    driver.setup(host)
    driver.add_instance(_iface(host, 1))
    intruder = _iface(host, 2, **{clash: getattr(_iface(host, 1), clash)})
    with pytest.raises(ConflictError):
        driver.add_instance(intruder)
    assert driver.instances() == [_iface(host, 1)]


def test_remove_instance(driver: NetworkDriver, host: HostNetwork) -> None:
    driver.setup(host)
    for n in (3, 1, 2):
        driver.add_instance(_iface(host, n))
    assert [i.instance_id for i in driver.instances()] == [_iface(host, n).instance_id for n in (1, 2, 3)]
    driver.remove_instance(_iface(host, 2).instance_id)
    driver.remove_instance(_iface(host, 2).instance_id)
    assert [i.instance_id for i in driver.instances()] == [_iface(host, n).instance_id for n in (1, 3)]
    driver.add_instance(_iface(host, 4, ip=_iface(host, 2).ip))  # the freed IP can be reused at once


def test_security_groups_replace_and_repeat(driver: NetworkDriver, host: HostNetwork) -> None:
    driver.setup(host)
    ip = _iface(host, 1).ip
    rules = [
        GroupRule("sg-1", "tcp", 22, 22, cidr="0.0.0.0/0"),
        GroupRule("sg-1", "-1", source_group="sg-1"),
        GroupRule("sg-2", "icmp", 8, -1, cidr="10.0.0.0/8"),
    ]
    driver.apply_security_groups(rules, {"sg-1": [ip]})
    driver.apply_security_groups(list(reversed(rules)), {"sg-1": [ip, ip]})
    assert driver.describe()["groups"] == ["sg-1", "sg-2"]
    driver.apply_security_groups([], {})
    assert driver.describe()["groups"] == [] and driver.describe()["rules"] == 0


def test_capabilities_and_leases(driver: NetworkDriver, host: HostNetwork) -> None:
    assert {"dhcp", "security_groups", "anti_spoofing", "metadata_redirect"} <= set(driver.capabilities)
    driver.setup(host)
    assert driver.leases() == []
