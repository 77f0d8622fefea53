"""Preparing a host for libvirt where no service manager does it: start libvirtd and virtlogd when
they are not running (as root, with `-d`), and give /dev/kvm the group and mode udev would.

The node controller calls `prepare()` at start-up; tests use `ensure_running` / `stop` so that they
stop only the daemons they started (by the pid each wrote to its pidfile).

Without udev, /dev/kvm stays root-only (0600). libvirtd then probes QEMU with KVM as root, finds
/dev/kvm unusable for the qemu user when it checks its capability cache, and re-probes QEMU on *every*
domain lookup: define+start took 73-100 s instead of 0.9 s. So this helper gives /dev/kvm the group
and mode Debian's udev rule gives it (root:kvm 0660), and restores the old ones when it stops.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

URI = "qemu:///system"
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")  # libvirt's own log per domain, named after it


@dataclass(frozen=True)
class Daemon:
    name: str  # the executable, also its /proc/PID/comm
    pidfile: Path
    socket: Path


# virtlogd first: libvirtd hands it every console log of a domain that starts.
DAEMONS = (
    Daemon("virtlogd", Path("/run/virtlogd.pid"), Path("/run/libvirt/virtlogd-sock")),
    Daemon("libvirtd", Path("/run/libvirtd.pid"), Path("/run/libvirt/libvirt-sock")),
)


def unavailable_reason() -> str | None:
    """Why libvirt cannot be used on this machine (a pytest skip reason), or None when it can."""
    if os.geteuid() != 0:
        return "starting libvirtd for qemu:///system needs root"
    for daemon in DAEMONS:
        if shutil.which(daemon.name) is None:
            return f"{daemon.name} is not installed (./setup installs libvirt-daemon-system)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    return None


def running_pid(daemon: Daemon) -> int | None:
    """The pid of the running daemon according to its pidfile, or None when it does not run."""
    try:
        pid = int(daemon.pidfile.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == daemon.name else None


DEV_KVM = Path("/dev/kvm")
_kvm_restore: list[tuple[int, int, int]] = []  # (uid, gid, mode) of /dev/kvm before we changed it


def give_kvm_to_group() -> None:
    """root:kvm 0660 on /dev/kvm, as Debian's udev rule sets it (see the module docstring)."""
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
        status = DEV_KVM.stat()
    except (KeyError, OSError):
        return
    if status.st_gid == kvm_gid and status.st_mode & 0o060 == 0o060:
        return
    _kvm_restore.append((status.st_uid, status.st_gid, status.st_mode & 0o7777))
    os.chown(DEV_KVM, status.st_uid, kvm_gid)
    os.chmod(DEV_KVM, (status.st_mode & 0o7777) | 0o060)


def restore_kvm() -> None:
    """Undo give_kvm_to_group (only if it changed anything)."""
    while _kvm_restore:
        uid, gid, mode = _kvm_restore.pop()
        with contextlib.suppress(OSError):
            os.chown(DEV_KVM, uid, gid)
            os.chmod(DEV_KVM, mode)


def prepare(timeout: float = 20.0) -> list[int]:
    """Make this host ready for the libvirt driver; returns the pids of daemons it had to start
    (they keep running, as system services would)."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"libvirt cannot be used on this host: {reason}")
    return ensure_running(timeout)


def ensure_running(timeout: float = 20.0) -> list[int]:
    """Start whichever daemon is not running and wait until each accepts connections; returns the
    pids of the daemons started by this call (the caller stops them with `stop`)."""
    started: list[int] = []
    give_kvm_to_group()
    try:
        for daemon in DAEMONS:
            if running_pid(daemon) is None:
                daemon.pidfile.unlink(missing_ok=True)  # stale: the process it names is gone
                result = subprocess.run([daemon.name, "-d"], capture_output=True, timeout=timeout)
                pid = _wait_started(daemon, time.monotonic() + timeout)
                if result.returncode == 0:
                    started.append(pid)
                # else another test session started it a moment before us: use it, never stop it
        _wait_answering(time.monotonic() + timeout)
    except BaseException:
        stop(started)
        restore_kvm()
        raise
    return started


def stop(pids: list[int], timeout: float = 10.0) -> None:
    """Stop the given daemons (SIGTERM, SIGKILL after `timeout`), newest first."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_started(daemon: Daemon, deadline: float) -> int:
    """The pid of a daemon just started with -d, once its pidfile and socket exist."""
    while time.monotonic() < deadline:
        pid = running_pid(daemon)
        if pid is not None and daemon.socket.exists():
            return pid
        time.sleep(0.05)
    raise RuntimeError(f"{daemon.name} did not start within the timeout (no {daemon.pidfile} or socket)")


def _wait_answering(deadline: float) -> None:
    """Wait until libvirtd answers an API call (its socket exists a little before it does)."""
    last = ""
    while time.monotonic() < deadline:
        result = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        last = result.stderr.strip()
        time.sleep(0.1)
    raise RuntimeError(f"libvirtd does not answer on {URI}: {last}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours is gone for our purposes (the daemons double-fork, so normally not ours).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True
