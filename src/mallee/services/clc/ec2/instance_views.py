"""How instances look in EC2 answers (DescribeInstances, RunInstances' reservation)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core.context import RequestContext
from mallee.services.clc.ec2 import instance_identity, interfaces, tags
from mallee.services.clc.instance_profile_tables import MetadataOptions, ProfileAssociation
from mallee.services.clc.network_tables import NetworkInterface, SecurityGroup
from mallee.services.clc.tables import Instance
from mallee.services.clc.volume_tables import VolumeAttachment

STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}


def state_view(i: Instance) -> dict[str, Any]:
    """An instance's state as EC2 shows it: code and name."""
    return {"Code": STATE_CODES[i.state], "Name": i.state}


@dataclass(frozen=True)
class Network:
    """What the views show of instances' networks, read once for many instances."""

    interfaces: dict[str, tuple[NetworkInterface, str | None]]  # instance id -> (eni, public ip)
    group_names: dict[str, str]  # group id -> name

    @classmethod
    def of(cls, s: Session, instances: list[Instance]) -> Network:
        found = interfaces.primary(s, [i.id for i in instances])
        group_ids = {g for eni, _ in found.values() for g in json.loads(eni.group_ids or "[]")}
        names = {
            key: value
            for key, value in s.execute(
                select(SecurityGroup.id, SecurityGroup.name).where(SecurityGroup.id.in_(group_ids))
            )
        }
        return cls(found, names)

    def groups(self, i: Instance) -> list[dict[str, str]]:
        eni = self.interfaces.get(i.id, (None, None))[0]
        if eni is None:  # launched on the EDGE network, before VPCs
            return [{"GroupName": g, "GroupId": g} for g in json.loads(i.security_groups or "[]")]
        return self.groups_of(eni)

    def groups_of(self, eni: NetworkInterface) -> list[dict[str, str]]:
        ids = json.loads(eni.group_ids or "[]")
        return [{"GroupName": self.group_names.get(g, g), "GroupId": g} for g in ids]


def public_dns(ip: str, region: str) -> str:
    """AWS's public DNS name of a public address."""
    return f"ec2-{ip.replace('.', '-')}.{region}.compute.amazonaws.com"


def network_interface_view(
    ctx: RequestContext,
    i: Instance | None,
    eni: NetworkInterface,
    public_ip: str | None,
    groups: list[dict[str, str]],
) -> dict[str, Any]:
    private_dns = f"ip-{eni.private_ip.replace('.', '-')}.{ctx.region}.compute.internal"
    address: dict[str, Any] = {
        "Primary": True,
        "PrivateIpAddress": eni.private_ip,
        "PrivateDnsName": private_dns,
    }
    out: dict[str, Any] = {
        "NetworkInterfaceId": eni.id,
        "SubnetId": eni.subnet_id,
        "VpcId": eni.vpc_id,
        "OwnerId": eni.account_id,
        "Status": eni.status,
        "MacAddress": eni.mac,
        "PrivateIpAddress": eni.private_ip,
        "PrivateDnsName": private_dns,
        "SourceDestCheck": eni.source_dest_check,
        "Groups": groups,
        "Description": eni.description,
        "InterfaceType": "interface",
    }
    if i is not None:
        out["Attachment"] = {
            "AttachmentId": "eni-attach-" + eni.id.split("-", 1)[1],
            "InstanceId": i.id,
            "InstanceOwnerId": i.account_id,
            "DeviceIndex": eni.device_index,
            "Status": "attached",
            "AttachTime": i.launch_time,
            "DeleteOnTermination": eni.delete_on_termination,
        }
    if public_ip:
        association = {
            "PublicIp": public_ip,
            "PublicDnsName": public_dns(public_ip, ctx.region),
            "IpOwnerId": "amazon",
        }
        out["Association"] = association
        address["Association"] = association
    out["PrivateIpAddresses"] = [address]
    return out


def block_device_mappings(s: Session, instance_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Instance id -> its attached volumes as BlockDeviceMappings, for many instances in one query."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in instance_ids}
    if instance_ids:
        q = select(VolumeAttachment).where(VolumeAttachment.instance_id.in_(instance_ids))
        for a in s.scalars(q.order_by(VolumeAttachment.attach_time, VolumeAttachment.device)):
            ebs = {
                "AttachTime": a.attach_time,
                "DeleteOnTermination": a.delete_on_termination,
                "Status": a.state,
                "VolumeId": a.volume_id,
            }
            out[a.instance_id].append({"DeviceName": a.device, "Ebs": ebs})
    return out


@dataclass
class Given:
    """What instances' software is given (instance_identity.py), read once for many instances."""

    profiles: dict[str, ProfileAssociation]  # instance id -> its instance profile association
    options: dict[str, MetadataOptions]  # instance id -> its metadata options, when not the defaults

    @classmethod
    def of(cls, s: Session, instance_ids: list[str]) -> Given:
        rows = s.scalars(select(MetadataOptions).where(MetadataOptions.instance_id.in_(instance_ids)))
        return cls(instance_identity.associations_of(s, instance_ids), {o.instance_id: o for o in rows})


def instance_view(
    ctx: RequestContext,
    i: Instance,
    tag_list: list[dict[str, str]] | None = None,
    net: Network | None = None,
    devices: list[dict[str, Any]] | None = None,
    given: Given | None = None,
) -> dict[str, Any]:
    net = net or Network.of(ctx.session, [i])
    if devices is None:
        devices = block_device_mappings(ctx.session, [i.id])[i.id]
    given = given or Given.of(ctx.session, [i.id])
    groups = net.groups(i)
    view: dict[str, Any] = {
        "InstanceId": i.id,
        "ImageId": i.image_id,
        "State": state_view(i),
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
        "RootDeviceType": i.root_device_type,
        "RootDeviceName": i.root_device_name,
        "BlockDeviceMappings": devices,
        "VirtualizationType": "paravirtual" if i.kernel_id else "hvm",
        "Hypervisor": "kvm",
        "SecurityGroups": groups,
        "Tags": tag_list if tag_list is not None else tags.tags_of(ctx.session, [i.id])[i.id],
    }
    if i.private_ip:
        view["PrivateIpAddress"] = i.private_ip
    eni, public_ip = net.interfaces.get(i.id, (None, None))
    if eni is not None:
        view["VpcId"], view["SubnetId"] = eni.vpc_id, eni.subnet_id
        view["SourceDestCheck"] = eni.source_dest_check
        view["NetworkInterfaces"] = [network_interface_view(ctx, i, eni, public_ip, groups)]
    if public_ip:
        view["PublicIpAddress"] = public_ip
        view["PublicDnsName"] = public_dns(public_ip, ctx.region)
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
    profile = given.profiles.get(i.id)
    if profile is not None:
        view["IamInstanceProfile"] = {"Arn": profile.profile_arn, "Id": profile.profile_id}
    view["MetadataOptions"] = instance_identity.options_view(
        given.options.get(i.id, instance_identity.DEFAULTS)
    )
    return view


def instance_views(ctx: RequestContext, instances: list[Instance]) -> dict[str, dict[str, Any]]:
    """Instance id -> its view, for many instances with a few queries in all."""
    all_tags = tags.tags_of(ctx.session, [i.id for i in instances])
    net = Network.of(ctx.session, instances)
    devices = block_device_mappings(ctx.session, [i.id for i in instances])
    given = Given.of(ctx.session, [i.id for i in instances])
    return {i.id: instance_view(ctx, i, all_tags[i.id], net, devices[i.id], given) for i in instances}


def reservation_views(
    ctx: RequestContext, instances: list[Instance], views: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """`views`: the instances' views, when the caller has them already."""
    views = views if views is not None else instance_views(ctx, instances)
    by_reservation: dict[str, list[Instance]] = {}
    for i in instances:
        by_reservation.setdefault(i.reservation_id, []).append(i)
    return [
        {
            "ReservationId": reservation_id,
            "OwnerId": members[0].account_id,
            "Groups": [],  # EC2-Classic's; VPC instances carry their groups themselves
            "Instances": [views[i.id] for i in members],
        }
        for reservation_id, members in by_reservation.items()
    ]
