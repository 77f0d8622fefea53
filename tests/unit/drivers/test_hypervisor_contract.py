"""The hypervisor contract, run here against the fake and in tests/e2e/test_libvirt_driver.py against
libvirt booting the real tiny image: the test functions take an `hv` fixture (a HypervisorEnv), and
each module provides its own."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from mallee.drivers import registry
from mallee.drivers.hypervisor.base import (
    MIN_MEMORY_MIB,
    DiskSpec,
    Hypervisor,
    HypervisorError,
    InstanceNotFound,
    InstanceSpec,
    InvalidSpec,
    NicSpec,
    PowerState,
    SpawnFailed,
)
from mallee.drivers.hypervisor.fake import FakeHost, FakeHypervisor

READY = b"MALLEE-READY instance-id="


@dataclass
class HypervisorEnv:
    """One driver under test, and what the shared tests need around it."""

    new_driver: Callable[[], Hypervisor]  # another driver object on the same host (an NC restart)
    unreachable_driver: Callable[[], Hypervisor]  # fails any call that reaches the hypervisor
    make_disk: Callable[[Path], Path]  # a bootable root disk (qcow2 overlay) at the given path
    defined: Callable[[], list[str]]  # every instance the hypervisor itself knows, ours or not
    make_guest_ignore_power_button: Callable[[Hypervisor, str], None]
    workdir: Path
    kernel: Path
    ramdisk: Path
    cmdline: str
    boot_timeout: float = 60.0
    created: list[str] = field(default_factory=list)
    driver: Hypervisor = field(init=False)

    def __post_init__(self) -> None:
        self.driver = self.new_driver()

    def spec(self, **changes: object) -> InstanceSpec:
        """A spec for a new instance id (remembered for cleanup) with its own overlay and console log."""
        instance_id = f"i-{secrets.token_hex(8)}"
        self.created.append(instance_id)
        directory = self.workdir / instance_id
        directory.mkdir()
        spec = InstanceSpec(
            instance_id=instance_id,
            vcpus=1,
            memory_mib=128,
            console_log=directory / "console.log",
            kernel=self.kernel,
            ramdisk=self.ramdisk,
            cmdline=self.cmdline,
            disks=(DiskSpec("vda", self.make_disk(directory / "root.qcow2")),),
        )
        return replace(spec, **changes)  # type: ignore[arg-type]

    def wait_console(
        self,
        instance_id: str,
        text: bytes = READY,
        count: int = 1,
        timeout: float | None = None,
        must: bool = True,
    ) -> float:
        """Seconds until `text` has appeared `count` times on the console; if it does not within
        `timeout` (default boot_timeout): AssertionError, or -1.0 when not `must`."""
        start = time.monotonic()
        output = b""
        while time.monotonic() - start < (timeout or self.boot_timeout):
            output = self.driver.console_output(instance_id)
            if output.count(text) >= count:
                return time.monotonic() - start
            time.sleep(0.1)
        if not must:
            return -1.0
        tail = output[-3000:].decode(errors="replace")
        raise AssertionError(f"{text!r} x{count} not on the console in {self.boot_timeout} s:\n{tail}")

    def cleanup(self) -> None:
        """Destroy every instance the tests created, by id, with a fresh driver."""
        driver = self.new_driver()
        for instance_id in self.created:
            driver.destroy(instance_id)


def fake_env(workdir: Path) -> HypervisorEnv:
    host = FakeHost()
    kernel, ramdisk = workdir / "vmlinux", workdir / "initrd.img"
    kernel.write_bytes(b"kernel")
    ramdisk.write_bytes(b"initrd")

    def make_disk(path: Path) -> Path:
        path.write_bytes(b"qcow2 overlay")
        return path

    def unreachable(spec: InstanceSpec) -> None:
        raise AssertionError("the hypervisor was called")

    def ignore_button(driver: Hypervisor, instance_id: str) -> None:
        host.ignores_power_button.add(instance_id)

    return HypervisorEnv(
        new_driver=lambda: registry.hypervisor("fake", host=host),
        unreachable_driver=lambda: FakeHypervisor(FakeHost(), on_spawn=unreachable),
        make_disk=make_disk,
        defined=lambda: sorted(host.instances),
        make_guest_ignore_power_button=ignore_button,
        workdir=workdir,
        kernel=kernel,
        ramdisk=ramdisk,
        cmdline="console=ttyS0 root=/dev/vda",
    )


@pytest.fixture
def hv(tmp_path: Path) -> Iterator[HypervisorEnv]:
    env = fake_env(tmp_path)
    yield env
    env.cleanup()


# --- the contract ---------------------------------------------------------------------------------


def test_instance_lives_reboots_shuts_down_and_is_destroyed_twice(hv: HypervisorEnv) -> None:
    spec = hv.spec()
    hv.driver.spawn(spec)
    hv.wait_console(spec.instance_id)
    assert hv.driver.state(spec.instance_id) is PowerState.RUNNING
    assert spec.instance_id in hv.driver.list_instances()

    restarted = hv.new_driver()  # the Node Controller restarts and re-adopts what runs
    assert spec.instance_id in restarted.list_instances()
    assert restarted.describe(spec.instance_id) == spec
    assert restarted.state(spec.instance_id) is PowerState.RUNNING

    restarted.reboot(spec.instance_id)
    if hv.wait_console(spec.instance_id, count=2, timeout=20, must=False) < 0:
        # Right after READY the guest's acpid may not yet listen: ask again, as the NC would.
        restarted.reboot(spec.instance_id)
        hv.wait_console(spec.instance_id, count=2)
    assert restarted.state(spec.instance_id) is PowerState.RUNNING
    restarted.reboot(spec.instance_id, hard=True)
    hv.wait_console(spec.instance_id, count=3)

    assert restarted.shutdown(spec.instance_id, timeout=30) is True  # the guest powered off by itself
    assert restarted.state(spec.instance_id) is PowerState.SHUTOFF
    assert spec.instance_id in restarted.list_instances()  # still defined

    restarted.destroy(spec.instance_id)
    restarted.destroy(spec.instance_id)
    assert restarted.state(spec.instance_id) is None
    assert spec.instance_id not in restarted.list_instances()
    assert spec.instance_id not in hv.defined()
    assert restarted.console_output(spec.instance_id).count(READY) == 3  # readable after destroy


def test_spawn_is_idempotent_on_the_instance_id(hv: HypervisorEnv) -> None:
    spec = hv.spec()
    hv.driver.spawn(spec)
    hv.driver.spawn(spec)
    hv.new_driver().spawn(spec)

    assert hv.driver.list_instances().count(spec.instance_id) == 1
    assert hv.driver.state(spec.instance_id) is PowerState.RUNNING


def test_failed_spawn_leaves_nothing_defined(hv: HypervisorEnv) -> None:
    spec = hv.spec(kernel=hv.workdir / "no-such-vmlinux")

    with pytest.raises(SpawnFailed, match=spec.instance_id):
        hv.driver.spawn(spec)

    assert hv.driver.state(spec.instance_id) is None
    assert spec.instance_id not in hv.driver.list_instances()
    assert spec.instance_id not in hv.defined()
    hv.driver.destroy(spec.instance_id)


def test_memory_below_minimum_is_refused_before_the_hypervisor_is_called(hv: HypervisorEnv) -> None:
    spec = hv.spec(memory_mib=MIN_MEMORY_MIB - 16)

    with pytest.raises(InvalidSpec, match=f"minimum of {MIN_MEMORY_MIB} MiB"):
        hv.unreachable_driver().spawn(spec)
    with pytest.raises(InvalidSpec, match="minimum"):
        hv.driver.spawn(spec)
    assert spec.instance_id not in hv.defined()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"instance_id": "vm-1"}, "not of the form"),
        ({"vcpus": 0}, "vCPU"),
        ({"kernel": None, "ramdisk": None, "disks": ()}, "nothing to boot"),
        ({"disks": (DiskSpec("sda", Path("/x")),)}, "vda..vdz"),
        ({"disks": (DiskSpec("vda", Path("/x"), format="vmdk"),)}, "format"),
        ({"disks": (DiskSpec("vda"),)}, "exactly one"),
        ({"nics": (NicSpec("d0:0d:00:00:00:01", "br0", "vnet7"),)}, "tap name"),
        ({"nics": (NicSpec("D0-0D", "br0"),)}, "MAC"),
    ],
)
def test_impossible_specs_are_refused_with_a_clear_error(
    hv: HypervisorEnv, changes: dict[str, object], message: str
) -> None:
    spec = hv.spec(**changes)

    with pytest.raises(InvalidSpec, match=message):
        hv.unreachable_driver().spawn(spec)


def test_unknown_instances(hv: HypervisorEnv) -> None:
    unknown = "i-00000000deadbeef"

    hv.driver.destroy(unknown)
    assert hv.driver.state(unknown) is None
    assert hv.driver.describe(unknown) is None
    for call in (
        lambda: hv.driver.console_output(unknown),
        lambda: hv.driver.reboot(unknown),
        lambda: hv.driver.shutdown(unknown, timeout=1),
        lambda: hv.driver.detach_disk(unknown, "vdb"),
    ):
        with pytest.raises(InstanceNotFound):
            call()


def test_shutdown_forces_off_a_guest_that_ignores_the_button_and_spawn_starts_it_again(
    hv: HypervisorEnv,
) -> None:
    spec = hv.spec()
    hv.driver.spawn(spec)
    hv.make_guest_ignore_power_button(hv.driver, spec.instance_id)

    assert hv.driver.shutdown(spec.instance_id, timeout=0.5) is False
    assert hv.driver.state(spec.instance_id) is PowerState.SHUTOFF

    hv.driver.spawn(spec)  # a defined, stopped instance is started again
    assert hv.driver.state(spec.instance_id) is PowerState.RUNNING


def test_disks_attach_and_detach_idempotently(hv: HypervisorEnv) -> None:
    spec = hv.spec()
    hv.driver.spawn(spec)
    hv.wait_console(spec.instance_id)  # hot-unplug needs a guest that answers
    volume = DiskSpec("vdb", hv.make_disk(hv.workdir / spec.instance_id / "vol.qcow2"), serial="vol-0123abcd")

    if not hv.driver.capabilities.get("live_disk_attach"):
        pytest.skip("the driver cannot attach disks to running instances")
    hv.driver.attach_disk(spec.instance_id, volume)
    hv.driver.attach_disk(spec.instance_id, volume)
    described = hv.new_driver().describe(spec.instance_id)
    assert described is not None and described.disks == (*spec.disks, volume)
    with pytest.raises(HypervisorError, match="vdb"):
        hv.driver.attach_disk(spec.instance_id, replace(volume, serial="vol-another"))

    hv.driver.detach_disk(spec.instance_id, "vdb")
    hv.driver.detach_disk(spec.instance_id, "vdb")
    assert hv.driver.describe(spec.instance_id) == spec
    assert hv.driver.state(spec.instance_id) is PowerState.RUNNING


def test_host_resources_and_capabilities(hv: HypervisorEnv) -> None:
    resources = hv.driver.host_resources()

    assert resources.cores >= 1 and resources.memory_mib > 0 and resources.disk_gib >= 0
    assert {"accelerator", "live_disk_attach", "console_log"} <= set(hv.driver.capabilities)
