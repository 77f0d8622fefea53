"""Probes for VPC data-plane tests, run inside netns.Guest namespaces: a TCP server that greets each
connection with its name and the peer address it sees (who answered, and whether NAT rewrote the
source), a client that reports the greeting and its own local address, and a tiny HTTP server
serving on a socket made elsewhere (the metadata listener inside a router namespace)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from support import netns

# Listens on every port given; greets with "<name> <peer ip>", then echoes lines as "<name>:<line>".
WHO_SERVER = r"""
import socket, sys, threading
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
def serve(conn, peer):
    with conn:
        f = conn.makefile("rwb")
        f.write(("%s %s\n" % (name, peer[0])).encode()); f.flush()
        for line in f:
            f.write(name.encode() + b":" + line); f.flush()
def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()
for p in ports[1:]:
    threading.Thread(target=listen, args=(p,), daemon=True).start()
print("ready", flush=True)
listen(ports[0])
"""

# Connects (timeout argv[3], optional source port argv[4]); prints "<local ip> | <greeting>", then
# sends each stdin line and prints the reply. Exit 3 when the connection cannot be made.
WHO_CLIENT = r"""
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
if len(sys.argv) > 4:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[4])))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    f = s.makefile("rwb")
    greeting = f.readline().decode().strip()
except OSError as e:
    print("unreachable", e, flush=True)
    sys.exit(3)
print(s.getsockname()[0], "|", greeting, flush=True)
for line in sys.stdin.buffer:
    try:
        f.write(line); f.flush()
        sys.stdout.buffer.write(f.readline() or b"closed\n")
    except OSError as e:
        print("broken", e)
    sys.stdout.flush()
"""


def serve(guest: netns.Guest, name: str, *ports: int) -> None:
    proc = guest.popen(sys.executable, "-c", WHO_SERVER, name, *map(str, ports))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def hello(guest: netns.Guest, ip: str, port: int, timeout: float = 1.0) -> str | None:
    """Connect, return "<local ip> | <name> <peer ip the server saw>", close; None if unreachable."""
    done = guest.run(
        sys.executable, "-c", WHO_CLIENT, ip, str(port), str(timeout), check=False, timeout=timeout + 10
    )
    return done.stdout.strip() if done.returncode == 0 else None


def greeting(guest: netns.Guest, ip: str, port: int, timeout: float = 1.0) -> str | None:
    """Just "<name> <peer ip the server saw>" (None if unreachable)."""
    answer = hello(guest, ip, port, timeout)
    return answer.split(" | ", 1)[1] if answer else None


def hold(
    guest: netns.Guest, ip: str, port: int, timeout: float = 1.0, sport: int | None = None
) -> subprocess.Popen[str] | None:
    """An open connection (talk to it with netns.exchange), or None when it cannot be made."""
    extra = [str(sport)] if sport is not None else []
    proc = guest.popen(sys.executable, "-c", WHO_CLIENT, ip, str(port), str(timeout), *extra)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    if first.startswith("unreachable") or not first:
        proc.wait(timeout=5)
        return None
    return proc


class _Identify(http.server.BaseHTTPRequestHandler):
    """Answers every GET with "<server name> <caller's IP>"."""

    name = "?"

    def do_GET(self) -> None:  # noqa: N802
        body = f"{self.name} {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_on(sock: socket.socket, name: str) -> Iterator[None]:
    """Serve HTTP on an already listening socket (closed afterwards) from a thread."""
    handler = type("Handler", (_Identify,), {"name": name})
    server = http.server.ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
