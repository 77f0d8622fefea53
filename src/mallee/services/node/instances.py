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
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from mallee.core import crashpoints
from mallee.core.files import write_atomically
from mallee.drivers.hypervisor import base as hv
from mallee.drivers.network.vpc_contract import vpc_bridge
from mallee.rpc.node import AttachVolume, DetachVolume, InstanceLaunch, InstanceState, NodeInstance, Resources
from mallee.services.node import volumes
from mallee.services.node.imagecache import ImageCache, ImageSource, disk_format
from mallee.services.node.teardown import is_ours

log = logging.getLogger(__name__)

LAUNCH_FILE = "launch.json"
TERMINATING_FILE = "terminating"  # written before a terminate starts, so a crash cannot undo it


class LaunchRefused(ValueError):
    """A launch this node cannot take (it names no VPC interface)."""


def tap_name(instance_id: str) -> str:
    """The instance's bridge port: stable, unique per instance, within Linux's 15 characters."""
    return "vn" + instance_id.split("-", 1)[1][-12:]


@dataclass
class Instance:
    id: str
    launch: InstanceLaunch | None  # None: a domain this node runs but has no launch for (an orphan)
    state: InstanceState = "pending"
    reason: str = ""
    needs: Resources = field(default_factory=Resources)
    images: list[str] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # volume id -> guest disk (volumes.py)


class InstanceManager:
    def __init__(
        self,
        root: Path,
        hypervisor: hv.Hypervisor,
        cache: ImageCache,
        prefix: str,
        interface_applied: Callable[[str], bool],
        on_change: Callable[[str], None] = lambda _id: None,
    ) -> None:
        """`prefix`: the node's VPC prefix (bridges are vpc_bridge(prefix, vni));
        `interface_applied(interface_id)`: whether the applied network has that interface."""
        self.root = root
        self.hypervisor = hypervisor
        self.cache = cache
        self.prefix = prefix
        self.interface_applied = interface_applied
        self.on_change = on_change
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
            instance = Instance(launch.instance_id, launch, needs=launch.instance_type.needs)
            self.instances[instance.id] = instance
            if (saved.parent / TERMINATING_FILE).exists():
                log.info("finishing the terminate of %s", instance.id)
                instance.state = "shutting-down"
                threading.Thread(target=self._terminate, args=(instance,), daemon=True).start()
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
            if launch.instance_id in self.instances:
                return  # idempotent: already launching or running
            instance = Instance(launch.instance_id, launch, needs=launch.instance_type.needs)
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
            spawned = self._wait_for_interface(instance)
            if spawned:
                self.hypervisor.spawn(spec)
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
            elif instance.state == "shutting-down":  # terminated while launching or waiting
                threading.Thread(target=self._terminate, args=(instance,), daemon=True).start()
                return
        self.on_change(instance.id)

    def _wait_for_interface(self, instance: Instance) -> bool:
        """Wait, pending, until the applied network has the instance's interface; False when the
        instance was terminated meanwhile."""
        assert instance.launch is not None and instance.launch.interface is not None
        interface_id = instance.launch.interface.interface_id
        with self.network_changed:
            if instance.state == "pending" and not self.interface_applied(interface_id):
                log.info("%s waits for its interface %s", instance.id, interface_id)
            while instance.state == "pending" and not self.interface_applied(interface_id):
                self.network_changed.wait()
            return instance.state == "pending"

    def network_applied(self) -> None:
        """A network was applied: launches waiting for their interface look again."""
        with self.network_changed:
            self.network_changed.notify_all()

    def _prepare(self, instance: Instance, launch: InstanceLaunch, directory: Path) -> hv.InstanceSpec:
        image, itype = launch.image, launch.instance_type
        root_src = self._cached(instance, image.root)
        root = directory / "root.qcow2"
        fmt = disk_format(image.root, root_src)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(root_src), str(root)]
            + [f"{itype.disk_gib}G"],
            check=True,
            capture_output=True,
        )
        kernel = self._cached(instance, image.kernel) if image.kernel else None
        ramdisk = self._cached(instance, image.ramdisk) if image.ramdisk else None
        # With a kernel: direct boot, root on the whole disk. Without: the disk boots itself (HVM).
        cmdline = "console=ttyS0 root=/dev/vda" if kernel else ""
        return hv.InstanceSpec(
            instance_id=instance.id,
            vcpus=itype.cpus,
            memory_mib=itype.memory_mib,
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=cmdline,
            disks=(hv.DiskSpec(target="vda", path=root, format="qcow2"),),
            nics=(hv.NicSpec(mac=launch.mac, bridge=self._bridge(launch), device=tap_name(instance.id)),),
            console_log=directory / "console.log",
        )

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
            launching = instance.state == "pending"
            instance.state = "shutting-down"
            directory = self.root / instance_id
            if directory.exists():
                (directory / TERMINATING_FILE).touch()
            self.network_changed.notify_all()  # a launch waiting for its interface stops waiting
        if not launching:  # a launch in progress terminates itself when it finishes
            threading.Thread(target=self._terminate, args=(instance,), daemon=True).start()

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
        with an instance-store instance that shuts down from inside."""
        with self.lock:
            running = [i for i in self.instances.values() if i.state == "running"]
        for instance in running:
            power = self.hypervisor.state(instance.id)
            if power in (hv.PowerState.SHUTOFF, hv.PowerState.CRASHED, None):
                why = "crashed" if power is hv.PowerState.CRASHED else "shut down"
                log.info("%s %s by itself; terminating it", instance.id, why)
                with self.lock:
                    instance.state = "shutting-down"
                    instance.reason = "Client.InstanceInitiatedShutdown: Instance initiated shutdown"
                self._terminate(instance)

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
                )
                for i in self.instances.values()
            }
            # Terminated instances are reported once more, then forgotten.
            for i in [i for i in self.instances.values() if i.state == "terminated"]:
                del self.instances[i.id]
        return report
