"""An in-memory network driver honouring the contract, for unit tests and simulated nodes.

It keeps the desired state and answers questions about it the way the real network would:
`dhcp_request(mac)` hands out (and records) the fixed lease, `ingress_allowed(...)` says whether a
new flow to an instance passes its security groups, `may_send(device, mac, ip)` applies the
anti-spoofing rules. With a `state_dir` its instances are kept on disk (`fake-network.json`), so
that tests can count what a killed node controller left wired.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec

from mallee.core.files import write_atomically
from mallee.drivers.network import groups
from mallee.drivers.network.base import (
    GroupRule,
    HostNetwork,
    InstanceInterface,
    Lease,
    NetworkDriver,
    NetworkError,
)
from mallee.drivers.network.state import NodeState


class FakeNetworkDriver(NetworkDriver):
    capabilities = {
        "dhcp": True,
        "security_groups": True,
        "anti_spoofing": True,
        "metadata_redirect": True,
        "elastic_ips": False,
        "real": False,
    }

    def __init__(self, state_dir: Path | None = None) -> None:
        self._state = NodeState()
        self._leases: dict[str, Lease] = {}
        self.applies = 0  # how many times the rules would have been written to the kernel
        self._lock = threading.RLock()  # launches and terminates of a node run in threads of their own
        self._file = state_dir / "fake-network.json" if state_dir is not None else None
        if self._file is not None and self._file.exists():
            for iface in msgspec.json.decode(self._file.read_bytes(), type=list[InstanceInterface]):
                self._state.instances[iface.instance_id] = iface

    def _save(self) -> None:
        if self._file is not None:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self._file, msgspec.json.encode(self._state.sorted_instances()))

    def setup(self, host: HostNetwork) -> None:
        old = self._state.host
        if old is not None and old.bridge != host.bridge:
            raise NetworkError(f"set up for bridge {old.bridge}; tear it down before using {host.bridge}")
        if old != host:
            self._state.host = host
            self.applies += 1

    def teardown(self) -> None:
        with self._lock:
            self._state = NodeState()
            self._leases.clear()
            self._save()

    def add_instance(self, iface: InstanceInterface) -> None:
        with self._lock:
            if self._state.host is None:
                raise NetworkError("the network is not set up on this node")
            if self._state.put_instance(iface):
                self.applies += 1
                self._save()

    def remove_instance(self, instance_id: str) -> None:
        with self._lock:
            gone = self._state.instances.get(instance_id)
            if gone is not None and self._state.drop_instance(instance_id):
                self._leases.pop(gone.mac, None)
                self.applies += 1
                self._save()

    def apply_security_groups(self, rules: list[GroupRule], members: dict[str, list[str]]) -> None:
        if self._state.host is None:
            raise NetworkError("the network is not set up on this node")
        if self._state.set_groups(rules, members):
            self.applies += 1

    def instances(self) -> list[InstanceInterface]:
        return self._state.sorted_instances()

    def leases(self) -> list[Lease]:
        return [self._leases[m] for m in sorted(self._leases)]

    def describe(self) -> dict[str, object]:
        host = self._state.host
        return {
            "driver": "fake",
            "bridge": host.bridge if host else None,
            "address": f"{host.address}/{host.prefix}" if host else None,
            "bridge_exists": host is not None,
            "instances": [i.instance_id for i in self._state.sorted_instances()],
            "groups": self._state.group_ids(),
            "rules": len(self._state.rules),
        }

    # -- what the simulated network would do ----------------------------------------------------

    def dhcp_request(self, mac: str) -> str | None:
        host = self._state.host
        for iface in self._state.instances.values():
            if host is not None and iface.mac == mac:
                lease = Lease(mac, iface.ip, iface.hostname, int(time.time()) + host.lease_seconds)
                self._leases[mac] = lease
                return iface.ip
        return None

    def may_send(self, device: str, mac: str, ip: str) -> bool:
        return any((i.device, i.mac, i.ip) == (device, mac, ip) for i in self._state.instances.values())

    def ingress_allowed(self, src: str, dst: str, protocol: str, port: int, code: int = -1) -> bool:
        return groups.ingress_allowed(self._state.rules, self._state.members, src, dst, protocol, port, code)
