"""An in-memory hypervisor that keeps the same contract as the real one: for unit tests and for
simulating many nodes in control-plane scale tests (select it as `hypervisor("fake")`).

Instances live in a FakeHost; two drivers given the same host see the same instances, which is how
tests simulate a Node Controller restarting and re-adopting its VMs. With a `state_file` the host is
kept on disk, so its "VMs" outlive a killed node controller process as real ones would (the crash
tests need that). Like libvirt, spawn fails (and leaves nothing) when the kernel, ramdisk or a disk
file does not exist. A simulated node gives it its capacity (`resources`) and the time a start takes
(`boot_delay`: spawn returns after it, the instance `starting` meanwhile, as libvirt's define+start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from mallee.core.files import write_atomically
from mallee.drivers.hypervisor.base import (
    DiskSpec,
    HostResources,
    Hypervisor,
    HypervisorError,
    InstanceNotFound,
    InstanceSpec,
    PowerState,
    SpawnFailed,
    validate_disk,
    validate_spec,
    without_disk,
)

READY = b"MALLEE-READY instance-id=unknown\n"  # what the tiny guest prints once it has booted


@dataclass
class FakeInstance:
    spec: InstanceSpec
    state: PowerState = PowerState.RUNNING
    boots: int = 1


@dataclass
class FakeHost:
    """The "machine" fake drivers share: its resources, its instances and their consoles."""

    resources: HostResources = field(default_factory=lambda: HostResources(4, 8192, 100))
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    consoles: dict[str, bytearray] = field(default_factory=dict)  # kept after destroy, like log files
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Tests may make the guest ignore the power button (a hung guest): shutdown then forces it off.
    ignores_power_button: set[str] = field(default_factory=set)


class FakeHypervisor(Hypervisor):
    def __init__(
        self,
        host: FakeHost | None = None,
        *,
        check_files: bool = True,
        on_spawn: Callable[[InstanceSpec], None] | None = None,
        state_file: Path | None = None,
        resources: HostResources | None = None,
        boot_delay: float = 0.0,
    ) -> None:
        self.state_file = state_file
        self.host = host or _load(state_file)
        if resources is not None:
            self.host.resources = resources
        self.boot_delay = boot_delay
        self.check_files = check_files  # scale tests spawn thousands with made-up paths: turn it off
        self.on_spawn = on_spawn  # called before "starting"; may raise to simulate a failure
        self.capabilities = {"accelerator": "fake", "live_disk_attach": True, "console_log": True}

    def host_resources(self) -> HostResources:
        return self.host.resources

    def spawn(self, spec: InstanceSpec) -> None:
        validate_spec(spec)
        with self.host.lock:
            present = self.host.instances.get(spec.instance_id)
            if present is not None and present.state is not PowerState.SHUTOFF:
                return
            self._check_files(spec)
            if self.on_spawn is not None:
                try:
                    self.on_spawn(spec)
                except HypervisorError:
                    raise
                except Exception as error:
                    self.host.instances.pop(spec.instance_id, None)
                    raise SpawnFailed(f"instance {spec.instance_id}: {error}") from error
            booting = self.boot_delay > 0
            instance = FakeInstance(spec, PowerState.STARTING if booting else PowerState.RUNNING)
            self.host.instances[spec.instance_id] = instance
            console = self.host.consoles.setdefault(spec.instance_id, bytearray())
            console[:] = f"fake boot of {spec.instance_id}\n".encode()
            if not booting:
                console += READY
            self._save()
        if booting:
            self._boot(instance)

    def _boot(self, instance: FakeInstance) -> None:
        """Wait out the start (without the host's lock: other instances start meanwhile); an
        instance destroyed in between stays gone."""
        time.sleep(self.boot_delay)
        instance_id = instance.spec.instance_id
        with self.host.lock:
            if self.host.instances.get(instance_id) is instance and instance.state is PowerState.STARTING:
                instance.state = PowerState.RUNNING
                self.host.consoles[instance_id] += READY
                self._save()

    def destroy(self, instance_id: str) -> None:
        with self.host.lock:
            self.host.instances.pop(instance_id, None)
            self._save()

    def shutdown(self, instance_id: str, timeout: float) -> bool:
        with self.host.lock:
            instance = self._require(instance_id)
            instance.state = PowerState.SHUTOFF
            self._save()
            return instance_id not in self.host.ignores_power_button

    def reboot(self, instance_id: str, hard: bool = False) -> None:
        with self.host.lock:
            instance = self._require(instance_id)
            if instance.state is not PowerState.RUNNING:
                raise HypervisorError(f"instance {instance_id}: cannot reboot while {instance.state.value}")
            instance.boots += 1
            self.host.consoles[instance_id] += READY

    def state(self, instance_id: str) -> PowerState | None:
        instance = self.host.instances.get(instance_id)
        return None if instance is None else instance.state

    def list_instances(self) -> list[str]:
        with self.host.lock:
            return sorted(self.host.instances)

    def describe(self, instance_id: str) -> InstanceSpec | None:
        instance = self.host.instances.get(instance_id)
        return None if instance is None else instance.spec

    def console_output(self, instance_id: str) -> bytes:
        with self.host.lock:
            if instance_id not in self.host.consoles:
                raise InstanceNotFound(f"instance {instance_id} is unknown to this node")
            return bytes(self.host.consoles[instance_id])

    def attach_disk(self, instance_id: str, disk: DiskSpec) -> None:
        validate_disk(instance_id, disk)
        with self.host.lock:
            instance = self._require(instance_id)
            present = next((d for d in instance.spec.disks if d.target == disk.target), None)
            if present == disk:
                return
            if present is not None:
                raise HypervisorError(f"instance {instance_id}: {disk.target} already holds another disk")
            if self.check_files and disk.path is not None and not disk.path.exists():
                raise HypervisorError(f"instance {instance_id}: disk file {disk.path} does not exist")
            instance.spec = replace(instance.spec, disks=(*instance.spec.disks, disk))
            self._save()

    def detach_disk(self, instance_id: str, target: str) -> None:
        with self.host.lock:
            instance = self._require(instance_id)
            instance.spec = without_disk(instance.spec, target)
            self._save()

    def _save(self) -> None:
        """Keep the host on disk (with `state_file`); called with the host's lock held."""
        if self.state_file is None:
            return
        saved = {i: (f.spec, f.state.value, f.boots) for i, f in self.host.instances.items()}
        write_atomically(self.state_file, msgspec.json.encode(saved, enc_hook=str))

    def _require(self, instance_id: str) -> FakeInstance:
        instance = self.host.instances.get(instance_id)
        if instance is None:
            raise InstanceNotFound(f"instance {instance_id} is not running on this node")
        return instance

    def _check_files(self, spec: InstanceSpec) -> None:
        if not self.check_files:
            return
        files = [spec.kernel, spec.ramdisk, *(disk.path for disk in spec.disks)]
        for path in files:
            if path is not None and not path.exists():
                raise SpawnFailed(f"instance {spec.instance_id}: cannot open {path}: no such file")


def _load(state_file: Path | None) -> FakeHost:
    host = FakeHost()
    if state_file is None or not state_file.exists():
        return host
    saved = msgspec.json.decode(
        state_file.read_bytes(), type=dict[str, tuple[InstanceSpec, str, int]], dec_hook=_path
    )
    for instance_id, (spec, state, boots) in saved.items():
        host.instances[instance_id] = FakeInstance(spec, PowerState(state), boots)
        host.consoles[instance_id] = bytearray(f"fake boot of {instance_id}\n".encode())
    return host


def _path(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError(kind)
