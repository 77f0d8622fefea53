"""The instances of one node: launch (fetch images → disks → wait for the network → spawn),
terminate, report.

The hypervisor is the truth for what runs; each instance's launch is kept on disk before anything
is done for it, so a restarted node controller re-adopts its running domains (and finishes or
undoes what a crash interrupted). Work happens in a background thread per instance; `describe()`
reports the AWS-style state the CC and CLC reconcile against, and `on_change` is told as soon as an
instance starts running or is gone, so the change can be pushed up at once.

An instance's network interface comes with the node's network (`apply_network`), not with its
launch: a launch prepares its disks, then waits, pending, until the applied network has its
interface, and only then starts the VM with its NIC on the VPC's bridge. A terminate ends the wait.
An EBS-backed launch (its root and other volumes in `block_devices`) also waits for each volume's
export (`attach_volume` while pending, reported as `awaiting` until then) and starts the VM with
them plugged in. Stopping one (`stop`) shuts the VM down and forgets the instance here: its volumes
stay on the SC, and it may start on another node.
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec

from mallee.core import crashpoints
from mallee.core.files import write_atomically
from mallee.drivers.hypervisor import base as hv
from mallee.drivers.network.vpc_contract import vpc_bridge
from mallee.rpc.node import (
    FINAL_STATES,
    AttachVolume,
    DetachVolume,
    InstanceLaunch,
    InstanceState,
    NodeInstance,
    Resources,
)
from mallee.rpc.storage import VolumeExport
from mallee.services.node import volumes
from mallee.services.node.imagecache import ImageCache, ImageSource, disk_format
from mallee.services.node.teardown import is_ours

log = logging.getLogger(__name__)

LAUNCH_FILE = "launch.json"
TERMINATING_FILE = "terminating"  # written before a terminate starts, so a crash cannot undo it
STOPPING_FILE = "stopping"  # likewise for a stop
_MARKERS: dict[InstanceState, str] = {"shutting-down": TERMINATING_FILE, "stopping": STOPPING_FILE}
STOP_TIMEOUT = 30.0  # seconds a guest has to power off after the ACPI button before it is cut off
INSTANCE_SHUTDOWN = "Client.InstanceInitiatedShutdown: Instance initiated shutdown"
EC2_VENDOR = "Amazon EC2"


class LaunchRefused(ValueError):
    """A launch this node cannot take (it names no VPC interface)."""


def tap_name(instance_id: str) -> str:
    """The instance's bridge port: stable, unique per instance, within Linux's 15 characters."""
    return "vn" + instance_id.split("-", 1)[1][-12:]


def with_ec2_smbios(spec: hv.InstanceSpec, instance_type: str) -> hv.InstanceSpec:
    """The spec with the firmware identity of an EC2 Nitro instance, so that cloud-init takes the
    guest for one on AWS (and then asks the metadata service with IMDSv2 tokens).

    cloud-init (ds-identify's ec2_identify_platform, DataSourceEc2.identify_aws) decides "AWS" when
    the DMI system uuid and serial number both start with "ec2" and are equal; EC2 writes the uuid as
    "ec2" and random-looking digits, the instance id as the base board's asset tag, and the type as
    the product (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/identify_ec2_instances.html).
    """
    # The uuid stays derived from the instance id (a retried spawn or a re-adoption names the same
    # VM) with its first three hex digits made "ec2": 110 bits of the hash are left, as unique as
    # before in practice. libvirt wants the SMBIOS uuid to be the domain's, so the domain's uuid
    # changes with the option; that is safe because domains are found by name, never by uuid.
    uuid = "ec2" + hv.instance_uuid(spec.instance_id)[3:]
    smbios = hv.Smbios(
        manufacturer=EC2_VENDOR,
        product=instance_type,
        serial=uuid,
        bios_vendor=EC2_VENDOR,
        bios_version="1.0",
        board_asset_tag=spec.instance_id,
        chassis_asset_tag=EC2_VENDOR,
    )
    return replace(spec, uuid=uuid, smbios=smbios)


@dataclass
class Instance:
    id: str
    launch: InstanceLaunch | None  # None: a domain this node runs but has no launch for (an orphan)
    state: InstanceState = "pending"
    reason: str = ""
    needs: Resources = field(default_factory=Resources)
    images: list[str] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # volume id -> guest disk (volumes.py)
    exports: dict[str, VolumeExport] = field(default_factory=dict)  # a pending launch's block devices
    force_stop: bool = False

    @property
    def awaiting(self) -> list[str]:
        """The launch's block devices whose export this pending instance was not given yet."""
        if self.state != "pending" or self.launch is None:
            return []
        return [d.volume_id for d in self.launch.block_devices if d.volume_id not in self.exports]


class InstanceManager:
    def __init__(
        self,
        root: Path,
        hypervisor: hv.Hypervisor,
        cache: ImageCache,
        prefix: str,
        interface_applied: Callable[[str], bool],
        on_change: Callable[[str], None] = lambda _id: None,
        *,
        ec2_smbios: bool = False,
    ) -> None:
        """`prefix`: the node's VPC prefix (bridges are vpc_bridge(prefix, vni));
        `interface_applied(interface_id)`: whether the applied network has that interface;
        `ec2_smbios`: new instances' firmware says they run on EC2 (`with_ec2_smbios`)."""
        self.root = root
        self.hypervisor = hypervisor
        self.cache = cache
        self.prefix = prefix
        self.interface_applied = interface_applied
        self.on_change = on_change
        self.ec2_smbios = ec2_smbios
        self.instances: dict[str, Instance] = {}
        self.lock = threading.RLock()
        self.network_changed = threading.Condition(self.lock)  # launches wait on it
        self.root.mkdir(parents=True, exist_ok=True)

    # -- re-adoption ----------------------------------------------------------------------------

    def adopt(self) -> None:
        """After a restart (and after the saved network was applied again): running domains with a
        saved launch are ours again; a terminate that had begun is finished; a saved launch whose
        domain never started is launched again (the crash interrupted it); a domain without a saved
        launch is reported, so that the CLC, which knows no such instance, has it destroyed."""
        running = set(self.hypervisor.list_instances())
        for saved in sorted(self.root.glob(f"*/{LAUNCH_FILE}")):
            try:
                launch = msgspec.json.decode(saved.read_bytes(), type=InstanceLaunch)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("dropping unreadable launch %s: %s", saved, exc)
                shutil.rmtree(saved.parent, ignore_errors=True)
                continue
            instance = Instance(launch.instance_id, launch, needs=launch.needs)
            self.instances[instance.id] = instance
            ending = [state for state, marker in _MARKERS.items() if (saved.parent / marker).exists()]
            if ending:
                log.info(
                    "finishing the %s of %s", "stop" if ending[0] == "stopping" else "terminate", instance.id
                )
                instance.state = ending[0]
                self._end_in_background(instance)
            elif instance.id in running:
                instance.state = "running"
                instance.volumes = volumes.attached(self.hypervisor.describe(instance.id))
                log.info("re-adopted %s", instance.id)
            elif launch.interface is None:  # kept by a node of the EDGE network: cannot start now
                log.warning("%s was never started and names no VPC interface: dropping it", instance.id)
                instance.state, instance.reason = "terminated", "Server.InternalError: no network interface"
                self._cleanup(instance)
            else:
                log.info("launching %s again: its launch was interrupted", instance.id)
                self._start(instance)
        for instance_id in sorted(running - set(self.instances)):
            spec = self.hypervisor.describe(instance_id)
            if spec is None or not is_ours(spec.console_log, self.root):
                continue  # another node's (or cloud's) domain on this host: not ours to report
            needs = Resources(cores=spec.vcpus, memory_mib=spec.memory_mib)
            self.instances[instance_id] = Instance(instance_id, None, "running", needs=needs)
            log.warning("%s runs here without a launch: reporting it as an orphan", instance_id)

    # -- operations -----------------------------------------------------------------------------

    def run(self, launch: InstanceLaunch) -> None:
        """Keep the launch, then launch it in a thread of its own (idempotent on the instance id).
        Raises LaunchRefused for a launch without a VPC interface."""
        if launch.interface is None:
            raise LaunchRefused(f"{launch.instance_id}: a launch must name its VPC network interface")
        with self.lock:
            known = self.instances.get(launch.instance_id)
            if known is not None and known.state != "stopped":
                return  # idempotent: already launching or running
            # A stopped one not yet forgotten (reported once more) starts again here: a new launch.
            instance = Instance(launch.instance_id, launch, needs=launch.needs)
            self.instances[instance.id] = instance
            directory = self.root / instance.id
            directory.mkdir(parents=True, exist_ok=True)
            write_atomically(directory / LAUNCH_FILE, msgspec.json.encode(launch), fsync=True)
        crashpoints.reached("nc.launch.saved")
        self._start(instance)

    def _start(self, instance: Instance) -> None:
        threading.Thread(
            target=self._launch, args=(instance,), name=f"launch-{instance.id}", daemon=True
        ).start()

    def _launch(self, instance: Instance) -> None:
        assert instance.launch is not None
        directory = self.root / instance.id
        try:
            spec = self._prepare(instance, instance.launch, directory)
            spawned = self._wait_until_ready(instance)
            if spawned:
                self.hypervisor.spawn(self._with_volumes(spec, instance))
        except Exception as exc:
            log.exception("launch of %s failed", instance.id)
            with self.lock:
                instance.state, instance.reason = "terminated", f"Server.InternalError: {exc}"
            self._cleanup(instance)
            self.on_change(instance.id)
            return
        if spawned:
            crashpoints.reached("nc.launch.spawned")
        with self.lock:
            if instance.state == "pending":
                instance.state = "running"
                instance.volumes = {d.volume_id: d.target for d in instance.launch.block_devices}
            elif instance.state in _MARKERS:  # terminated or stopped while launching or waiting
                self._end_in_background(instance)
                return
        self.on_change(instance.id)

    def _wait_until_ready(self, instance: Instance) -> bool:
        """Wait, pending, until the applied network has the instance's interface and every block
        device's export came; False when the instance was terminated or stopped meanwhile."""
        assert instance.launch is not None and instance.launch.interface is not None
        interface_id = instance.launch.interface.interface_id

        def waiting() -> bool:
            return instance.state == "pending" and (
                not self.interface_applied(interface_id) or bool(instance.awaiting)
            )

        with self.network_changed:
            if waiting():
                log.info(
                    "%s waits for its interface %s and volumes %s",
                    instance.id,
                    interface_id,
                    instance.awaiting,
                )
            while waiting():
                self.network_changed.wait()
            return instance.state == "pending"

    def _with_volumes(self, spec: hv.InstanceSpec, instance: Instance) -> hv.InstanceSpec:
        """The spec with the launch's volumes plugged in at their targets (an EBS root as vda)."""
        assert instance.launch is not None
        disks = tuple(
            volumes.disk_for(instance.exports[d.volume_id], d.target) for d in instance.launch.block_devices
        )
        return replace(spec, disks=tuple(sorted(spec.disks + disks, key=lambda d: d.target)))

    def network_applied(self) -> None:
        """A network was applied: launches waiting for their interface look again."""
        with self.network_changed:
            self.network_changed.notify_all()

    def _prepare(self, instance: Instance, launch: InstanceLaunch, directory: Path) -> hv.InstanceSpec:
        image, itype = launch.image, launch.instance_type
        disks: tuple[hv.DiskSpec, ...] = ()
        if image.root is not None:  # instance store: a qcow2 overlay of the cached image
            root_src = self._cached(instance, image.root)
            root = directory / "root.qcow2"
            fmt = disk_format(image.root, root_src)
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(root_src), str(root)]
                + [f"{itype.disk_gib}G"],
                check=True,
                capture_output=True,
            )
            disks = (hv.DiskSpec(target="vda", path=root, format="qcow2"),)
        kernel = self._cached(instance, image.kernel) if image.kernel else None
        ramdisk = self._cached(instance, image.ramdisk) if image.ramdisk else None
        # With a kernel: direct boot, root on the whole disk. Without: the disk boots itself (HVM).
        cmdline = "console=ttyS0 root=/dev/vda" if kernel else ""
        spec = hv.InstanceSpec(
            instance_id=instance.id,
            vcpus=itype.cpus,
            memory_mib=itype.memory_mib,
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=cmdline,
            disks=disks,
            nics=(hv.NicSpec(mac=launch.mac, bridge=self._bridge(launch), device=tap_name(instance.id)),),
            console_log=directory / "console.log",
        )
        return with_ec2_smbios(spec, itype.name) if self.ec2_smbios else spec

    def _bridge(self, launch: InstanceLaunch) -> str:
        assert launch.interface is not None
        return vpc_bridge(self.prefix, launch.interface.vni)

    def _cached(self, instance: Instance, source: ImageSource) -> Path:
        path = self.cache.get(source)
        instance.images.append(source.key)
        return path

    def terminate(self, instance_id: str) -> None:
        with self.lock:
            instance = self.instances.get(instance_id)
            if instance is None or instance.state in ("shutting-down", "terminated"):
                return
            self._begin_ending(instance, "shutting-down")

    def _begin_ending(self, instance: Instance, state: InstanceState) -> None:
        """Under the lock: record (in memory and on disk) that the instance is to be terminated
        ("shutting-down") or stopped ("stopping"), then end it; a launch in progress ends itself
        when it finishes, and one waiting for its interface or volumes stops waiting."""
        launching = instance.state == "pending"
        instance.state = state
        directory = self.root / instance.id
        if directory.exists():
            (directory / _MARKERS[state]).touch()
        self.network_changed.notify_all()
        if not launching:
            self._end_in_background(instance)

    def _end_in_background(self, instance: Instance) -> None:
        """Stop or terminate the instance, as its state says, in a thread of its own."""
        end = self._stop if instance.state == "stopping" else self._terminate
        threading.Thread(target=end, args=(instance,), daemon=True).start()

    def stop(self, instance_id: str, force: bool = False) -> None:
        """Shut an EBS-backed instance down and forget it here (`stopping`, then `stopped` once).
        Stopping one that is stopping again with `force` cuts it off at once."""
        with self.lock:
            instance = self.instances.get(instance_id)
            if instance is None or instance.state in ("shutting-down", "terminated", "stopped"):
                return
            if instance.launch is None or not instance.launch.ebs_root:
                raise LaunchRefused(f"{instance_id} has an instance-store root: it cannot be stopped")
            instance.force_stop = instance.force_stop or force
            if instance.state == "stopping":
                if force:
                    threading.Thread(target=self.hypervisor.destroy, args=(instance_id,), daemon=True).start()
                return
            self._begin_ending(instance, "stopping")

    def _stop(self, instance: Instance) -> None:
        try:
            if not instance.force_stop and self.hypervisor.state(instance.id) is hv.PowerState.RUNNING:
                with_power_button = self.hypervisor.shutdown(instance.id, STOP_TIMEOUT)
                log.info(
                    "%s %s", instance.id, "shut down" if with_power_button else "cut off after the timeout"
                )
            self.hypervisor.destroy(instance.id)
            crashpoints.reached("nc.stop.destroyed")
        except hv.InstanceNotFound:
            pass
        finally:
            self._cleanup(instance)
            with self.lock:
                instance.state, instance.volumes = "stopped", {}
        self.on_change(instance.id)

    def _terminate(self, instance: Instance) -> None:
        try:
            self.hypervisor.destroy(instance.id)
            crashpoints.reached("nc.terminate.destroyed")
        finally:
            self._cleanup(instance)
            with self.lock:
                instance.state = "terminated"
        self.on_change(instance.id)

    def _cleanup(self, instance: Instance) -> None:
        """Give back what the instance held on this node; the saved launch goes last, so a crash
        before it leaves a launch whose domain is gone, which `adopt` relaunches or the CLC ends.
        Its network interface is the CLC's to drop, with the next network it pushes."""
        for key in instance.images:
            self.cache.release(key)
        instance.images.clear()
        directory = self.root / instance.id
        console = directory / "console.log"
        if console.exists():  # keep the console for GetConsoleOutput after termination
            (self.root / f"{instance.id}.console.log").write_bytes(console.read_bytes())
        shutil.rmtree(directory, ignore_errors=True)

    def attach_volume(self, request: AttachVolume) -> None:
        with self.lock:
            instance = self.instances.get(request.instance_id)
            if instance is not None and request.export.volume_id in instance.awaiting:
                instance.exports[request.export.volume_id] = request.export  # plugged in at start
                self.network_changed.notify_all()
                return
            if instance is None or instance.state != "running":
                raise volumes.VolumeRefused(f"{request.instance_id} is not running on this node")
        target = volumes.attach(self.hypervisor, request)
        crashpoints.reached("nc.volume.plugged")
        with self.lock:
            instance.volumes[request.export.volume_id] = target

    def detach_volume(self, request: DetachVolume) -> None:
        with self.lock:
            instance = self.instances.get(request.instance_id)
            if instance is None or instance.state not in ("running", "pending"):
                return  # not here (any more): nothing is plugged in
        volumes.detach(self.hypervisor, request)
        crashpoints.reached("nc.volume.unplugged")
        with self.lock:
            instance.volumes.pop(request.volume_id, None)

    def reboot(self, instance_id: str) -> None:
        instance = self.instances.get(instance_id)
        if instance is not None and instance.state == "running":
            self.hypervisor.reboot(instance_id)

    def console_output(self, instance_id: str) -> str:
        kept = self.root / f"{instance_id}.console.log"
        live = self.root / instance_id / "console.log"
        for path in (live, kept):
            if path.exists():
                return base64.b64encode(path.read_bytes()[-64 * 1024 :]).decode()
        return ""

    def notice_stopped_guests(self) -> None:
        """A running instance whose VM powered off (or crashed) by itself is terminated, as EC2 does
        with an instance-store instance that shuts down from inside; an EBS-backed one is stopped
        (the CLC terminates it when its shutdown behaviour says so)."""
        with self.lock:
            running = [i for i in self.instances.values() if i.state == "running"]
        for instance in running:
            power = self.hypervisor.state(instance.id)
            if power in (hv.PowerState.SHUTOFF, hv.PowerState.CRASHED, None):
                why = "crashed" if power is hv.PowerState.CRASHED else "shut down"
                ebs = instance.launch is not None and instance.launch.ebs_root
                log.info("%s %s by itself; %s it", instance.id, why, "stopping" if ebs else "terminating")
                with self.lock:
                    instance.state = "stopping" if ebs else "shutting-down"
                    instance.reason = INSTANCE_SHUTDOWN
                    instance.force_stop = True
                (self._stop if ebs else self._terminate)(instance)

    def describe(self) -> dict[str, NodeInstance]:
        self.notice_stopped_guests()
        with self.lock:
            report = {
                i.id: NodeInstance(
                    state=i.state,
                    reason=i.reason,
                    private_ip=i.launch.private_ip if i.launch else "",
                    needs=i.needs,
                    volumes=dict(i.volumes) if i.state == "running" else {},
                    awaiting=i.awaiting,
                )
                for i in self.instances.values()
            }
            # Terminated and stopped instances are reported once more, then forgotten.
            for i in [i for i in self.instances.values() if i.state in FINAL_STATES]:
                del self.instances[i.id]
        return report
