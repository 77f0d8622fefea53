"""Host-side helpers of `launch.py`: the libvirt daemons, free private subnets, the guest images
(the tiny image and its 32 MiB / 1 GiB root variants), the boot timeline a watcher thread fills in
from files on disk, the SSH probe, and process memory.

Everything here acts on loopback, on this machine's files, or on the benchmark's own bridges.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _harness import service_pids

from mallee.drivers.hypervisor import host as libvirt_host
from mallee.images.tiny import build_tiny

MIB = 1 << 20
POLL = 0.05  # how often the watcher looks at the files
SSH_EVERY = 0.25  # how often the SSH probe tries
READY_GRACE = 5.0  # how long to wait after a login for the guest's ready line (not timed)
IMAGE_FILES = ("vmlinux", "initrd.img", "rootfs.img")  # what `mallee image publish` uploads
QEMU_PID_DIR = Path("/run/libvirt/qemu")


# ---------------------------------------------------------------------------------------------
# libvirt and the network


class Daemons:
    """libvirtd and virtlogd, started when they do not run. Other users of the machine may stop
    daemons they started while ours run, so `ensure` is called again before every launch; `stop`
    stops only the daemons started here."""

    def __init__(self) -> None:
        self.started: list[int] = []

    def ensure(self) -> None:
        self.started += libvirt_host.ensure_running()

    def stop(self) -> None:
        libvirt_host.stop(self.started)
        self.started.clear()
        libvirt_host.restore_kvm()


@contextlib.contextmanager
def libvirt_daemons() -> Iterator[Daemons]:
    """libvirtd and virtlogd up for the block; afterwards stop only the ones started here."""
    reason = libvirt_host.unavailable_reason()
    if reason:
        raise RuntimeError(f"libvirt cannot run here: {reason}")
    daemons = Daemons()
    try:
        daemons.ensure()
        yield daemons
    finally:
        daemons.stop()


def destroy_domains(ids: Iterable[str]) -> list[str]:
    """Destroy and undefine these domains of ours, retrying while libvirtd restarts (other users of
    the machine start and stop the daemons too); returns the ids still there."""
    left = sorted(ids)
    if not left:
        return []
    from mallee.drivers.hypervisor.libvirt import LibvirtHypervisor

    with libvirt_daemons():
        hypervisor = LibvirtHypervisor(domain_type="qemu", instances_dir=Path("/tmp"))
        for _ in range(5):
            for instance_id in list(left):
                with contextlib.suppress(Exception):
                    hypervisor.destroy(instance_id)
                    left.remove(instance_id)
            if not left:
                break
            time.sleep(1.0)
    return left


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"], capture_output=True, text=True)
    used = []
    for route in json.loads(out.stdout or "[]"):
        with contextlib.suppress(ValueError):
            dst = route.get("dst", "")
            if dst and dst != "default":
                used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """`count` /24s in 10.150.0.0-10.199.255.0 that no route on this host overlaps."""
    used = _networks_in_use()
    chosen: list[ipaddress.IPv4Network] = []
    for _ in range(500):
        net = ipaddress.IPv4Network(f"10.{random.randint(150, 199)}.{random.randint(0, 254)}.0/24")
        if not any(net.overlaps(other) for other in (*used, *chosen)):
            chosen.append(net)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free private /24 found")


# ---------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class Images:
    """Directories `mallee image publish` takes, and the files the direct boot uses."""

    tiny: Path  # the tiny image as built (64 MiB ext4 root)
    root_small: Path  # the same with its root shrunk to 32 MiB
    root_big: Path  # the 32 MiB root followed by zeros up to 1 GiB (ext4 ignores the rest)
    direct: Path  # private copies of the tiny image's files, readable by the qemu user
    kernel_release: str


def prepare_images(workdir: Path, node_visible: Path) -> Images:
    """Build (or take from the cache) the tiny image and derive the variants."""
    tiny = build_tiny(out_dir=workdir / "tiny")  # hard links into the build cache: read only
    small, big, direct = workdir / "root-32m", workdir / "root-1g", node_visible / "direct-image"
    for directory in (small, big, direct):
        directory.mkdir()
    for name in ("vmlinux", "initrd.img"):
        for directory in (small, big):
            (directory / name).hardlink_to(tiny.directory / name)
    for name in IMAGE_FILES:  # copies: libvirt relabels the files it boots, never touch the cache's
        shutil.copyfile(tiny.directory / name, direct / name)
        (direct / name).chmod(0o644)
    shutil.copyfile(tiny.rootfs, small / "rootfs.img")
    (small / "rootfs.img").chmod(0o644)
    subprocess.run(["e2fsck", "-fy", str(small / "rootfs.img")], capture_output=True, check=False)
    subprocess.run(["resize2fs", str(small / "rootfs.img"), "32M"], capture_output=True, check=True)
    shutil.copyfile(small / "rootfs.img", big / "rootfs.img")
    with open(big / "rootfs.img", "r+b") as padded:
        padded.truncate(1 << 30)
    return Images(tiny.directory, small, big, direct, tiny.kernel_release)


# ---------------------------------------------------------------------------------------------
# The timeline of one launch


@dataclass
class LaunchResult:
    """One timed launch: through Mallee's API (`path` "mallee") or libvirt directly ("direct")."""

    path: str
    image: str
    instance_id: str
    seconds: float  # start to SSH login
    events: dict[str, float]  # seconds from the start at which each step was seen
    qemu_rss_mib: float | None  # the domain's QEMU right after the login


@dataclass
class Timeline:
    """Seconds from `t0` (monotonic) at which each event was first seen."""

    t0: float = field(default_factory=time.monotonic)
    events: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        return self.events.setdefault(name, round(time.monotonic() - self.t0, 3))


Probe = Callable[[], bool]


class Watcher:
    """A thread that marks each probe's event in a timeline the first time the probe is true."""

    def __init__(self, timeline: Timeline, probes: dict[str, Probe]) -> None:
        self._timeline, self._probes = timeline, dict(probes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="launch-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while self._probes and not self._stop.is_set():
            for name, probe in list(self._probes.items()):
                with contextlib.suppress(OSError):
                    if probe():
                        self._timeline.mark(name)
                        del self._probes[name]
            self._stop.wait(POLL)


def wait_event(timeline: Timeline, name: str, timeout: float) -> bool:
    """Wait until the watcher has marked `name`; False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while name not in timeline.events:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL / 2)
    return True


def first(root: Path, pattern: str) -> Path | None:
    return next(iter(sorted(root.glob(pattern))), None)


def exists(root: Path, pattern: str) -> Probe:
    return lambda: first(root, pattern) is not None


def contains(root: Path, pattern: str, text: str) -> Probe:
    def probe() -> bool:
        path = first(root, pattern)
        return path is not None and text.encode() in path.read_bytes()

    return probe


def new_lease(leases: Path) -> Probe:
    """True once the DHCP lease file holds a line it did not hold when the probe was made."""
    before = set(leases.read_text().splitlines()) if leases.exists() else set()
    return lambda: leases.exists() and bool(set(leases.read_text().splitlines()) - before)


def boot_probes(console_root: Path, console: str, leases: Path) -> dict[str, Probe]:
    """What every boot shows on disk: the console log appears (the domain started), the initramfs
    switched to the root disk, a DHCP lease, and the guest's ready line (DHCP, metadata, sshd done)."""
    return {
        "domain_started": exists(console_root, console),
        "root_mounted": contains(console_root, console, "MALLEE-ROOT /dev/vda"),
        "dhcp_lease": new_lease(leases),
        "guest_ready": contains(console_root, console, "MALLEE-READY"),
    }


# ---------------------------------------------------------------------------------------------
# SSH


def _port_open(ip: str, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_run(ip: str, key: Path, command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`ssh -i key root@ip COMMAND` (a timeout is a failed run, exit code 255)."""
    options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes"]
    options += ["ConnectTimeout=3", "LogLevel=ERROR"]
    argv = ["ssh", "-i", str(key), *(arg for o in options for arg in ("-o", o)), f"root@{ip}", command]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", "timed out")


def ssh_true(ip: str, key: Path) -> bool:
    """`ssh -i key root@ip true` succeeded."""
    return ssh_run(ip, key, "true").returncode == 0


def wait_for_login(ip: str, key: Path, timeline: Timeline, timeout: float) -> float:
    """Every SSH_EVERY s: a TCP connect to port 22 (SSH_EVERY s at most), and when it is accepted
    `ssh ... true`. Marks `ssh_port` and `ssh_login`; returns the seconds to login."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        if _port_open(ip, SSH_EVERY):
            timeline.mark("ssh_port")
            if ssh_true(ip, key):
                return timeline.mark("ssh_login")
        time.sleep(max(0.0, SSH_EVERY - (time.monotonic() - started)))
    raise TimeoutError(f"no SSH login to {ip} within {timeout:.0f} s")


def public_key(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# ---------------------------------------------------------------------------------------------
# Memory


def rss_mib(pid: int) -> float | None:
    """VmRSS of a process in MiB, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(found.group(1)) / 1024, 1) if found else None


def qemu_pid(domain: str) -> int | None:
    """The pid of a running domain's QEMU, from the pid file libvirt writes for it."""
    try:
        return int((QEMU_PID_DIR / f"{domain}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def qemu_rss_mib(domain: str) -> float | None:
    pid = qemu_pid(domain)
    return None if pid is None else rss_mib(pid)


def service_pid(log: Path, service: str) -> int | None:
    """The pid of a one-process `mallee up` service, from the supervisor's log."""
    pids = service_pids(log, service)
    return pids[-1] if pids else None
