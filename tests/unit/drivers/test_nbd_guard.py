"""A TCP export answers its node's address only (drivers/blockstore/nbd_guard.py), with real nftables
and a real qemu-storage-daemon, in a network namespace of the test's own: the SC's host is
192.0.2.1 and the node 192.0.2.10, both on its loopback. The node's address gets the NBD
greeting; the SC's own address (any other host) is dropped; the rule goes with the export, and the
table with the driver's teardown."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(b) for b in ("nft", "ip", "qemu-storage-daemon")),
    reason="needs root, nft, ip and qemu-storage-daemon",
)

PROBE = r"""
import json, socket, subprocess, sys
from pathlib import Path
from mallee.drivers.blockstore import nbd_guard
from mallee.drivers.blockstore.file import FileBlockStore

def sh(*argv):
    subprocess.run(argv, check=True)

sh("ip", "link", "set", "lo", "up")
sh("ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
sh("ip", "addr", "add", "192.0.2.10/32", "dev", "lo")

def greeting(port, source):
    s = socket.socket()
    s.settimeout(1.5)
    s.bind((source, 0))
    try:
        s.connect(("192.0.2.1", port))
        return s.recv(8).decode(errors="replace")
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()

driver = FileBlockStore(Path(sys.argv[1]), host="192.0.2.1")
out = {}
try:
    driver.create("vol-0123456789abcdef0", 1)
    export = driver.export("vol-0123456789abcdef0", "192.0.2.10:8775")
    port = export.endpoints[0].port
    out["endpoint"] = [export.endpoints[0].host, port]
    out["from_node"] = greeting(port, "192.0.2.10")
    out["from_elsewhere"] = greeting(port, "192.0.2.1")
    out["guarded"] = sorted(nbd_guard.ports(nbd_guard.table_for(Path(sys.argv[1]))))
    driver.unexport("vol-0123456789abcdef0")
    out["after_unexport"] = sorted(nbd_guard.ports(nbd_guard.table_for(Path(sys.argv[1]))))
    driver.export("vol-0123456789abcdef0", "192.0.2.10:8775")
finally:
    driver.teardown()
table = nbd_guard.table_for(Path(sys.argv[1]))
listed = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True)
out["table_after_teardown"] = listed.returncode
print(json.dumps(out))
"""


def test_a_tcp_export_admits_its_node_only(short_tmp_path: Path) -> None:
    tmp_path = short_tmp_path  # the export's sockets live under it
    namespace = f"mlg{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE, str(tmp_path / "sc")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    port = out["endpoint"][1]
    assert out["endpoint"][0] == "192.0.2.1"
    assert out["from_node"] == "NBDMAGIC"  # the node gets the NBD server's greeting
    assert out["from_elsewhere"] in ("TimeoutError", "timeout")  # anyone else is dropped
    assert out["guarded"] == [port] and out["after_unexport"] == []
    assert out["table_after_teardown"] != 0  # the table went with the teardown
