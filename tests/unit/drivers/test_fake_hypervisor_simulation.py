"""What the fake hypervisor offers simulated nodes beyond the shared contract: a capacity of their
own and a start that takes time (`boot_delay`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mallee.drivers import registry
from mallee.drivers.hypervisor.base import HostResources, InstanceSpec, PowerState
from mallee.drivers.hypervisor.fake import FakeHypervisor

DELAY = 0.3


def _spec(tmp_path: Path, instance_id: str = "i-0123456789abcdef0") -> InstanceSpec:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"kernel")
    return InstanceSpec(instance_id, 1, 256, tmp_path / "console.log", kernel=kernel)


def _spawn_in_thread(driver: FakeHypervisor, spec: InstanceSpec) -> threading.Thread:
    thread = threading.Thread(target=driver.spawn, args=(spec,))
    thread.start()
    return thread


def test_a_simulated_node_reports_the_capacity_it_was_given() -> None:
    given = HostResources(cores=96, memory_mib=393216, disk_gib=4000)
    driver = registry.hypervisor("fake", resources=given)
    assert driver.host_resources() == given


def test_spawn_returns_after_the_boot_delay_and_the_instance_is_starting_meanwhile(tmp_path: Path) -> None:
    driver = FakeHypervisor(boot_delay=DELAY)
    spec = _spec(tmp_path)
    started = time.monotonic()
    thread = _spawn_in_thread(driver, spec)
    time.sleep(DELAY / 3)
    assert driver.state(spec.instance_id) is PowerState.STARTING
    assert b"MALLEE-READY" not in driver.console_output(spec.instance_id)
    thread.join(timeout=5)
    assert time.monotonic() - started >= DELAY
    assert driver.state(spec.instance_id) is PowerState.RUNNING
    assert b"MALLEE-READY" in driver.console_output(spec.instance_id)


def test_spawn_again_while_starting_is_a_no_op(tmp_path: Path) -> None:
    driver = FakeHypervisor(boot_delay=DELAY)
    spec = _spec(tmp_path)
    thread = _spawn_in_thread(driver, spec)
    time.sleep(DELAY / 3)
    again = time.monotonic()
    driver.spawn(spec)
    assert time.monotonic() - again < DELAY / 2
    thread.join(timeout=5)
    assert driver.list_instances() == [spec.instance_id]


def test_an_instance_destroyed_while_starting_stays_gone(tmp_path: Path) -> None:
    driver = FakeHypervisor(boot_delay=DELAY)
    spec = _spec(tmp_path)
    thread = _spawn_in_thread(driver, spec)
    time.sleep(DELAY / 3)
    driver.destroy(spec.instance_id)
    thread.join(timeout=5)
    assert driver.state(spec.instance_id) is None
    assert driver.list_instances() == []


def test_instances_of_one_host_start_side_by_side(tmp_path: Path) -> None:
    driver = FakeHypervisor(boot_delay=DELAY)
    specs = [_spec(tmp_path, f"i-{n:017x}") for n in range(5)]
    started = time.monotonic()
    threads = [_spawn_in_thread(driver, spec) for spec in specs]
    for thread in threads:
        thread.join(timeout=5)
    assert time.monotonic() - started < DELAY * 3  # not one after another (5 x DELAY)
    assert {driver.state(s.instance_id) for s in specs} == {PowerState.RUNNING}
