"""The libvirt hypervisor driver: instances as QEMU domains (KVM where it is fast, else TCG).

Domain XML is built in domain_xml.py; this module only talks to libvirt. Files named in a spec
(kernel, ramdisk, disks and their backing files) must be reachable by the qemu user (libvirt-qemu on
Debian), so keep them outside directories like /root; console logs are written by virtlogd as root.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt

from mallee.drivers.hypervisor import domain_xml
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
from mallee.drivers.hypervisor.domain_xml import DomainOptions
from mallee.drivers.hypervisor.probe import choose_accelerator

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.STARTING,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,  # running, waiting on a resource
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
}
_GONE = (libvirt.VIR_ERR_NO_DOMAIN,)
# libvirt prints every error to stderr by default, even those we expect ("Domain not found" on a
# destroy that is already done); each error still raises, with its message, where it happened.
libvirt.registerErrorHandler(lambda _context, _error: None, None)
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
_POWER_BUTTON_REPEAT_SECONDS = 5.0  # a press during early boot (before acpid runs) is lost: press again
_DETACH_TIMEOUT_SECONDS = 20.0


class LibvirtHypervisor(Hypervisor):
    """Instances as libvirt domains named by instance id and marked with our metadata namespace."""

    def __init__(
        self,
        uri: str = "qemu:///system",
        domain_type: str | None = None,
        *,
        options: DomainOptions | None = None,
        instances_dir: Path = Path("/var/lib/mallee/instances"),
        reserved_memory_mib: int = 512,
    ) -> None:
        reason = "chosen by configuration"
        if options is None:
            if domain_type is None:
                choice = choose_accelerator()
                domain_type, reason = choice.domain_type, choice.reason
            options = DomainOptions(domain_type=domain_type)
        self.uri = uri
        self.options = options
        self.instances_dir = instances_dir
        self.reserved_memory_mib = reserved_memory_mib
        self.capabilities = {
            "accelerator": options.domain_type,
            "accelerator_reason": reason,
            "live_disk_attach": True,
            "console_log": True,
        }
        self.last_spawn_seconds: float | None = None  # define + start of the last domain spawned
        self._connection: Any = None
        self._lock = threading.Lock()
        self._instance_locks: dict[str, threading.Lock] = {}
        self._consoles: dict[str, Path] = {}  # console logs of instances seen, kept after destroy

    # --- the contract -----------------------------------------------------------------------------

    def host_resources(self) -> HostResources:
        info = self._conn().getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
        directory = self.instances_dir
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        free_gib = shutil.disk_usage(directory).free // (1 << 30)
        return HostResources(int(info[2]), max(0, int(info[1]) - self.reserved_memory_mib), int(free_gib))

    def spawn(self, spec: InstanceSpec) -> None:
        validate_spec(spec)
        with self._instance_lock(spec.instance_id):
            existing = self._lookup_any(spec.instance_id)
            if existing is not None:
                if domain_xml.spec_from_domain(existing.XMLDesc(0)) is None:
                    raise SpawnFailed(
                        f"instance {spec.instance_id}: a domain of that name exists that Mallee does not"
                        " manage; remove it or choose another id"
                    )
                if existing.isActive():
                    self._consoles[spec.instance_id] = spec.console_log
                    return
                if existing.UUIDString() != spec.uuid:  # libvirt keeps a name's uuid: undefine first
                    self._remove(existing)
            self._consoles[spec.instance_id] = spec.console_log
            started = time.monotonic()
            domain = self._define(spec)
            try:
                domain.create()
            except BaseException as error:
                self._remove(domain)
                if isinstance(error, libvirt.libvirtError):
                    raise SpawnFailed(
                        f"instance {spec.instance_id}: libvirt could not start the domain (removed it"
                        f" again): {error.get_error_message()}"
                    ) from error
                raise
            self.last_spawn_seconds = time.monotonic() - started

    def destroy(self, instance_id: str) -> None:
        with self._instance_lock(instance_id):
            domain = self._lookup(instance_id)
            if domain is not None:
                self._remove(domain)

    def shutdown(self, instance_id: str, timeout: float) -> bool:
        domain = self._require(instance_id)
        deadline = time.monotonic() + timeout
        while self._is_active(domain):
            with _ignoring_gone():
                domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            press_again = min(deadline, time.monotonic() + _POWER_BUTTON_REPEAT_SECONDS)
            while self._is_active(domain) and time.monotonic() < press_again:
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                break
        if not self._is_active(domain):
            return True
        with _ignoring_gone():
            domain.destroy()
        return False

    def reboot(self, instance_id: str, hard: bool = False) -> None:
        domain = self._require(instance_id)
        try:
            if hard:
                domain.reset(0)
            else:
                domain.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        except libvirt.libvirtError as error:
            message = error.get_error_message()
            raise HypervisorError(f"instance {instance_id}: reboot failed: {message}") from error

    def state(self, instance_id: str) -> PowerState | None:
        domain = self._lookup(instance_id)
        if domain is None:
            return None
        try:
            code, reason = domain.state()
        except libvirt.libvirtError as error:
            if error.get_error_code() in _GONE:
                return None
            raise
        if code == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            return PowerState.CRASHED  # on_crash=destroy turns a crash into shutoff/crashed
        return _STATES.get(code, PowerState.STARTING)

    def list_instances(self) -> list[str]:
        found = []
        for domain in self._conn().listAllDomains(0):
            with _ignoring_gone():
                spec = domain_xml.spec_from_domain(domain.XMLDesc(0))
                if spec is not None:
                    self._consoles.setdefault(spec.instance_id, spec.console_log)
                    found.append(spec.instance_id)
        return sorted(found)

    def describe(self, instance_id: str) -> InstanceSpec | None:
        domain = self._lookup(instance_id)
        return None if domain is None else self._spec(domain)

    def console_output(self, instance_id: str) -> bytes:
        log = self._consoles.get(instance_id)
        if log is None:
            spec = self.describe(instance_id)
            if spec is None:
                raise InstanceNotFound(f"instance {instance_id} is unknown to this node")
            log = self._consoles[instance_id] = spec.console_log
        try:
            return log.read_bytes()
        except FileNotFoundError:
            return b""

    def attach_disk(self, instance_id: str, disk: DiskSpec) -> None:
        validate_disk(instance_id, disk)
        with self._instance_lock(instance_id):
            domain = self._require(instance_id)
            spec = self._spec(domain)
            present = next((d for d in spec.disks if d.target == disk.target), None)
            if present == disk:
                return
            if present is not None:
                raise HypervisorError(f"instance {instance_id}: {disk.target} already holds another disk")
            flags = self._affect(domain)
            try:
                domain.attachDeviceFlags(domain_xml.disk_xml(disk), flags)
            except libvirt.libvirtError as error:
                raise HypervisorError(
                    f"instance {instance_id}: attaching {disk.target} failed: {error.get_error_message()}"
                ) from error
            try:
                self._store_spec(domain, replace(spec, disks=(*spec.disks, disk)), flags)
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    domain.detachDeviceFlags(domain_xml.disk_xml(disk), flags)
                raise

    def detach_disk(self, instance_id: str, target: str) -> None:
        with self._instance_lock(instance_id):
            domain = self._require(instance_id)
            spec = self._spec(domain)
            disk = next((d for d in spec.disks if d.target == target), None)
            if disk is None:
                return
            flags = self._affect(domain)
            try:
                domain.detachDeviceFlags(domain_xml.disk_xml(disk), flags)
            except libvirt.libvirtError as error:
                raise HypervisorError(
                    f"instance {instance_id}: detaching {target} failed: {error.get_error_message()}"
                ) from error
            if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
                self._wait_disk_gone(domain, instance_id, target)
            self._store_spec(domain, without_disk(spec, target), flags)

    # --- helpers ----------------------------------------------------------------------------------

    def _conn(self) -> Any:
        with self._lock:
            if self._connection is None or not self._connection.isAlive():
                try:
                    self._connection = libvirt.open(self.uri)
                except libvirt.libvirtError as error:
                    raise HypervisorError(
                        f"cannot connect to libvirt at {self.uri} (is libvirtd running?):"
                        f" {error.get_error_message()}"
                    ) from error
            return self._connection

    @contextlib.contextmanager
    def _instance_lock(self, instance_id: str) -> Iterator[None]:
        with self._lock:
            lock = self._instance_locks.setdefault(instance_id, threading.Lock())
        with lock:
            yield

    def _define(self, spec: InstanceSpec) -> Any:
        try:
            return self._conn().defineXML(domain_xml.domain_xml(spec, self.options))
        except libvirt.libvirtError as error:
            raise SpawnFailed(
                f"instance {spec.instance_id}: libvirt refused the domain definition:"
                f" {error.get_error_message()}"
            ) from error

    def _remove(self, domain: Any) -> None:
        """Stop the domain if it runs and undefine it; a domain that vanishes meanwhile is fine."""
        for attempt in range(3):
            try:
                if domain.isActive():
                    domain.destroy()
                break
            except libvirt.libvirtError as error:
                if error.get_error_code() in _GONE:
                    return
                if attempt == 2 or error.get_error_code() != libvirt.VIR_ERR_SYSTEM_ERROR:
                    raise HypervisorError(f"destroying {domain.name()} failed: {error}") from error
                time.sleep(0.5)  # "Failed to terminate process ... Device or resource busy": retry
        with _ignoring_gone():
            domain.undefineFlags(_UNDEFINE_FLAGS)

    def _lookup_any(self, instance_id: str) -> Any:
        try:
            return self._conn().lookupByName(instance_id)
        except libvirt.libvirtError as error:
            if error.get_error_code() in _GONE:
                return None
            raise

    def _lookup(self, instance_id: str) -> Any:
        """The domain of a managed instance, or None (a domain without our metadata is not ours)."""
        domain = self._lookup_any(instance_id)
        if domain is None:
            return None
        try:
            spec = domain_xml.spec_from_domain(domain.XMLDesc(0))
        except libvirt.libvirtError as error:
            if error.get_error_code() in _GONE:
                return None
            raise
        if spec is None:
            return None
        self._consoles.setdefault(instance_id, spec.console_log)
        return domain

    def _require(self, instance_id: str) -> Any:
        domain = self._lookup(instance_id)
        if domain is None:
            raise InstanceNotFound(f"instance {instance_id} is not running on this node")
        return domain

    def _spec(self, domain: Any) -> InstanceSpec:
        spec = domain_xml.spec_from_domain(domain.XMLDesc(0))
        if spec is None:
            raise InstanceNotFound(f"domain {domain.name()} lost its Mallee metadata")
        return spec

    def _store_spec(self, domain: Any, spec: InstanceSpec, flags: int) -> None:
        domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            domain_xml.metadata_xml(spec),
            domain_xml.PREFIX,
            domain_xml.NAMESPACE,
            flags,
        )

    def _affect(self, domain: Any) -> int:
        flags: int = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if self._is_active(domain):
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        return flags

    def _is_active(self, domain: Any) -> bool:
        try:
            return bool(domain.isActive())
        except libvirt.libvirtError as error:
            if error.get_error_code() in _GONE:
                return False
            raise

    def _wait_disk_gone(self, domain: Any, instance_id: str, target: str) -> None:
        """Live detach is a request the guest acknowledges: wait until the device is gone."""
        deadline = time.monotonic() + _DETACH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if f"<target dev='{target}'" not in domain.XMLDesc(0):
                return
            time.sleep(0.1)
        raise HypervisorError(f"instance {instance_id}: the guest did not release {target} in time")


@contextlib.contextmanager
def _ignoring_gone() -> Iterator[None]:
    """Let an operation on a domain that disappeared meanwhile pass silently."""
    try:
        yield
    except libvirt.libvirtError as error:
        if error.get_error_code() not in _GONE:
            raise
