"""The zone's private addresses: one IP per instance from the zone's subnet, and a MAC derived from
the instance id (Eucalyptus' d0:0d:… convention), both stable for the instance's life."""

from __future__ import annotations

import ipaddress
import threading

from mallee.core.errors import CloudError


def mac_for(instance_id: str) -> str:
    digits = instance_id.split("-", 1)[1][-8:].rjust(8, "0")
    return "d0:0d:" + ":".join(digits[i : i + 2] for i in range(0, 8, 2))


class AddressPool:
    """Private IPs of the zone's subnet. The first host address is each node bridge's gateway."""

    def __init__(self, subnet: str) -> None:
        self.network = ipaddress.ip_network(subnet)
        hosts = list(self.network.hosts())
        self.gateway = str(hosts[0])
        self._free = [str(h) for h in hosts[1:]]
        self._owner: dict[str, str] = {}  # ip -> instance id
        self._lock = threading.Lock()

    def allocate(self, instance_id: str) -> str:
        with self._lock:
            for ip, owner in self._owner.items():
                if owner == instance_id:
                    return ip  # idempotent
            for ip in self._free:
                if ip not in self._owner:
                    self._owner[ip] = instance_id
                    return ip
        raise CloudError(
            "InsufficientFreeAddressesInSubnet", "No private addresses are left in the zone's subnet."
        )

    def claim(self, ip: str, instance_id: str) -> None:
        """Record an address a node reports in use (rebuilding state after a CC restart)."""
        with self._lock:
            self._owner[ip] = instance_id

    def release(self, instance_id: str) -> None:
        with self._lock:
            for ip in [ip for ip, owner in self._owner.items() if owner == instance_id]:
                del self._owner[ip]
