"""The baseline of `launch.py`: the tiny image booted straight through libvirt, without Mallee's
API, cluster or node controllers, but with everything a guest needs to be reachable by SSH.

It uses the project's own pieces, so the domain is the one the node controller would define: the
`LibvirtHypervisor` driver (same domain XML, same accelerator choice), an `InstanceSpec` with the
instance type's vCPUs and memory, a qcow2 overlay on the raw root made with the same `qemu-img`
command, and a NIC with a fixed MAC whose tap joins the bridge of a VPC of its own that the node's
`VpcDriver` sets up under a prefix of its own (router namespace, dnsmasq for DHCP, nftables for the
security group that lets SSH in, 1:1 NAT to a public address in the benchmark's subnet on a public
bridge of its own, where the host has the subnet's first address). A small metadata server on the
socket `metadata_listener` returns (169.254.169.254:80 in the router namespace) answers the guest's
EC2 metadata requests (token, instance id, hostname, the SSH key), so both paths include DHCP,
metadata and sshd, and both log in to a public address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import shutil
import socket
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
    wait_event,
    wait_for_login,
)

from mallee.drivers.hypervisor.base import DiskSpec, InstanceSpec, NicSpec
from mallee.drivers.hypervisor.libvirt import LibvirtHypervisor
from mallee.drivers.network import vpc_dhcp
from mallee.drivers.network.vpc import VpcDriver
from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    NodeUnderlay,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
    vpc_bridge,
)
from mallee.drivers.network.vpc_model import MAX_VNI

MAC = "52:54:00:be:0c:01"
GROUP = "sg-bench"
VPC_ID, SUBNET_ID, ENI = "vpc-bench", "subnet-bench", "eni-bench"
# Not the cloud's default VPC range (172.31.0.0/16): the two never share an address, whatever
# conntrack zones their drivers pick.
VPC_CIDR, SUBNET_CIDR, PRIVATE_IP = "172.30.0.0/16", "172.30.0.0/24", "172.30.0.10"
ANYWHERE = "0.0.0.0/0"
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
    """Boots the tiny image through libvirt into a VPC of the benchmark's own; `stop` removes the
    domains, the metadata server and the whole network (the driver's teardown) afterwards."""

    def __init__(self, root: Path, subnet: ipaddress.IPv4Network, images: Images, shape: Shape) -> None:
        self.root, self.images, self.shape = root, images, shape
        tag = secrets.token_hex(2)
        # The cloud's node uses "b…" (see _launch_cloud.py): a "d…" prefix never meets its objects.
        self.prefix, self.public_bridge = f"d{tag[:3]}", f"mlbd{tag}"
        self.vni = random.randint(1000, MAX_VNI)
        hosts = list(subnet.hosts())
        self.host_address = f"{hosts[0]}/{subnet.prefixlen}"  # the host's end of the public bridge
        self.ip = str(hosts[9])  # the instance's public address: where SSH goes
        self.underlay = NodeUnderlay(self.prefix, "127.0.0.1", self.public_bridge, str(subnet))
        self.network_dir = root / "network"
        self.hypervisor = LibvirtHypervisor(instances_dir=root / "libvirt")
        self.network: VpcDriver | None = None
        self.server: ThreadingHTTPServer | None = None
        self.metadata = _Metadata("")
        self.live: set[str] = set()

    @property
    def bridge(self) -> str:
        """The VPC bridge the instance's tap joins."""
        return vpc_bridge(self.prefix, self.vni)

    @property
    def leases(self) -> Path:
        """dnsmasq's lease file: the driver keeps each VPC's DHCP files in `vni-<vni>/`."""
        return vpc_dhcp.files(self.network_dir / f"vni-{self.vni}").leases

    def start(self, public_key: str) -> None:
        """The public bridge (with the host's address), the VPC without instances, and the metadata
        server on the listener the driver opens in the VPC's router namespace."""
        self.metadata.key = public_key
        self.network = VpcDriver(self.network_dir)
        self.network.prepare_public_bridge(self.public_bridge, self.host_address)
        self.network.apply(self._state(None))
        self.server = _serve(self.network.metadata_listener(VPC_ID, 80), _handler(self.metadata))

    def stop(self) -> None:
        for instance_id in list(self.live):
            self._remove(instance_id)
        left = destroy_domains(self.live)
        if left:
            print(f"WARNING: could not destroy domains {left}", file=sys.stderr)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        try:  # the VPC's bridge, router namespace, dnsmasq, nft tables, and the public bridge
            (self.network or VpcDriver(self.network_dir)).teardown()
        except Exception as error:
            print(f"WARNING: removing the direct boot's network failed: {error}", file=sys.stderr)

    def boot(self, key: Path, timeout: float) -> LaunchResult:
        """qemu-img overlay → the VPC with the instance's interface → define+start → SSH login. As on
        the Mallee path (whose node marks an instance running once libvirt started it), SSH is tried
        from the moment the domain runs; MALLEE-READY on the serial log is recorded as a step."""
        assert self.network is not None
        instance_id = f"i-{secrets.token_hex(8)}"
        directory = self.root / instance_id
        directory.mkdir()
        self.metadata.instance_id = instance_id
        timeline = Timeline()
        probes = boot_probes(directory, "console.log", self.leases)
        self.live.add(instance_id)
        try:
            with Watcher(timeline, probes):
                spec = self._spec(instance_id, directory)
                timeline.mark("disk_ready")
                # As on a node: the interface is applied before the domain starts; libvirt puts its
                # tap on the VPC bridge, where the driver's anti-spoofing already names it.
                self.network.apply(self._state(self._interface(instance_id)))
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

    def _interface(self, instance_id: str) -> Interface:
        return Interface(
            interface_id=ENI,
            instance_id=instance_id,
            subnet_id=SUBNET_ID,
            mac=MAC,
            private_ip=PRIVATE_IP,
            device=_tap(instance_id),
            hostname=instance_id,
            group_ids=(GROUP,),
            public_ip=self.ip,
        )

    def _state(self, interface: Interface | None) -> NodeNetwork:
        """The benchmark's VPC: one subnet, one group letting SSH in (and everything out), and the
        booting instance's interface when there is one."""
        interfaces = (interface,) if interface is not None else ()
        group = SecurityGroup(
            GROUP,
            ingress=(Rule("tcp", 22, 22, cidr=ANYWHERE),),
            egress=(Rule("-1", cidr=ANYWHERE),),
            members=tuple(i.private_ip for i in interfaces),
        )
        vpc = Vpc(VPC_ID, self.vni, VPC_CIDR, (Subnet(SUBNET_ID, SUBNET_CIDR),), interfaces, (group,))
        return NodeNetwork(self.underlay, (vpc,))

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
        if self.network is not None:  # the VPC without the interface (its DHCP lease goes too)
            with contextlib.suppress(Exception):
                self.network.apply(self._state(None))
        shutil.rmtree(self.root / instance_id, ignore_errors=True)


def _serve(sock: socket.socket, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Serve HTTP from a thread on an already listening socket (the server closes it)."""
    server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    threading.Thread(target=server.serve_forever, name="bench-imds", daemon=True).start()
    return server


def _tap(instance_id: str) -> str:
    return "vb" + instance_id.split("-", 1)[1][-12:]
