"""The instances of one node: launch (fetch images → disks → network → spawn), terminate, report.

The hypervisor is the truth for what runs; each instance's launch description is kept on disk so a
restarted node controller re-adopts its running domains. Work happens in a background thread per
instance; `describe()` reports the AWS-style state the CC and CLC reconcile against.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mallee.drivers.hypervisor import base as hv
from mallee.drivers.network import base as net
from mallee.services.node.imagecache import ImageCache, ImageSource, disk_format, save_json

log = logging.getLogger(__name__)


def tap_name(instance_id: str) -> str:
    """The instance's bridge port: stable, unique per instance, within Linux's 15 characters."""
    return "vn" + instance_id.split("-", 1)[1][-12:]


@dataclass
class Instance:
    launch: dict[str, Any]
    state: str = "pending"
    reason: str = ""
    images: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.launch["instance_id"])


def _source(described: dict[str, Any]) -> ImageSource:
    """An ImageSource from a launch's image description ({key, url, size, format, parts?})."""
    return ImageSource(
        described["key"],
        described["url"],
        described.get("size"),
        described.get("sha256"),
        described.get("format") or "raw",
        tuple(described.get("parts") or ()),
    )


class InstanceManager:
    def __init__(
        self,
        root: Path,
        hypervisor: hv.Hypervisor,
        network: net.NetworkDriver,
        cache: ImageCache,
        bridge: str,
    ) -> None:
        self.root = root
        self.hypervisor = hypervisor
        self.network = network
        self.cache = cache
        self.bridge = bridge
        self.instances: dict[str, Instance] = {}
        self.lock = threading.RLock()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- re-adoption ----------------------------------------------------------------------------

    def adopt(self) -> None:
        """After a restart: running domains with a saved launch are ours again; saved launches
        whose domain is gone are cleaned up."""
        running = set(self.hypervisor.list_instances())
        for saved in self.root.glob("*/launch.json"):
            launch = json.loads(saved.read_text())
            instance = Instance(launch)
            if instance.id in running:
                instance.state = "running"
                self.instances[instance.id] = instance
                log.info("re-adopted %s", instance.id)
            else:
                shutil.rmtree(saved.parent, ignore_errors=True)

    # -- operations -----------------------------------------------------------------------------

    def run(self, launch: dict[str, Any]) -> None:
        instance_id = str(launch["instance_id"])
        with self.lock:
            if instance_id in self.instances:
                return  # idempotent: already launching or running
            instance = Instance(launch)
            self.instances[instance_id] = instance
            directory = self.root / instance_id
            directory.mkdir(parents=True, exist_ok=True)
            save_json(directory / "launch.json", launch)
        threading.Thread(
            target=self._launch, args=(instance,), name=f"launch-{instance_id}", daemon=True
        ).start()

    def _launch(self, instance: Instance) -> None:
        directory = self.root / instance.id
        try:
            spec = self._prepare(instance, directory)
            self.network.add_instance(
                net.InstanceInterface(
                    instance_id=instance.id,
                    mac=instance.launch["mac"],
                    ip=instance.launch["private_ip"],
                    hostname=instance.launch.get("hostname") or instance.id,
                    device=tap_name(instance.id),
                )
            )
            self.hypervisor.spawn(spec)
        except Exception as exc:
            log.exception("launch of %s failed", instance.id)
            with self.lock:
                instance.state, instance.reason = "terminated", f"Server.InternalError: {exc}"
            self._cleanup(instance)
            return
        with self.lock:
            if instance.state == "pending":
                instance.state = "running"
            elif instance.state == "shutting-down":  # terminated while launching
                threading.Thread(target=self._terminate, args=(instance,), daemon=True).start()

    def _prepare(self, instance: Instance, directory: Path) -> hv.InstanceSpec:
        launch = instance.launch
        image = launch["image"]
        itype = launch["instance_type"]
        root_source = _source(image["root"])
        root_src = self._cached(instance, root_source)
        root = directory / "root.qcow2"
        size = f"{int(itype['disk_gib'])}G"
        fmt = disk_format(root_source, root_src)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(root_src), str(root), size],
            check=True,
            capture_output=True,
        )
        kernel = self._cached(instance, _source(image["kernel"])) if image.get("kernel") else None
        ramdisk = self._cached(instance, _source(image["ramdisk"])) if image.get("ramdisk") else None
        # With a kernel: direct boot, root on the whole disk. Without: the disk boots itself (HVM).
        cmdline = "console=ttyS0 root=/dev/vda" if kernel else ""
        return hv.InstanceSpec(
            instance_id=instance.id,
            vcpus=int(itype["cpus"]),
            memory_mib=int(itype["memory_mib"]),
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=cmdline,
            disks=(hv.DiskSpec(target="vda", path=root, format="qcow2"),),
            nics=(hv.NicSpec(mac=launch["mac"], bridge=self.bridge, device=tap_name(instance.id)),),
            console_log=directory / "console.log",
        )

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
        if not launching:  # a launch in progress terminates itself when it finishes
            threading.Thread(target=self._terminate, args=(instance,), daemon=True).start()

    def _terminate(self, instance: Instance) -> None:
        try:
            self.hypervisor.destroy(instance.id)
        finally:
            self._cleanup(instance)
            with self.lock:
                instance.state = "terminated"

    def _cleanup(self, instance: Instance) -> None:
        try:
            self.network.remove_instance(instance.id)
        except Exception:
            log.exception("removing %s from the network failed", instance.id)
        for key in instance.images:
            self.cache.release(key)
        instance.images.clear()
        directory = self.root / instance.id
        console = directory / "console.log"
        if console.exists():  # keep the console for GetConsoleOutput after termination
            (self.root / f"{instance.id}.console.log").write_bytes(console.read_bytes())
        shutil.rmtree(directory, ignore_errors=True)

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

    def describe(self) -> dict[str, Any]:
        self.notice_stopped_guests()
        with self.lock:
            report = {
                i.id: {
                    "state": i.state,
                    "reason": i.reason,
                    "private_ip": i.launch.get("private_ip", ""),
                    "needs": {
                        "cores": int(i.launch["instance_type"]["cpus"]),
                        "memory_mib": int(i.launch["instance_type"]["memory_mib"]),
                        "disk_gib": int(i.launch["instance_type"]["disk_gib"]),
                    },
                }
                for i in self.instances.values()
            }
            # Terminated instances are reported once more, then forgotten.
            for i in [i for i in self.instances.values() if i.state == "terminated"]:
                del self.instances[i.id]
        return report
