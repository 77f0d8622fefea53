"""DescribeNetworkInterfaces: instances' primary interfaces (made and deleted with them); creating,
attaching and detaching interfaces of one's own is refused by name until Mallee supports more than
one interface per instance."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources, tags, vpcs
from mallee.services.clc.ec2.instance_views import Network, network_interface_view
from mallee.services.clc.network_tables import NetworkInterface
from mallee.services.clc.tables import Instance

_FILTERS: dict[str, Any] = {
    "network-interface-id": lambda v: v["NetworkInterfaceId"],
    "subnet-id": lambda v: v["SubnetId"],
    "vpc-id": lambda v: v["VpcId"],
    "availability-zone": lambda v: v["AvailabilityZone"],
    "mac-address": lambda v: v["MacAddress"],
    "private-ip-address": lambda v: v["PrivateIpAddress"],
    "addresses.private-ip-address": lambda v: [a["PrivateIpAddress"] for a in v["PrivateIpAddresses"]],
    "association.public-ip": lambda v: (v.get("Association") or {}).get("PublicIp"),
    "attachment.instance-id": lambda v: (v.get("Attachment") or {}).get("InstanceId"),
    "group-id": lambda v: [g["GroupId"] for g in v["Groups"]],
    "group-name": lambda v: [g["GroupName"] for g in v["Groups"]],
    "owner-id": lambda v: v["OwnerId"],
    "status": lambda v: v["Status"],
    "description": lambda v: v["Description"],
}


@EC2.operation()
def describe_network_interfaces(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    vpcs.ensure_default(ctx)
    s = ctx.session
    wanted = p.get("NetworkInterfaceIds")
    resources.named(ctx, NetworkInterface, wanted, "eni", "InvalidNetworkInterfaceID.NotFound")
    q = (
        select(NetworkInterface)
        .where(NetworkInterface.account_id == ctx.account_id)
        .order_by(NetworkInterface.id)
    )
    if wanted:
        q = q.where(NetworkInterface.id.in_(wanted))
    rows = list(s.scalars(q))
    instances = {
        i.id: i
        for i in s.scalars(
            select(Instance).where(Instance.id.in_([r.instance_id for r in rows if r.instance_id]))
        )
    }
    net = Network.of(s, list(instances.values()))
    views = []
    for eni in rows:
        instance = instances.get(eni.instance_id or "")
        public_ip = net.interfaces.get(eni.instance_id or "", (None, None))[1]
        view = network_interface_view(ctx, instance, eni, public_ip, net.groups_of(eni))
        view["AvailabilityZone"] = instance.zone if instance else ""
        views.append(view)
    tag_map = tags.tags_of(s, [r.id for r in rows])
    for view in views:
        view["TagSet"] = tag_map[view["NetworkInterfaceId"]]
    return resources.one_page(
        p, tags.with_tag_filters(views, p.get("Filters"), _FILTERS), "NetworkInterfaces"
    )


@EC2.operation()
def create_network_interface(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    raise CloudError(
        "UnsupportedOperation", "Mallee gives each instance one interface, made with it, for now."
    )
