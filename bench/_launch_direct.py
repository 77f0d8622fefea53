"""The baseline of `launch.py`: the tiny image booted straight through libvirt, without Mallee's
API, cluster or node controllers, but with everything a guest needs to be reachable by SSH.

It uses the project's own pieces, so the domain is the one the node controller would define: the
`LibvirtHypervisor` driver (same domain XML, same accelerator choice), an `InstanceSpec` with the
instance type's vCPUs and memory, a qcow2 overlay on the raw root made with the same `qemu-img`
command, and a NIC with a fixed MAC on a bridge of its own that the `EdgeNetworkDriver` sets up on
a separate subnet (dnsmasq for DHCP, nftables). A small metadata server on the bridge address answers
the guest's EC2 metadata requests (token, instance id, hostname, the SSH key), so both paths include
DHCP, metadata and sshd.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _launch_host import (
    READY_GRACE,
    Images,
    LaunchResult,
    Timeline,
    Watcher,
    boot_probes,
    destroy_domains,
    qemu_rss_mib,
    remove_network,
    wait_event,
    wait_for_login,
)

from mallee.drivers.hypervisor.base import DiskSpec, InstanceSpec, NicSpec
from mallee.drivers.hypervisor.libvirt import LibvirtHypervisor
from mallee.drivers.network.base import GroupRule, HostNetwork, InstanceInterface
from mallee.drivers.network.edge import EdgeNetworkDriver

MAC = "52:54:00:be:0c:01"
GROUP = "sg-bench"
CMDLINE = "console=ttyS0 root=/dev/vda"  # what the node controller gives a kernel+root image


@dataclass(frozen=True)
class Shape:
    """The instance type the direct boot copies."""

    vcpus: int
    memory_mib: int
    disk_gib: int


class _Metadata:
    """What the metadata server answers; the instance id changes with every boot."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.instance_id = ""

    def answer(self, path: str) -> str | None:
        return {
            "/latest/meta-data/instance-id": self.instance_id,
            "/latest/meta-data/local-hostname": self.instance_id,
            "/latest/meta-data/public-keys/0/openssh-key": self.key + "\n",
        }.get(path)


def _handler(metadata: _Metadata) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_PUT(self) -> None:  # IMDSv2 token
            self._send(200, "bench-token" if self.path == "/latest/api/token" else None)

        def do_GET(self) -> None:
            self._send(200, metadata.answer(self.path))

        def _send(self, status: int, body: str | None) -> None:
            data = (body or "").encode()
            self.send_response(status if body is not None else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
            pass

    return Handler


class DirectBoot:
    """Boots the tiny image through libvirt on the benchmark's own bridge; a context manager that
    removes the domain, the metadata server and the whole network afterwards."""

    def __init__(self, root: Path, subnet: ipaddress.IPv4Network, images: Images, shape: Shape) -> None:
        self.root, self.images, self.shape = root, images, shape
        self.bridge = f"mlbd{secrets.token_hex(2)}"
        hosts = list(subnet.hosts())
        self.gateway, self.ip, self.prefix = str(hosts[0]), str(hosts[9]), subnet.prefixlen
        self.network_dir = root / "network"
        self.hypervisor = LibvirtHypervisor(instances_dir=root / "libvirt")
        self.network: EdgeNetworkDriver | None = None
        self.server: ThreadingHTTPServer | None = None
        self.metadata = _Metadata("")
        self.live: set[str] = set()

    def start(self, public_key: str) -> None:
        self.metadata.key = public_key
        self.network = EdgeNetworkDriver(self.network_dir)
        # The server binds the bridge address, which exists once the bridge does: set up with a
        # placeholder metadata port first, then again with the server's (setup reconfigures in place).
        self.network.setup(HostNetwork(self.bridge, self.gateway, self.prefix, self.gateway, 1))
        self.server = ThreadingHTTPServer((self.gateway, 0), _handler(self.metadata))
        port = int(self.server.server_address[1])
        self.network.setup(HostNetwork(self.bridge, self.gateway, self.prefix, self.gateway, port))
        self.network.apply_security_groups(
            [GroupRule(GROUP, "tcp", 22, 22, cidr="0.0.0.0/0")], {GROUP: [self.ip]}
        )
        threading.Thread(target=self.server.serve_forever, name="bench-imds", daemon=True).start()

    def stop(self) -> None:
        for instance_id in list(self.live):
            self._remove(instance_id)
        left = destroy_domains(self.live)
        if left:
            print(f"WARNING: could not destroy domains {left}", file=sys.stderr)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        remove_network(self.network_dir, self.bridge)

    def boot(self, key: Path, timeout: float) -> LaunchResult:
        """qemu-img overlay → network entry → define+start → SSH login. As on the Mallee path (whose
        node marks an instance running once libvirt started it), SSH is tried from the moment the
        domain runs; MALLEE-READY on the serial log is recorded as a step."""
        assert self.network is not None
        instance_id = f"i-{secrets.token_hex(8)}"
        directory = self.root / instance_id
        directory.mkdir()
        self.metadata.instance_id = instance_id
        timeline = Timeline()
        probes = boot_probes(directory, "console.log", self.network_dir / "dhcp-leases")
        self.live.add(instance_id)
        try:
            with Watcher(timeline, probes):
                spec = self._spec(instance_id, directory)
                timeline.mark("disk_ready")
                self.network.add_instance(
                    InstanceInterface(instance_id, MAC, self.ip, instance_id, _tap(instance_id))
                )
                timeline.mark("network_ready")
                self.hypervisor.spawn(spec)
                timeline.mark("spawned")
                seconds = wait_for_login(self.ip, key, timeline, timeout)
                wait_event(timeline, "guest_ready", READY_GRACE)  # the step table wants it; not timed
            rss = qemu_rss_mib(instance_id)
        except Exception as error:
            raise RuntimeError(
                f"direct boot {instance_id}: {error}\n{self._keep_console(instance_id)}"
            ) from error
        finally:
            self._remove(instance_id)
        return LaunchResult("direct", "tiny", instance_id, seconds, dict(timeline.events), rss)

    def _spec(self, instance_id: str, directory: Path) -> InstanceSpec:
        root = directory / "root.qcow2"
        backing = self.images.direct / "rootfs.img"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(backing), str(root),
             f"{self.shape.disk_gib}G"],
            check=True, capture_output=True,
        )  # fmt: skip
        return InstanceSpec(
            instance_id=instance_id,
            vcpus=self.shape.vcpus,
            memory_mib=self.shape.memory_mib,
            kernel=self.images.direct / "vmlinux",
            ramdisk=self.images.direct / "initrd.img",
            cmdline=CMDLINE,
            disks=(DiskSpec(target="vda", path=root, format="qcow2"),),
            nics=(NicSpec(mac=MAC, bridge=self.bridge, device=_tap(instance_id)),),
            console_log=directory / "console.log",
        )

    def _keep_console(self, instance_id: str) -> str:
        """Keep a failed boot's console beside the work files; returns its last lines."""
        console = self.root / instance_id / "console.log"
        kept = self.root / f"failed-{instance_id}.console.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(console, kept)
            return f"console ({kept}):\n" + "\n".join(kept.read_text(errors="replace").splitlines()[-15:])
        return "(no console log)"

    def _remove(self, instance_id: str) -> None:
        try:
            self.hypervisor.destroy(instance_id)
            self.live.discard(instance_id)
        except Exception as error:  # libvirtd restarting: stop() tries again
            print(f"destroying {instance_id} failed (will retry): {error}", file=sys.stderr)
        if self.network is not None:
            with contextlib.suppress(Exception):
                self.network.remove_instance(instance_id)
        shutil.rmtree(self.root / instance_id, ignore_errors=True)


def _tap(instance_id: str) -> str:
    return "vb" + instance_id.split("-", 1)[1][-12:]
