"""dnsmasq's process and files, as the VPC driver's DHCP server uses them (vpc_dhcp.py renders its
command line and hosts file): the files one dnsmasq keeps under a state directory, its lease file,
and stopping it by its pid.

dnsmasq daemonizes itself with its own pid file and lease file under the driver's state directory;
it is stopped by that pid (after checking /proc that the pid is still our dnsmasq). It drops root to
its default user, so the state directory must be readable by that user (the driver makes it 0755).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

DNSMASQ = "dnsmasq"


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expires: int  # Unix time; 0 = never


def parse_leases(text: str) -> list[Lease]:
    """Parse dnsmasq's lease file: `expiry mac ip hostname|* client-id|*` per line."""
    leases = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "duid":
            continue
        hostname = None if fields[3] == "*" else fields[3]
        leases.append(Lease(mac=fields[1].lower(), ip=fields[2], hostname=hostname, expires=int(fields[0])))
    return leases


@dataclass(frozen=True)
class DnsmasqFiles:
    hosts: Path
    leases: Path
    pid: Path
    log: Path

    @classmethod
    def under(cls, state_dir: Path) -> DnsmasqFiles:
        return cls(
            state_dir / "dhcp-hosts",
            state_dir / "dhcp-leases",
            state_dir / "dnsmasq.pid",
            state_dir / "dnsmasq.log",
        )


def running_pid(files: DnsmasqFiles) -> int | None:
    """The pid of the dnsmasq that owns `files`, if it runs (a stale or reused pid gives None)."""
    try:
        pid = int(files.pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    if f"--pid-file={files.pid}".encode() not in cmdline:
        return None
    return pid


def running_command(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return []
    return [part.decode() for part in raw.split(b"\0") if part]


def stop(files: DnsmasqFiles, timeout: float = 5.0) -> None:
    """Stop our dnsmasq by its pid (SIGTERM, then SIGKILL); succeeds when it is not running."""
    pid = running_pid(files)
    if pid is None:
        files.pid.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    files.pid.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # daemonized: not our child, init reaps it
        os.waitpid(pid, os.WNOHANG)


def read_leases(files: DnsmasqFiles) -> list[Lease]:
    try:
        return parse_leases(files.leases.read_text())
    except FileNotFoundError:
        return []
