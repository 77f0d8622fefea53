"""How instances look in EC2 answers (DescribeInstances, RunInstances' reservation)."""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.services.clc.ec2 import tags
from mallee.services.clc.tables import Instance

STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}


def instance_view(
    ctx: RequestContext, i: Instance, tag_list: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    groups = [{"GroupName": g, "GroupId": g} for g in json.loads(i.security_groups or "[]")]
    view: dict[str, Any] = {
        "InstanceId": i.id,
        "ImageId": i.image_id,
        "State": {"Code": STATE_CODES[i.state], "Name": i.state},
        "PrivateDnsName": f"ip-{i.private_ip.replace('.', '-')}.{ctx.region}.compute.internal"
        if i.private_ip
        else "",
        "PublicDnsName": "",
        "StateTransitionReason": i.transition_reason,
        "AmiLaunchIndex": i.launch_index,
        "InstanceType": i.instance_type,
        "LaunchTime": i.launch_time,
        "Placement": {"AvailabilityZone": i.zone, "Tenancy": "default", "GroupName": ""},
        "Monitoring": {"State": "disabled"},
        "Architecture": "x86_64",
        "RootDeviceType": "instance-store",
        "RootDeviceName": "/dev/vda",
        "BlockDeviceMappings": [],
        "VirtualizationType": "paravirtual" if i.kernel_id else "hvm",
        "Hypervisor": "kvm",
        "SecurityGroups": groups,
        "Tags": tag_list if tag_list is not None else tags.tags_of(ctx.session, [i.id])[i.id],
    }
    if i.private_ip:
        view["PrivateIpAddress"] = i.private_ip
    if i.key_name:
        view["KeyName"] = i.key_name
    if i.kernel_id:
        view["KernelId"] = i.kernel_id
    if i.ramdisk_id:
        view["RamdiskId"] = i.ramdisk_id
    if i.client_token:
        view["ClientToken"] = i.client_token
    if i.state_reason and i.state != "running":
        code, _, message = i.state_reason.partition(": ")
        view["StateReason"] = {"Code": code, "Message": message or code}
    return view


def reservation_views(ctx: RequestContext, instances: list[Instance]) -> list[dict[str, Any]]:
    all_tags = tags.tags_of(ctx.session, [i.id for i in instances])
    by_reservation: dict[str, list[Instance]] = {}
    for i in instances:
        by_reservation.setdefault(i.reservation_id, []).append(i)
    views = []
    for reservation_id, members in by_reservation.items():
        groups = [{"GroupName": g, "GroupId": g} for g in json.loads(members[0].security_groups or "[]")]
        views.append(
            {
                "ReservationId": reservation_id,
                "OwnerId": members[0].account_id,
                "Groups": groups,
                "Instances": [instance_view(ctx, i, all_tags[i.id]) for i in members],
            }
        )
    return views
