"""DescribeInstanceStatus: EC2's two status checks, from what the zones' cluster controllers last
said of their nodes.

The system check is the host's: a running instance whose node does not answer its cluster is
`impaired` (reachability `failed`, `ImpairedSince` the moment the cluster first missed the node), and
so is its instance check — nothing can reach the guest while its host is away. Once the node answers
again both are `ok`. A zone whose cluster controller is not reporting gives `insufficient-data`: the
CLC does not know. Instances that are not running are `not-applicable`, as on AWS. No instance has
scheduled events here (the event filters match nothing).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc import components
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters
from mallee.services.clc.ec2.instance_views import state_view
from mallee.services.clc.ec2.instances import visible
from mallee.services.clc.paging import page
from mallee.services.clc.tables import Cluster, Instance


@dataclass(frozen=True)
class Health:
    """One node's health as its zone's cluster last reported it."""

    status: str  # ok | impaired | insufficient-data
    since: _dt.datetime | None = None  # when it became impaired


UNKNOWN = Health("insufficient-data")


def node_health(ctx: RequestContext) -> dict[str, dict[str, Health]]:
    """zone -> node name -> health, for every zone whose cluster controller is reporting."""
    out: dict[str, dict[str, Health]] = {}
    for cluster in ctx.session.scalars(select(Cluster)):
        service = components.cluster_service(ctx.session, cluster)
        if service is None or components.state_of(service) != "ENABLED":
            continue
        nodes = json.loads(service.detail or "{}").get("nodes", [])
        out[cluster.zone] = {n["name"]: _health(n) for n in nodes}
    return out


def _health(node: dict[str, Any]) -> Health:
    if node.get("state") == "ENABLED":
        return Health("ok")
    since = node.get("unreachable_since") or 0
    when = _dt.datetime.fromtimestamp(since, _dt.UTC) if since else None
    return Health("impaired", when)


def _check(health: Health) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "Name": "reachability",
        "Status": {"ok": "passed", "impaired": "failed"}.get(health.status, health.status),
    }
    if health.since is not None:
        detail["ImpairedSince"] = health.since
    return {"Status": health.status, "Details": [detail]}


def _view(i: Instance, zones: dict[str, dict[str, Health]]) -> dict[str, Any]:
    if i.state != "running":
        health = Health("not-applicable")
    elif i.zone not in zones:
        health = UNKNOWN
    else:
        health = zones[i.zone].get(i.node or "", UNKNOWN)
    return {
        "InstanceId": i.id,
        "AvailabilityZone": i.zone,
        "InstanceState": state_view(i),
        "InstanceStatus": _check(health),
        "SystemStatus": _check(health),
        "Events": [],
    }


def _none(_: dict[str, Any]) -> list[str]:
    return []  # no instance here has scheduled events


def _reachability(key: str) -> filters.Getter[dict[str, Any]]:
    return lambda v: [d["Status"] for d in v[key]["Details"] if d["Name"] == "reachability"]


_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "availability-zone": lambda v: v["AvailabilityZone"],
    "event.code": _none,
    "event.description": _none,
    "event.instance-event-id": _none,
    "event.not-after": _none,
    "event.not-before": _none,
    "event.not-before-deadline": _none,
    "instance-state-code": lambda v: v["InstanceState"]["Code"],
    "instance-state-name": lambda v: v["InstanceState"]["Name"],
    "instance-status.reachability": _reachability("InstanceStatus"),
    "instance-status.status": lambda v: v["InstanceStatus"]["Status"],
    "system-status.reachability": _reachability("SystemStatus"),
    "system-status.status": lambda v: v["SystemStatus"]["Status"],
}


@EC2.operation()
def describe_instance_status(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    limit = p.get("MaxResults")
    if limit is not None:
        if p.get("InstanceIds"):
            raise CloudError(
                "InvalidParameterCombination",
                "The parameter instancesSet cannot be used with the parameter maxResults",
            )
        if not 5 <= limit <= 1000:
            raise CloudError("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    found = visible(ctx, p.get("InstanceIds"))
    if not p.get("IncludeAllInstances"):
        found = [i for i in found if i.state == "running"]
    zones = node_health(ctx) if found else {}
    views = filters.apply([_view(i, zones) for i in found], p.get("Filters"), _FILTERS)
    chunk, token = page(views, p.get("NextToken"), limit, default=len(views) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {"InstanceStatuses": chunk}
    if token:
        out["NextToken"] = token
    return out
