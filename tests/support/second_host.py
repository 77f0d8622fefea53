"""A second host on this machine, for node controllers "on another host": a network namespace with
its own address, reached from the first host over a veth pair (its only link), and a mount namespace
of its own in which that node's libvirt lives.

The node controller started there is the product's, started as on a real host: `mallee serve nc`
with the cloud's settings, its own address and node directory. It prepares the host itself
(drivers/hypervisor/host.py starts libvirtd and virtlogd, which here write their pidfiles, sockets,
domain state and logs into the namespace's own /run, /var/lib/libvirt, /var/log/libvirt, /etc/libvirt
and /var/cache/libvirt), makes its public bridge, VPC bridges, router namespaces and dnsmasq there,
and its VMs' taps and qemu processes belong to it. The first host's services listen on the veth's
address, so the node reaches the cloud (and the cloud the node) only over that link, as between two
machines; the VXLAN between the two nodes crosses it too.

`holder` is a process that keeps the mount namespace alive while the node controller is killed and
started again; everything else enters its namespaces with nsenter. At the end: the node's domains
are destroyed through its own libvirtd, its network torn down inside the namespace, its daemons and
every process left in the namespace stopped by pid, then the namespace and the veth removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support import netns
from support.libvirt import stop  # SIGTERM, SIGKILL after a while: by pid

# The host's own copies of libvirt's directories; /run is a fresh tmpfs (pidfiles, sockets, netns).
PRIVATE_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")

HOLDER = r"""
set -e
mount --make-rprivate /
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null || true   # ip netns exec gave us a fresh /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/libvirt
for d in {dirs}; do
    mkdir -p "{root}$d"
    [ "$d" = /var/log/libvirt ] || cp -a "$d/." "{root}$d/"   # settings, layout, QEMU's probed caps
    mount --bind "{root}$d" "$d"
done
mkdir -p /var/log/libvirt/qemu
echo ready
exec sleep infinity
"""

TEARDOWN_NETWORK = """
import sys
from pathlib import Path
from mallee.drivers import registry
registry.network("vpc", state_dir=Path(sys.argv[1])).teardown()
"""

DESTROY_DOMAINS = """
import libvirt
c = libvirt.open("qemu:///system")
for d in c.listAllDomains():
    if d.isActive():
        d.destroy()
    if d.isPersistent():
        d.undefine()
"""


@dataclass
class Host:
    ns: str  # the network namespace (/run/netns/<ns>)
    address: str  # its address on the veth
    gateway: str  # the first host's address on the veth
    root: Path  # its private directories
    holder: subprocess.Popen[bytes]
    node_dir: Path
    log_path: Path
    node: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def enter(self, *argv: str) -> list[str]:
        """argv run inside this host's network and mount namespaces."""
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", *argv]

    def run(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.enter(*argv), capture_output=True, text=True, timeout=timeout, check=check)

    def start_node(self, env: dict[str, str]) -> None:
        """`mallee serve nc` on this host, with the cloud's settings `env` and this host's address."""
        self.env = {
            **env,
            "MALLEE_HOST": self.address,
            "MALLEE_CLC_HOST": self.gateway,
            "MALLEE_NODE_DIR": str(self.node_dir),
            "MALLEE_UNDERLAY_ADDRESS": "",
        }
        with open(self.log_path, "ab") as log:
            self.node = subprocess.Popen(
                self.enter(sys.executable, "-m", "mallee.supervisor", "serve", "nc"),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill_node(self) -> None:
        """SIGKILL the node controller, as a host whose controller dies (its VMs keep running)."""
        assert self.node is not None
        self.node.send_signal(signal.SIGKILL)
        self.node.wait(10)

    def stop_node(self) -> None:
        if self.node is not None and self.node.poll() is None:
            self.node.send_signal(signal.SIGTERM)
            try:
                self.node.wait(20)
            except subprocess.TimeoutExpired:
                self.node.kill()
                self.node.wait()

    def daemon_pids(self) -> list[int]:
        """libvirtd's and virtlogd's pids on this host, from their pidfiles in its /run."""
        pids = []
        for name in ("libvirtd", "virtlogd"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = Path(f"/proc/{self.holder.pid}/root/run/{name}.pid").read_text()
                pids.append(int(text.split()[0]))
        return pids

    def processes(self) -> list[int]:
        """Every process in this host's network namespace but the holder (dnsmasq of its router
        namespaces is in namespaces of their own, and found by the node's teardown)."""
        found = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True, check=False)
        return [int(p) for p in found.stdout.split() if p.strip() and int(p) != self.holder.pid]


@contextlib.contextmanager
def second_host(log_dir: Path) -> Iterator[Host]:
    """A second host (see the module); removed with everything in it at the end. Its node
    controller's log goes to `log_dir`/nc.log."""
    tag = secrets.token_hex(2)
    ns, device = f"mlhost-{tag}", f"mlh{tag}"
    net = f"10.252.{secrets.randbelow(250)}"
    gateway, address = f"{net}.1", f"{net}.2"
    root = Path(tempfile.mkdtemp(prefix="mallee-host-"))
    root.chmod(0o755)
    node_dir = Path(tempfile.mkdtemp(prefix="mallee-nc-"))  # under /tmp: reachable by libvirt-qemu
    node_dir.chmod(0o711)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        stack.callback(shutil.rmtree, node_dir, ignore_errors=True)
        stack.callback(netns.sh, "ip", "netns", "del", ns, check=False)
        stack.callback(netns.sh, "ip", "link", "del", device, check=False)
        netns.sh("ip", "netns", "add", ns)
        netns.sh("ip", "link", "add", device, "type", "veth", "peer", "name", "eth0", "netns", ns)
        netns.sh("ip", "addr", "add", f"{gateway}/24", "dev", device)
        netns.sh("ip", "link", "set", device, "up")
        netns.sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        netns.sh("ip", "-n", ns, "link", "set", "eth0", "up")
        netns.sh("ip", "-n", ns, "link", "set", "lo", "up")
        script = HOLDER.format(dirs=" ".join(PRIVATE_DIRS), root=root)
        holder = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        host = Host(ns, address, gateway, root, holder, node_dir, log_dir / "nc.log")
        stack.callback(_end, host)
        assert holder.stdout is not None
        first = holder.stdout.readline().decode().strip()
        if first != "ready":
            raise RuntimeError(f"the second host's namespaces could not be made: {first}")
        yield host


def _end(host: Host) -> None:
    """Take the host apart, in order, going on after any step fails."""
    host.stop_node()
    steps = [
        ("destroy its domains", lambda: host.run(sys.executable, "-c", DESTROY_DOMAINS, timeout=60)),
        (
            "tear its network down",
            lambda: host.run(
                sys.executable, "-c", TEARDOWN_NETWORK, str(host.node_dir / "network"), timeout=60
            ),
        ),
    ]
    for what, step in steps if host.daemon_pids() else steps[1:]:  # no libvirtd: no domains
        try:
            step()
        except subprocess.CalledProcessError as exc:
            print(f"second host: could not {what}: {exc.stderr}")
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"second host: could not {what}: {exc}")
    stop(host.daemon_pids())
    stop(host.processes() + _started_for(host.node_dir))
    host.holder.kill()
    host.holder.wait(10)


def _started_for(node_dir: Path) -> list[int]:
    """Processes whose command line names the node's directory (dnsmasq of a router namespace the
    teardown missed): found by their pid, never by a pattern kill."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(node_dir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return [pid for pid in found if pid != os.getpid()]
