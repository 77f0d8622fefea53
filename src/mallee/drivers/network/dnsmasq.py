"""dnsmasq as the bridge's DHCP server: DHCP only (no DNS), fixed MAC -> IP entries only.

The hosts file is rewritten atomically and dnsmasq re-reads it on SIGHUP. dnsmasq daemonizes itself
with its own pid file and lease file under the driver's state directory; it is stopped by that pid
(after checking /proc that the pid is still our dnsmasq). It drops root to its default user, so
the state directory must be readable by that user (the driver makes it 0755).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mallee.core.files import write_atomically
from mallee.drivers.network.base import HostNetwork, InstanceInterface, Lease, NetworkError

DNSMASQ = "dnsmasq"


def render_hosts(instances: Sequence[InstanceInterface]) -> str:
    """One `--dhcp-hostsfile` line per instance: MAC,IP,hostname."""
    return "".join(f"{i.mac},{i.ip},{i.hostname}\n" for i in sorted(instances, key=lambda i: i.mac))


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


def command(host: HostNetwork, files: DnsmasqFiles, binary: str = DNSMASQ) -> list[str]:
    net = host.network
    return [
        binary,
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        f"--interface={host.bridge}",
        "--except-interface=lo",
        "--no-resolv",
        "--no-hosts",
        "--dhcp-authoritative",
        f"--dhcp-range={net.network_address},static,{net.netmask},{host.lease_seconds}",
        f"--dhcp-option=option:router,{host.address}",
        f"--dhcp-hostsfile={files.hosts}",
        f"--dhcp-leasefile={files.leases}",
        f"--pid-file={files.pid}",
        f"--log-facility={files.log}",
        "--log-dhcp",
    ]


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


def start(host: HostNetwork, files: DnsmasqFiles, binary: str = DNSMASQ) -> int:
    """Start dnsmasq for `host` (it daemonizes after binding); returns its pid."""
    if not files.hosts.exists():
        write_atomically(files.hosts, "")
    done = subprocess.run(command(host, files, binary), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetworkError(f"dnsmasq failed to start: {done.stderr.strip()}")
    pid = running_pid(files)
    if pid is None:
        raise NetworkError("dnsmasq started but left no pid file")
    return pid


def write_hosts(instances: Sequence[InstanceInterface], files: DnsmasqFiles) -> bool:
    """Rewrite the hosts file if it changed and tell dnsmasq (SIGHUP); returns whether it changed."""
    text = render_hosts(instances)
    try:
        if files.hosts.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    write_atomically(files.hosts, text)
    pid = running_pid(files)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    return True


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
