"""StopInstances and StartInstances, for EBS-backed instances (their root is a volume).

Record, then ask, as for launches: a stop records `desired=stopped` (`stopping`) and then asks the
zone; the node shuts the VM down (ACPI, then off after a timeout; at once with Force) and forgets
it, and the reconciler records `stopped` once no node has it. The instance keeps its volumes (still
attached), its private address, interface and public address. A start records a fresh launch
(`pending`, new LaunchTime, the current instance type, the volumes attached now, new image URLs),
asks the zone once — no room is `InsufficientInstanceCapacity` and the instance stays stopped — and
may land on another node than before; its volumes follow it there (volume_reconcile.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
from sqlalchemy.orm import Session

from mallee.core import clock, crashpoints
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import cluster, contract
from mallee.rpc.node import InstanceLaunch
from mallee.rpc.transport import RpcError
from mallee.services.clc import peers, placement
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import block_devices, launch
from mallee.services.clc.ec2.instance_views import state_view
from mallee.services.clc.ec2.instances import named
from mallee.services.clc.tables import Instance, InstanceType


def _ebs_only(found: list[Instance]) -> None:
    for i in found:
        if i.root_device_type != "ebs":
            raise CloudError(
                "UnsupportedOperation",
                f"The instance '{i.id}' does not have an 'ebs' root device type and cannot be stopped.",
            )


def ask_to_stop(instance_ids_by_zone: dict[str, list[str]], force: bool = False) -> None:
    """Ask each zone to stop its instances (outside any transaction); what is not delivered now the
    reconciler asks again."""
    for zone, instance_ids in instance_ids_by_zone.items():
        with contextlib.suppress(OSError, RpcError, KeyError):
            peers.get().clusters[zone].call(
                cluster.STOP_INSTANCES, cluster.StopInstances(instance_ids=instance_ids, force=force)
            )


@EC2.operation()
def stop_instances(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("Hibernate"):
        raise CloudError("UnsupportedOperation", "Mallee does not support hibernation.")
    found = named(ctx, p["InstanceIds"])
    _ebs_only(found)
    changes: list[dict[str, Any]] = []
    by_zone: dict[str, list[str]] = {}
    for i in found:
        if i.state in ("shutting-down", "terminated"):
            raise CloudError(
                "IncorrectInstanceState",
                f"The instance '{i.id}' is not in a state from which it can be stopped.",
            )
        before = state_view(i)
        i.evacuating_from = ""  # its owner's stop ends an evacuation (evacuation.py): it stays stopped
        if i.state != "stopped":
            placement.stopping(i)
            by_zone.setdefault(i.zone, []).append(i.id)
        changes.append({"InstanceId": i.id, "PreviousState": before, "CurrentState": state_view(i)})
    ctx.session.commit()  # record, then ask
    crashpoints.reached("clc.stop.recorded")
    ask_to_stop(by_zone, bool(p.get("Force")))
    return {"StoppingInstances": changes}


def record_start(s: Session, i: Instance) -> None:
    """Record the stopped instance as pending with a fresh launch (placed by whoever asks next)."""
    itype = s.get(InstanceType, i.instance_type)
    if itype is None:
        raise CloudError("InvalidParameterValue", f"Invalid value '{i.instance_type}' for InstanceType.")
    volumes = block_devices.launch_volumes(s, i)
    if not any(v.target == block_devices.ROOT_TARGET for v in volumes):
        raise CloudError(
            "IncorrectInstanceState",
            f"The instance '{i.id}' has no volume at its root device {i.root_device_name}: attach one first.",
        )
    recorded = msgspec.json.decode(i.launch, type=InstanceLaunch)
    fresh = msgspec.structs.replace(
        recorded,
        instance_type=launch.node_type(itype),
        image=launch.boot_sources(s, i),
        block_devices=volumes,
        user_data=i.user_data,
    )
    i.launch = contract.encode(fresh).decode()
    i.state, i.desired, i.node = "pending", "running", ""
    i.state_reason = "pending"
    i.launch_time = clock.now()


@EC2.operation()
def start_instances(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = named(ctx, p["InstanceIds"])
    _ebs_only(found)
    changes, started = [], []
    for i in found:
        if i.state in ("stopping", "shutting-down", "terminated"):
            raise CloudError(
                "IncorrectInstanceState",
                f"The instance '{i.id}' is not in a state from which it can be started.",
            )
        before = state_view(i)
        if i.state == "stopped":
            record_start(ctx.session, i)
            started.append(i)
        changes.append({"InstanceId": i.id, "PreviousState": before, "CurrentState": state_view(i)})
    ctx.session.commit()  # record, then ask
    crashpoints.reached("clc.start.recorded")
    by_zone: dict[str, list[Instance]] = {}
    for i in started:
        by_zone.setdefault(i.zone, []).append(i)
    for zone, records in by_zone.items():
        client = peers.get().clusters.get(zone)
        if client is None:
            continue
        outcome = placement.ask(client, placement.Request.of(records, len(records)))
        if outcome.refused:
            for r in records:
                placement.stopped(r, f"{placement.CAPACITY}: {outcome.refused}")
            ctx.session.commit()
            raise CloudError("InsufficientInstanceCapacity", outcome.refused, 500)
        placement.record(ctx.session, records, outcome, answered_now=False)
    return {"StartingInstances": changes}
