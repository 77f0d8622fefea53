"""Who may open a TCP export: the file driver serves a node on another host from a
qemu-storage-daemon of its own on a TCP port, and NBD has no authentication libvirt can use short of
x509 TLS. So the SC's host admits that port from that node's address only: an nftables table of the
driver's own (`inet mallee_sc_<tag>`, one per state directory, so SCs on one host keep apart) with
one drop rule per port — `tcp dport P ip saddr != NODE drop` — made before the daemon listens and
removed when it stops. A node can open only the volumes exported to it; the unix socket of a node on
the same host is guarded by its file mode (group kvm) instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import subprocess
from pathlib import Path

NFT = "nft"


class GuardError(RuntimeError):
    """nftables refused a change (the message says which)."""


def table_for(state_dir: Path) -> str:
    return "mallee_sc_" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


def _nft(*args: str, script: str | None = None) -> str:
    argv = [NFT, *args] if script is None else [NFT, "-f", "-"]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise GuardError(f"nft {' '.join(args) or '-f -'}: {done.stderr.strip()}")
    return done.stdout


def _comment(port: int) -> str:
    return f"nbd-{port}"


def admit_only(table: str, port: int, source: str) -> None:
    """Drop TCP connections to `port` from any address but `source` (idempotent)."""
    family = "ip6" if ipaddress.ip_address(source).version == 6 else "ip"
    forget(table, port)
    rule = f'tcp dport {port} {family} saddr != {source} drop comment "{_comment(port)}"'
    _nft(
        script=(
            f"table inet {table} {{\n"
            "  chain input { type filter hook input priority -5; policy accept; }\n"
            "}\n"
            f"add rule inet {table} input {rule}\n"
        )
    )


def forget(table: str, port: int) -> None:
    """Remove `port`'s rule (none, or no table: nothing to do)."""
    try:
        listing = json.loads(_nft("-j", "-a", "list", "chain", "inet", table, "input"))
    except GuardError:
        return  # no table or chain yet
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("comment") == _comment(port):
            _nft("delete", "rule", "inet", table, "input", "handle", str(rule["handle"]))


def ports(table: str) -> set[int]:
    """The ports the table guards."""
    try:
        listing = json.loads(_nft("-j", "list", "chain", "inet", table, "input"))
    except GuardError:
        return set()
    found = set()
    for item in listing.get("nftables", []):
        comment = (item.get("rule") or {}).get("comment", "")
        if comment.startswith("nbd-"):
            found.add(int(comment[4:]))
    return found


def teardown(table: str) -> None:
    with contextlib.suppress(GuardError):  # not there
        _nft("delete", "table", "inet", table)
