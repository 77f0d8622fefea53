"""Instances: RunInstances, DescribeInstances, TerminateInstances, RebootInstances, GetConsoleOutput,
Describe/ModifyInstanceAttribute (Stop/Start: instance_power.py; DescribeInstanceStatus:
instance_status.py).

Record, then ask: the CLC commits what the user wants (new instances as `pending`, with their
addresses and launch; `terminated` as the desired state) before it calls the zone's cluster
controller, and never calls it inside a transaction. RunInstances then asks the zone once, so
capacity errors come back at once; `reconcile` moves each instance's recorded state toward what the
cluster reports and repairs whatever a crash or a lost message left undone.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

from sqlalchemy import select

from mallee.core import clock, crashpoints, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import cluster, contract
from mallee.rpc.node import InstanceRef
from mallee.rpc.transport import RpcError
from mallee.services.clc import peers, placement
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import (
    block_devices,
    instance_identity,
    instance_listing,
    interfaces,
    launch,
    volume_attachments,
    volumes,
)
from mallee.services.clc.ec2.instance_views import reservation_views, state_view
from mallee.services.clc.tables import Instance, InstanceType

MAX_USER_DATA = 16 * 1024
DEFAULT_TYPE = "m1.small"


def _user_data(p: dict[str, Any]) -> str:
    raw = p.get("UserData")
    if not raw:
        return ""
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = raw.encode() if isinstance(raw, str) else bytes(raw)
        raw = base64.b64encode(decoded).decode()
    if len(decoded) > MAX_USER_DATA:
        raise CloudError("InvalidParameterValue", f"User data is limited to {MAX_USER_DATA} bytes")
    return str(raw)


def _shutdown_behaviour(value: str) -> str:
    if value not in ("stop", "terminate"):
        raise CloudError(
            "InvalidParameterValue", f"Invalid value '{value}' for InstanceInitiatedShutdownBehavior."
        )
    return value


@EC2.operation()
def run_instances(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s, account_id = ctx.session, ctx.account_id
    assert account_id is not None
    min_count, max_count = int(p.get("MinCount", 1)), int(p.get("MaxCount", 1))
    if min_count < 1 or max_count < min_count:
        raise CloudError("InvalidParameterValue", "MinCount must be ≥ 1 and MaxCount ≥ MinCount")
    token = p.get("ClientToken")
    if token:
        first = s.scalar(
            select(Instance).where(Instance.account_id == account_id, Instance.client_token == token)
        )
        if first is not None:  # idempotent retry: the same reservation again
            same = select(Instance).where(Instance.reservation_id == first.reservation_id)
            return reservation_views(ctx, list(s.scalars(same.order_by(Instance.launch_index))))[0]
    type_name = p.get("InstanceType") or DEFAULT_TYPE
    itype = s.get(InstanceType, type_name)
    if itype is None:
        raise CloudError("InvalidParameterValue", f"Invalid value '{type_name}' for InstanceType.")
    image = launch.resolve_image(ctx, p)
    devices = block_devices.plan(ctx, image.machine, p.get("BlockDeviceMappings"))
    if devices:
        volumes.check_quota(
            s, account_id, len(devices) * max_count, sum(d.size_gib for d in devices) * max_count
        )
    behaviour = _shutdown_behaviour(p.get("InstanceInitiatedShutdownBehavior") or "stop")
    key = launch.resolve_key(ctx, p.get("KeyName"))
    profile = instance_identity.resolve_profile(ctx, p.get("IamInstanceProfile"))
    user_data = _user_data(p)
    asked_zone = (p.get("Placement") or {}).get("AvailabilityZone")
    where = interfaces.place(ctx, p, asked_zone, max_count)
    zone = where.subnet.zone
    client = peers.get().clusters.get(zone)
    if client is None:
        raise CloudError("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
    if devices:
        volumes.check_storage(s, zone, [d.snapshot_id for d in devices if d.snapshot_id])
    reservation_id = ids.resource_id("r")
    now = clock.now()
    records = [
        Instance(
            id=ids.resource_id("i"),
            reservation_id=reservation_id,
            account_id=account_id,
            image_id=image.image_id,
            kernel_id=image.kernel_id,
            ramdisk_id=image.ramdisk_id,
            instance_type=itype.name,
            zone=zone,
            state="pending",
            desired="running",
            state_reason="pending",
            key_name=key.name if key else None,
            user_data=user_data,
            launch_index=index,
            launch_time=now,
            client_token=(token if index == 0 else f"{token}#{index}") if token else None,
            disable_api_termination=bool(p.get("DisableApiTermination")),
            shutdown_behavior=behaviour,
            min_count=min_count,
            root_device_type=image.machine.root_device_type,
            root_device_name=image.machine.root_device_name or "/dev/vda",
        )
        for index in range(max_count)
    ]
    sources = launch.image_sources(image)
    enis = interfaces.attach(s, where, records, peers.get().public_pool)
    s.add_all(records)
    s.flush()
    for record in records:
        if profile is not None:
            instance_identity.associate(s, record.id, profile)
        if p.get("MetadataOptions"):
            instance_identity.set_options(s, record.id, p["MetadataOptions"])
        disks = block_devices.record(s, record, devices, p.get("TagSpecifications"))
        request = launch.launch_request(record, itype, sources, key, where, enis[record.id], disks)
        record.launch = contract.encode(request).decode()
    launch.apply_tags(ctx, records, p.get("TagSpecifications"))
    s.commit()  # record, then ask: a crash from here on is repaired by the reconciler
    crashpoints.reached("clc.run.recorded")
    outcome = placement.ask(client, placement.Request.of(records, min_count))
    crashpoints.reached("clc.run.placed")
    kept = placement.record(s, records, outcome, answered_now=True)
    if outcome.refused:
        s.commit()
        raise CloudError("InsufficientInstanceCapacity", outcome.refused, 500)
    return reservation_views(ctx, kept)[0]


def visible(ctx: RequestContext, instance_ids: list[str] | None) -> list[Instance]:
    q = (
        select(Instance)
        .where(Instance.account_id == ctx.account_id)
        .order_by(Instance.launch_time, Instance.id)
    )
    found = list(ctx.session.scalars(q))
    if instance_ids:
        instance_listing.check_named(instance_ids, {i.id for i in found})
        found = [i for i in found if i.id in instance_ids]
    return found


def named(ctx: RequestContext, instance_ids: list[str]) -> list[Instance]:
    """The instances an operation acts on: at least one, each named (never "all" by omission)."""
    if not instance_ids:
        raise CloudError("MissingParameter", "The request must contain the parameter InstanceId")
    return visible(ctx, instance_ids)


@EC2.operation()
def describe_instances(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    chunk, token = instance_listing.selected_page(ctx, p)  # the page, from a few columns of each
    out: dict[str, Any] = {"Reservations": reservation_views(ctx, chunk)}
    if token:
        out["NextToken"] = token
    return out


@EC2.operation()
def terminate_instances(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = named(ctx, p["InstanceIds"])
    protected = [i.id for i in found if i.disable_api_termination and i.state != "terminated"]
    if protected:
        raise CloudError(
            "OperationNotPermitted",
            f"The instance '{protected[0]}' may not be terminated. Modify its 'disableApiTermination' "
            "instance attribute and try again.",
        )
    changes = []
    to_stop: dict[str, list[str]] = {}
    for i in found:
        before = state_view(i)
        if i.state not in ("shutting-down", "terminated"):
            placement.shutting_down(i)
            to_stop.setdefault(i.zone, []).append(i.id)
        changes.append(
            {
                "InstanceId": i.id,
                "PreviousState": before,
                "CurrentState": state_view(i),
            }
        )
    ctx.session.commit()  # record, then ask
    crashpoints.reached("clc.terminate.recorded")
    for zone, instance_ids in to_stop.items():
        # Recorded as desired either way; the reconciler retries until the cluster confirms.
        with contextlib.suppress(OSError, RpcError, KeyError):
            peers.get().clusters[zone].call(
                cluster.TERMINATE_INSTANCES, cluster.InstanceIds(instance_ids=instance_ids)
            )
    return {"TerminatingInstances": changes}


@EC2.operation()
def reboot_instances(ctx: RequestContext, p: dict[str, Any]) -> None:
    found = named(ctx, p["InstanceIds"])
    by_zone: dict[str, list[str]] = {}
    for i in found:
        if i.state == "running":
            by_zone.setdefault(i.zone, []).append(i.id)
    ctx.session.commit()  # no rpc inside a transaction
    for zone, instance_ids in by_zone.items():
        try:
            peers.get().clusters[zone].call(
                cluster.REBOOT_INSTANCES, cluster.InstanceIds(instance_ids=instance_ids)
            )
        except (OSError, RpcError, KeyError) as exc:
            raise CloudError("InternalError", f"The zone {zone} did not answer: {exc}") from exc
    return None


@EC2.operation()
def get_console_output(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    instance = visible(ctx, [p["InstanceId"]])[0]
    output = ""
    ctx.session.commit()  # no rpc inside a transaction
    # AWS answers with no output rather than an error when it has none yet.
    with contextlib.suppress(OSError, RpcError, KeyError):
        answer = (
            peers.get()
            .clusters[instance.zone]
            .call(cluster.CONSOLE_OUTPUT, InstanceRef(instance_id=instance.id))
        )
        output = answer.output
    return {"InstanceId": instance.id, "Timestamp": clock.now(), "Output": output}


@EC2.operation()
def describe_instance_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    i = visible(ctx, [p["InstanceId"]])[0]
    attribute = p["Attribute"]
    values: dict[str, Any] = {
        "instanceType": {"InstanceType": {"Value": i.instance_type}},
        "kernel": {"KernelId": {"Value": i.kernel_id or ""}},
        "ramdisk": {"RamdiskId": {"Value": i.ramdisk_id or ""}},
        "userData": {"UserData": {"Value": i.user_data}},
        "disableApiTermination": {"DisableApiTermination": {"Value": i.disable_api_termination}},
        "instanceInitiatedShutdownBehavior": {
            "InstanceInitiatedShutdownBehavior": {"Value": i.shutdown_behavior}
        },
        "rootDeviceName": {"RootDeviceName": {"Value": i.root_device_name}},
        "groupSet": {"Groups": [{"GroupId": "default"}]},
    }
    if attribute not in values:
        raise CloudError("InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid.")
    return {"InstanceId": i.id, **values[attribute]}


@EC2.operation()
def modify_instance_attribute(ctx: RequestContext, p: dict[str, Any]) -> None:
    i = visible(ctx, [p["InstanceId"]])[0]
    if "DisableApiTermination" in p:
        i.disable_api_termination = bool(p["DisableApiTermination"]["Value"])
    elif p.get("Attribute") == "disableApiTermination" and "Value" in p:
        i.disable_api_termination = str(p["Value"]).lower() == "true"
    elif "InstanceInitiatedShutdownBehavior" in p:
        i.shutdown_behavior = _shutdown_behaviour(p["InstanceInitiatedShutdownBehavior"]["Value"])
    elif p.get("Groups") or p.get("Attribute") == "groupSet":
        interfaces.set_groups(ctx, i, p.get("Groups") or [])  # nodes hear of it at once
    elif p.get("BlockDeviceMappings"):  # DeleteOnTermination of attached volumes
        volume_attachments.set_delete_on_termination(ctx, i, p["BlockDeviceMappings"])
    elif "SourceDestCheck" in p:
        raise CloudError("UnsupportedOperation", "Mallee does not support SourceDestCheck changes yet.")
    elif any(k in p for k in ("InstanceType", "UserData", "Kernel", "Ramdisk")):
        _modify_stopped(ctx, i, p)
    else:
        raise CloudError("InvalidParameterCombination", "No attribute to modify was given.")
    return None


def _modify_stopped(ctx: RequestContext, i: Instance, p: dict[str, Any]) -> None:
    """InstanceType and UserData change only while the instance is stopped; its next start uses them."""
    if i.state != "stopped":
        raise CloudError("IncorrectInstanceState", f"The instance '{i.id}' is not in the 'stopped' state.")
    if "Kernel" in p or "Ramdisk" in p:
        raise CloudError(
            "UnsupportedOperation", "Mallee does not support changing an instance's kernel or ramdisk."
        )
    if "InstanceType" in p:
        name = p["InstanceType"]["Value"]
        if ctx.session.get(InstanceType, name) is None:
            raise CloudError("InvalidInstanceAttributeValue", f"The instance type '{name}' is not supported.")
        i.instance_type = name
    if "UserData" in p:
        value = p["UserData"].get("Value") or b""
        raw = base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)
        i.user_data = _user_data({"UserData": raw})
