"""DescribeAvailabilityZones: one zone per registered cluster controller (the CLC's own zone, and
each one RegisterCluster added: ec2/services.py), numbered az1, az2, … in registration order.

`--zone-names verbose` answers Eucalyptus-style capacity rows (free / max per instance type) from
what the zone's cluster controller last reported its nodes offer: their resources × the cloud's
`cpu_overcommit` and `memory_overcommit`, the same room it places instances in.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc import components
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters
from mallee.services.clc.tables import Cluster, InstanceType


def registered(s: Session) -> list[Cluster]:
    """The zones in registration order, which their ids follow (a zone keeps its id for good)."""
    return list(s.scalars(select(Cluster).order_by(Cluster.created, Cluster.zone)))


def zone_ids(s: Session, region: str) -> dict[str, str]:
    """Zone name -> zone id (`mallee-1-az1`, …), in registration order."""
    return {c.zone: f"{region}-az{index}" for index, c in enumerate(registered(s), 1)}


def _zone_view(ctx: RequestContext, cluster: Cluster, index: int) -> dict[str, Any]:
    service = components.cluster_service(ctx.session, cluster)
    up = service is not None and components.state_of(service) == "ENABLED"
    return {
        "ZoneName": cluster.zone,
        "ZoneId": f"{ctx.region}-az{index}",
        "State": "available" if up else "unavailable",
        "RegionName": ctx.region,
        "Messages": [] if up else [{"Message": f"cluster controller {cluster.name} is not reporting"}],
        "OptInStatus": "opt-in-not-required",
        "GroupName": ctx.region,
        "NetworkBorderGroup": ctx.region,
        "ZoneType": "availability-zone",
    }


def _capacity_rows(ctx: RequestContext, cluster: Cluster) -> list[dict[str, Any]]:
    """Eucalyptus' verbose listing: per type, how many more instances fit / would fit when empty."""
    service = components.cluster_service(ctx.session, cluster)
    nodes = json.loads(service.detail).get("nodes", []) if service else []
    rows = [
        {"ZoneName": "|- vm types", "State": "free / max   cpu   ram  disk"},
    ]
    for t in ctx.session.scalars(select(InstanceType).order_by(InstanceType.position, InstanceType.name)):
        free = sum(_fits(n.get("free", {}), t) for n in nodes)
        most = sum(_fits(n.get("total", {}), t) for n in nodes)
        rows.append(
            {
                "ZoneName": f"|- {t.name}",
                "State": f"{free:04d} / {most:04d}   {t.cpus}   {t.memory_mib}    {t.disk_gib}",
            }
        )
    return [{**r, "RegionName": ctx.region, "ZoneType": "availability-zone"} for r in rows]


def _fits(resources: dict[str, int], t: InstanceType) -> int:
    limits = [
        resources.get("cores", 0) // t.cpus,
        resources.get("memory_mib", 0) // t.memory_mib,
        resources.get("disk_gib", 0) // t.disk_gib if t.disk_gib else 1 << 30,
    ]
    return max(0, min(limits))


@EC2.operation()
def describe_availability_zones(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    clusters = registered(ctx.session)
    names = list(p.get("ZoneNames", []))
    verbose = "verbose" in names
    names = [n for n in names if n != "verbose"]
    views = [_zone_view(ctx, c, i + 1) for i, c in enumerate(clusters)]
    known = {v["ZoneName"] for v in views}
    missing = [n for n in names if n not in known]
    if missing:
        raise CloudError("InvalidParameterValue", f"The zone '{missing[0]}' does not exist.")
    ids_wanted = p.get("ZoneIds", [])
    views = [
        v
        for v in views
        if (not names or v["ZoneName"] in names) and (not ids_wanted or v["ZoneId"] in ids_wanted)
    ]
    views = filters.apply(
        views,
        p.get("Filters"),
        {
            "zone-name": lambda v: v["ZoneName"],
            "zone-id": lambda v: v["ZoneId"],
            "state": lambda v: v["State"],
            "region-name": lambda v: v["RegionName"],
            "zone-type": lambda v: v["ZoneType"],
            "group-name": lambda v: v["GroupName"],
            "opt-in-status": lambda v: v["OptInStatus"],
            "message": lambda v: [m["Message"] for m in v["Messages"]],
        },
    )
    if verbose:
        by_zone = {c.zone: c for c in clusters}
        expanded: list[dict[str, Any]] = []
        for v in views:
            expanded += [v, *_capacity_rows(ctx, by_zone[v["ZoneName"]])]
        views = expanded
    return {"AvailabilityZones": views}
