"""The node's bridge through iproute2: created with STP off and no forwarding delay, so a port
forwards as soon as it joins; its address is the subnet's gateway on this node."""

from __future__ import annotations

import json
import subprocess

from mallee.drivers.network.base import HostNetwork, NetworkError

IP = "ip"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def ensure(host: HostNetwork) -> None:
    """Create the bridge if missing, make its only IPv4 address host.address/prefix, bring it up."""
    if not exists(host.bridge):
        _ip("link", "add", host.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    else:
        _ip("link", "set", host.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    wanted = f"{host.address}/{host.prefix}"
    for address in addresses(host.bridge):
        if address != wanted:
            _ip("addr", "del", address, "dev", host.bridge)
    _ip("addr", "replace", wanted, "dev", host.bridge)
    _ip("link", "set", host.bridge, "up")


def addresses(name: str) -> list[str]:
    done = _ip("-j", "addr", "show", "dev", name)
    found = []
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                found.append(f"{info['local']}/{info['prefixlen']}")
    return found


def ports(name: str) -> list[str]:
    """The interfaces attached to bridge `name`."""
    done = _ip("-j", "link", "show", "master", name, check=False)
    if done.returncode != 0:
        return []
    return sorted(link["ifname"] for link in json.loads(done.stdout or "[]"))


def delete(name: str) -> None:
    """Delete the bridge (its ports are detached, not deleted); succeeds when it is missing."""
    if exists(name):
        _ip("link", "del", name)
