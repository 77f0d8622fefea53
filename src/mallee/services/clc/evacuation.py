"""Evacuating a node (`mallee node evacuate`, the EvacuateNode extension): its EBS-backed instances
are stopped and started again on other nodes of its zone, by StopInstances' and StartInstances'
machinery (ec2/instance_power.py). Instance-store ones cannot be stopped (as on AWS) and running
instances are not migrated between hosts, so they are named and left running where they are.

Record, then act: `record` marks each instance (`Instance.evacuating_from`) and records its stop in
the same transaction; the reconciler sends the stop until it arrives, and each of its passes calls
`advance`, which records a start for every evacuated instance that is stopped (the next pass places
it, and the zone's scheduler skips the node, which is in maintenance). The mark goes once the
instance runs again, so a CLC killed anywhere in between finishes the move on its next pass, and an
instance stopped by an evacuation is never left stopped: a start no node has room for leaves it
stopped, and the next pass tries again. A stop its owner asks for ends the evacuation
(`instance_power.stop_instances`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mallee.core.errors import CloudError
from mallee.rpc import cluster
from mallee.rpc.node import InstanceLaunch
from mallee.services.clc import placement
from mallee.services.clc.ec2 import instance_power
from mallee.services.clc.tables import Instance

log = logging.getLogger(__name__)

STOP_REASON = "Server.ScheduledStop: Stopped to move the instance off a node in maintenance"
INSTANCE_STORE = (
    "its root device is instance-store: it cannot be stopped, and Mallee does not migrate running "
    "instances; it keeps running on this node (terminate it, or wait until its owner does)"
)
_GONE = ("stopped", "terminated")


@dataclass
class Evacuation:
    """What `record` decided for a node's instances."""

    moving: list[str] = field(default_factory=list)  # evacuated (now or by an earlier call)
    to_stop: list[str] = field(default_factory=list)  # of those, the ones whose stop it recorded now
    unmovable: dict[str, str] = field(default_factory=dict)  # instance id -> why it stays


def on_node(s: Session, zone: str, node: str, report: cluster.ClusterReport) -> list[Instance]:
    """The instances of the zone that run, or are to run, on `node`: as the CLC recorded them or as
    the zone's cluster reports them (stopped and terminated ones are on no node)."""
    reported = [i for i, seen in report.instances.items() if seen.node == node and seen.state not in _GONE]
    rows = s.scalars(
        select(Instance)
        .where(Instance.zone == zone, or_(Instance.node == node, Instance.id.in_(reported)))
        .order_by(Instance.id)
    )
    return [i for i in rows if i.state not in _GONE]


def record(s: Session, zone: str, node: str, report: cluster.ClusterReport) -> Evacuation:
    """Record the evacuation of `node` (the caller commits, then asks the zone to stop `to_stop`).
    Calling it again is harmless: instances already on their way are reported as moving."""
    out = Evacuation()
    instances = on_node(s, zone, node, report)
    movable = []
    for i in instances:
        if i.evacuating_from == node:
            out.moving.append(i.id)
        elif i.desired != "running":
            continue  # its owner stops or terminates it: it leaves the node anyway
        elif i.root_device_type != "ebs":
            out.unmovable[i.id] = INSTANCE_STORE
        else:
            movable.append(i)
    _check_room(zone, node, movable, report)
    for i in movable:
        placement.stopping(i, "Node maintenance")
        i.state_reason = STOP_REASON
        i.evacuating_from = node
        out.moving.append(i.id)
        out.to_stop.append(i.id)
    out.moving.sort()
    return out


def advance(s: Session) -> None:
    """One reconciler step for every evacuated instance: stopped → a start is recorded (placed by
    the next pass on a node with room); running again, or ended by its owner → done."""
    for i in s.scalars(select(Instance).where(Instance.evacuating_from != "")):
        if i.desired == "terminated" or i.state in ("shutting-down", "terminated"):
            i.evacuating_from = ""
        elif i.state == "stopped":
            try:
                instance_power.record_start(s, i)
            except CloudError as exc:  # e.g. its root volume was detached while it was stopped
                log.warning("%s stays stopped after leaving %s: %s", i.id, i.evacuating_from, exc.message)
                i.evacuating_from = ""
        elif i.state == "running" and i.desired == "running":
            log.info("%s moved off %s to %s", i.id, i.evacuating_from, i.node)
            i.evacuating_from = ""


def _check_room(zone: str, node: str, instances: list[Instance], report: cluster.ClusterReport) -> None:
    """Refuse, before anything is stopped, an evacuation whose instances the zone's other nodes have
    no room for. A rough check (first fit, largest first, from the report just read): the zone's
    scheduler decides where each goes, and a start it has no room for is tried again each pass."""
    free = [n.free for n in report.nodes if n.name != node and n.state == "ENABLED" and not n.maintenance]
    needs = sorted(
        ((i.id, msgspec.json.decode(i.launch, type=InstanceLaunch).needs) for i in instances),
        key=lambda item: (item[1].cores, item[1].memory_mib, item[1].disk_gib),
        reverse=True,
    )
    homeless = []
    for instance_id, need in needs:
        fit = next((k for k, room in enumerate(free) if room.fits(need)), None)
        if fit is None:
            homeless.append(instance_id)
        else:
            free[fit] = free[fit].minus(need)
    if homeless:
        raise CloudError(
            "InsufficientInstanceCapacity",
            f"The other nodes of {zone} have no room for {', '.join(sorted(homeless))}; nothing was "
            "stopped. Take another node out of maintenance or register one, then evacuate again.",
            500,
        )
