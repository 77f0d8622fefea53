"""Network namespaces as stand-ins for instances: a namespace with a veth pair whose host end joins a
bridge. Everything created is removed by `guest()` on exit, also after a failure; processes started in
a namespace are ours (Popen) and are killed by their pid."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# A TCP echo server: prints "ready", then answers each line with "<port>:<line>".
ECHO_SERVER = r"""
import socket, sys, threading
ports = [int(p) for p in sys.argv[1:]]
def serve(conn):
    with conn:
        f = conn.makefile("rwb")
        for line in f:
            f.write(b"%d:" % conn.getsockname()[1] + line)
            f.flush()
def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
for p in ports[1:]:
    threading.Thread(target=listen, args=(p,), daemon=True).start()
print("ready", flush=True)
listen(ports[0])
"""

# A TCP client: connect (1 s), then send each stdin line and print the reply; exit 3 if unreachable.
ECHO_CLIENT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
except OSError as e:
    print("unreachable", e, flush=True)
    sys.exit(3)
print("connected", flush=True)
f = s.makefile("rwb")
for line in sys.stdin.buffer:
    f.write(line)
    f.flush()
    try:
        sys.stdout.buffer.write(f.readline() or b"closed\n")
    except OSError as e:
        print("timeout", e)
    sys.stdout.flush()
"""

HTTP_GET = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())
"""

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
    echo "$ip" > "{out}"
    ;;
esac
exit 0
"""


def suffix() -> str:
    return secrets.token_hex(3)


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {done.returncode}: {done.stderr.strip()}")
    return done


@dataclass
class Guest:
    ns: str
    host_if: str  # the veth end on the bridge (the instance's "tap")
    mac: str
    workdir: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def dhcp(self, timeout: float = 15) -> str | None:
        """Ask for an address with busybox udhcpc; returns the bound IP (None if no answer)."""
        out = self.workdir / f"{self.ns}.lease"
        out.unlink(missing_ok=True)
        script = self.workdir / f"{self.ns}.udhcpc"
        script.write_text(UDHCPC_SCRIPT.format(out=out))
        script.chmod(0o755)
        argv = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", str(script)]
        self.run(*argv, check=False, timeout=timeout)
        return out.read_text().strip() if out.exists() else None

    def echo_server(self, *ports: int) -> subprocess.Popen[str]:
        proc = self.popen(sys.executable, "-c", ECHO_SERVER, *map(str, ports))
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    def connect(self, ip: str, port: int, timeout: float = 1.0) -> subprocess.Popen[str] | None:
        """An open echo-client connection, or None when the connection could not be made."""
        proc = self.popen(sys.executable, "-c", ECHO_CLIENT, ip, str(port), str(timeout))
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "connected":
            proc.wait(timeout=5)
            return None
        return proc

    def can_reach(self, ip: str, port: int, timeout: float = 1.0) -> bool:
        """Connect, exchange one line, close."""
        conn = self.connect(ip, port, timeout)
        if conn is None:
            return False
        reply = exchange(conn, "ping")
        close(conn)
        return reply == f"{port}:ping"

    def http_get(self, url: str, timeout: float = 3.0) -> str | None:
        done = self.run(sys.executable, "-c", HTTP_GET, url, str(timeout), check=False, timeout=timeout + 10)
        return done.stdout.strip() if done.returncode == 0 else None


def exchange(conn: subprocess.Popen[str], line: str) -> str:
    assert conn.stdin is not None and conn.stdout is not None
    conn.stdin.write(line + "\n")
    conn.stdin.flush()
    return conn.stdout.readline().strip()


def close(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def guest(bridge: str | None, mac: str, workdir: Path, *, host_if: str | None = None) -> Iterator[Guest]:
    """A namespace with eth0 (MAC `mac`) whose veth peer (named `host_if`, or at random) is attached
    to `bridge` (None: left unattached and up, for a driver that attaches declared devices)."""
    tag = suffix()
    g = Guest(ns=f"mlns-{tag}", host_if=host_if or f"mlv-{tag}", mac=mac, workdir=workdir)
    try:
        sh("ip", "netns", "add", g.ns)
        sh("ip", "link", "add", g.host_if, "type", "veth", "peer", "name", "eth0", "netns", g.ns)
        sh("ip", "-n", g.ns, "link", "set", "lo", "up")
        sh("ip", "-n", g.ns, "link", "set", "eth0", "address", mac, "up")
        if bridge is None:
            sh("ip", "link", "set", g.host_if, "up")
        else:
            sh("ip", "link", "set", g.host_if, "master", bridge, "up")
        yield g
    finally:
        for proc in g.procs:
            close(proc)
        sh("ip", "link", "del", g.host_if, check=False)
        sh("ip", "netns", "del", g.ns, check=False)
