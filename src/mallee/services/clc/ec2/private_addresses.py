"""Private addresses: the CLC hands each new instance an IP from its zone's subnet and a MAC, and
records them with the instance before any component hears of it, so a crash or a restarted cluster
controller can never hand one out twice. An address is in use while its instance is not
`terminated` (the CLC records `terminated` only once no node runs the instance)."""

from __future__ import annotations

import ipaddress
import itertools

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import ids
from mallee.core.errors import CloudError
from mallee.db.session import hold_write_lock
from mallee.services.clc.tables import Instance


def allocate(s: Session, zone: str, subnet: str, records: list[Instance]) -> None:
    """Give each of `records` (new, not yet added) a free private IP and MAC of `zone`; an id whose
    MAC a live instance has is replaced by a new id. Holds the zone's address lock until commit."""
    hold_write_lock(s, [f"private-addresses:{zone}"])
    live = select(Instance.private_ip, Instance.mac).where(
        Instance.zone == zone, Instance.state != "terminated"
    )
    rows = s.execute(live).all()
    used_ips = {ip for ip, _ in rows}
    used_macs = {mac for _, mac in rows}
    # The subnet's first host address is each node bridge's gateway.
    hosts = itertools.islice(ipaddress.ip_network(subnet).hosts(), 1, None)
    free = (str(h) for h in hosts if str(h) not in used_ips)
    for record in records:
        ip = next(free, None)
        if ip is None:
            raise CloudError(
                "InsufficientFreeAddressesInSubnet", "No private addresses are left in the zone's subnet."
            )
        while ids.mac_for(record.id) in used_macs:
            record.id = ids.resource_id("i")
        record.private_ip, record.mac = ip, ids.mac_for(record.id)
        used_macs.add(record.mac)
