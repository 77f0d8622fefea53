"""The hypervisor driver contract: what the Node Controller asks of the thing that runs its VMs.

Contract for every implementation (checked by tests/unit/drivers/test_hypervisor_contract.py, against
the fake always and against libvirt in tests/e2e/test_libvirt_driver.py):
- Instances are named by the caller's id (`i-` + hex); every operation is safe to retry.
- `spawn` is idempotent on the id: an id that already runs is a no-op. A spec that cannot work (memory
  under MIN_MEMORY_MIB, no vCPU, a bad id or disk) raises InvalidSpec before the hypervisor is touched.
  Any other failure raises SpawnFailed *after* removing everything spawn created (no domain stays
  defined); files named in the spec belong to the caller and are never removed.
- `destroy` stops the instance at once and forgets its definition; an id that is already gone is
  success. It leaves disks and the console log to the caller.
- `shutdown` presses the ACPI power button and destroys the instance if it is not off after `timeout`.
- `state` is None for an unknown id; `list_instances` returns only instances this driver manages, so a
  restarted Node Controller can re-adopt them, and `describe` gives back the spec they were spawned with.
- `console_output` returns the serial console so far; it stays readable after destroy.
- Operations other than spawn/destroy/state/describe/console_output raise InstanceNotFound for an
  unknown id.
"""

from __future__ import annotations

import abc
import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

MIN_MEMORY_MIB = 96  # 80 MiB panics the tiny guest, 64 MiB hangs it (shared/notes/vm-host-facts.md)
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
DISK_TARGET = re.compile(r"^vd[a-z]$")
TAP_NAME = re.compile(r"^(?!vnet|macvtap)[A-Za-z0-9_-]{1,15}$")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
DISK_FORMATS = ("qcow2", "raw")
# Instance UUIDs are derived from the id so that a retried spawn or a re-adoption names the same VM.
_UUID_NAMESPACE = uuid.UUID("6d616c6c-6565-4e00-8000-696e7374616e")


class HypervisorError(Exception):
    """Anything a hypervisor driver raises on purpose; the message says what to do about it."""


class InvalidSpec(HypervisorError):
    """The instance spec cannot work; nothing was created."""


class SpawnFailed(HypervisorError):
    """The hypervisor refused to create or start the instance; what spawn created is already removed."""


class InstanceNotFound(HypervisorError):
    """No instance managed by this driver has that id."""


class NotSupported(HypervisorError):
    """This driver cannot do that operation (see its `capabilities`)."""


class PowerState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"  # suspended by the hypervisor (also: stopped on an I/O error)
    SHUTTING_DOWN = "shutting-down"
    SHUTOFF = "shutoff"  # defined but not running
    CRASHED = "crashed"
    STARTING = "starting"  # being created, or another state the hypervisor has no better name for


@dataclass(frozen=True)
class DiskSpec:
    """One virtio disk: a local image file, or a volume exported over NBD (on a unix socket of
    this host, or at a host and port)."""

    target: str  # guest device name: vda, vdb, ...
    path: Path | None = None  # image file (qcow2 overlay or raw)
    format: str = "qcow2"
    read_only: bool = False
    serial: str | None = None  # the volume id (vol-...): the guest sees it in /dev/disk/by-id
    nbd_socket: Path | None = None  # qemu-storage-daemon export: the socket and the export name
    nbd_export: str | None = None
    nbd_host: str | None = None  # or its host and port over TCP
    nbd_port: int = 0
    bus: str = "virtio"


@dataclass(frozen=True)
class NicSpec:
    """One virtio network interface on a host bridge."""

    mac: str
    bridge: str
    device: str | None = None  # the host tap's name (for per-tap filtering); None lets libvirt pick


@dataclass(frozen=True)
class Smbios:
    """How the machine describes itself in its firmware tables (SMBIOS; /sys/class/dmi/id in a Linux
    guest). The system uuid is always the instance's own: libvirt refuses a domain whose two differ."""

    manufacturer: str  # of the system, base board and chassis (sys_vendor, board_vendor, ...)
    product: str  # the system's product name (product_name)
    serial: str  # the system's serial number (product_serial)
    bios_vendor: str = ""
    bios_version: str = ""
    board_asset_tag: str = ""
    chassis_asset_tag: str = ""


@dataclass(frozen=True)
class InstanceSpec:
    """Everything the hypervisor needs to run one instance."""

    instance_id: str
    vcpus: int
    memory_mib: int
    console_log: Path
    kernel: Path | None = None  # direct kernel boot; None boots from the first disk
    ramdisk: Path | None = None
    cmdline: str = ""
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    uuid: str = field(default="")  # derived from instance_id when empty
    smbios: Smbios | None = None  # None: the hypervisor's own SMBIOS (QEMU's)

    def __post_init__(self) -> None:
        if not self.uuid:
            object.__setattr__(self, "uuid", instance_uuid(self.instance_id))


@dataclass(frozen=True)
class HostResources:
    """What the host can give to instances."""

    cores: int
    memory_mib: int
    disk_gib: int


def instance_uuid(instance_id: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, instance_id))


def validate_spec(spec: InstanceSpec) -> None:
    """Raise InvalidSpec naming the first thing in `spec` that cannot work."""
    if not INSTANCE_ID.match(spec.instance_id):
        raise InvalidSpec(f"instance id {spec.instance_id!r} is not of the form i-<8 to 17 hex digits>")
    if spec.memory_mib < MIN_MEMORY_MIB:
        raise InvalidSpec(
            f"instance {spec.instance_id}: {spec.memory_mib} MiB of memory is below the minimum of"
            f" {MIN_MEMORY_MIB} MiB (smaller guests panic or hang at boot)"
        )
    if spec.vcpus < 1:
        raise InvalidSpec(f"instance {spec.instance_id}: needs at least one vCPU, not {spec.vcpus}")
    if spec.ramdisk is not None and spec.kernel is None:
        raise InvalidSpec(f"instance {spec.instance_id}: a ramdisk needs a kernel")
    if spec.kernel is None and not spec.disks:
        raise InvalidSpec(f"instance {spec.instance_id}: nothing to boot (no kernel and no disk)")
    targets = [disk.target for disk in spec.disks]
    if len(set(targets)) != len(targets):
        raise InvalidSpec(f"instance {spec.instance_id}: disk targets repeat: {', '.join(targets)}")
    for disk in spec.disks:
        validate_disk(spec.instance_id, disk)
    for nic in spec.nics:
        if not MAC.match(nic.mac):
            raise InvalidSpec(f"instance {spec.instance_id}: MAC {nic.mac!r} is not aa:bb:cc:dd:ee:ff")
        if not nic.bridge:
            raise InvalidSpec(f"instance {spec.instance_id}: NIC {nic.mac} names no bridge")
        if nic.device is not None and not TAP_NAME.match(nic.device):
            raise InvalidSpec(
                f"instance {spec.instance_id}: tap name {nic.device!r} must be 1-15 letters, digits,"
                " '-' or '_', and not start with vnet or macvtap (libvirt's own names)"
            )


def validate_disk(instance_id: str, disk: DiskSpec) -> None:
    """Raise InvalidSpec when one disk cannot work."""
    where = f"instance {instance_id}, disk {disk.target}"
    if not DISK_TARGET.match(disk.target):
        raise InvalidSpec(f"{where}: the target must be vda..vdz")
    if disk.bus != "virtio":
        raise InvalidSpec(f"{where}: only the virtio bus is supported, not {disk.bus!r}")
    if disk.format not in DISK_FORMATS:
        raise InvalidSpec(f"{where}: format {disk.format!r} is not one of {', '.join(DISK_FORMATS)}")
    sources = [disk.path is not None, disk.nbd_socket is not None, disk.nbd_host is not None]
    if sum(sources) != 1:
        raise InvalidSpec(f"{where}: give exactly one of a file path, an NBD socket or an NBD host")
    if (disk.nbd_socket is not None or disk.nbd_host is not None) and not disk.nbd_export:
        raise InvalidSpec(f"{where}: an NBD disk needs the export name")
    if disk.nbd_host is not None and not 0 < disk.nbd_port < 65536:
        raise InvalidSpec(f"{where}: an NBD host needs its port")


def without_disk(spec: InstanceSpec, target: str) -> InstanceSpec:
    return replace(spec, disks=tuple(disk for disk in spec.disks if disk.target != target))


class Hypervisor(abc.ABC):
    """Runs the instances of one host. See the module docstring for the rules every driver keeps."""

    # "accelerator": "kvm" | "qemu" | "fake"; "live_disk_attach": bool; "console_log": bool
    capabilities: Mapping[str, str | bool] = {}

    @abc.abstractmethod
    def host_resources(self) -> HostResources:
        """Cores, memory (MiB) and disk (GiB) the host has for instances."""

    @abc.abstractmethod
    def spawn(self, spec: InstanceSpec) -> None:
        """Create and start the instance. No-op when it already runs; a stopped instance of that id is
        started again from its stored definition when the spec is the same, else redefined."""

    @abc.abstractmethod
    def destroy(self, instance_id: str) -> None:
        """Stop the instance at once and remove its definition. Succeeds when it is already gone.
        Leaves the files (disks, console log) to the caller."""

    @abc.abstractmethod
    def shutdown(self, instance_id: str, timeout: float) -> bool:
        """Press the ACPI power button and wait up to `timeout` s for the guest to power off; then
        force it off. The definition stays. True when the guest shut down by itself."""

    @abc.abstractmethod
    def reboot(self, instance_id: str, hard: bool = False) -> None:
        """Ask the guest to reboot (ACPI power button) and return; the instance keeps running. A guest
        that is not listening (still starting its ACPI daemon, or hung) misses the request: as EC2
        does, the caller asks again or reboots with `hard=True` (a reset, like the reset button)."""

    @abc.abstractmethod
    def state(self, instance_id: str) -> PowerState | None:
        """The power state, or None when no managed instance has that id."""

    @abc.abstractmethod
    def list_instances(self) -> list[str]:
        """Ids of every instance this driver manages (running or not), sorted."""

    @abc.abstractmethod
    def describe(self, instance_id: str) -> InstanceSpec | None:
        """The spec the instance was spawned with (plus attached disks), or None when unknown."""

    @abc.abstractmethod
    def console_output(self, instance_id: str) -> bytes:
        """The serial console output so far, also after destroy. InstanceNotFound if never seen."""

    @abc.abstractmethod
    def attach_disk(self, instance_id: str, disk: DiskSpec) -> None:
        """Hot-plug a disk into a running instance (kept across reboots). Attaching the same disk at
        the same target again is a no-op; another disk at a used target raises HypervisorError."""

    @abc.abstractmethod
    def detach_disk(self, instance_id: str, target: str) -> None:
        """Hot-unplug the disk at `target`; succeeds when nothing is attached there."""
