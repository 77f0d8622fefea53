"""Administrator extensions about the cloud's components: DescribeServices (euca-describe-services,
what `mallee status` shows) and RegisterNode (euca_conf --register-nodes, `mallee node register`)."""

from __future__ import annotations

import json
import re
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import cluster
from mallee.rpc.transport import RpcError
from mallee.services.clc import components, peers
from mallee.services.clc.apis import EC2

DEFAULT_NODE_PORT = 8775  # a node controller's port with the default port_base
# RFC 1123 host names (IPv4 addresses among them): dot-separated labels of letters, digits and
# inner hyphens, 253 bytes at most.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


@EC2.operation(access="system")
def describe_services(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    wanted = set(p.get("ServiceName", []))
    out = []
    for row in components.all_services(ctx.session):
        if wanted and row.name not in wanted and row.type not in wanted:
            continue
        item: dict[str, Any] = {
            "ServiceType": row.type,
            "ServiceName": row.name,
            "Partition": row.partition,
            "Host": row.host,
            "Port": row.port,
            "State": components.state_of(row),
            "Version": row.version,
            "Detail": row.detail or json.dumps({}),
        }
        if row.last_seen:
            item["LastSeen"] = row.last_seen
        out.append(item)
    return {"ServiceStatuses": out}


@EC2.operation(access="system")
def register_node(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    clusters = peers.get().clusters
    zone = p.get("Zone") or next(iter(sorted(clusters)), "")
    client = clusters.get(zone)
    if client is None:
        raise CloudError("InvalidParameterValue", f"No cluster controller serves the zone '{zone}'.")
    port = int(p.get("Port") or DEFAULT_NODE_PORT)
    host = p["Host"]
    if not _HOST_NAME.fullmatch(host):  # the cluster keeps it and polls it for good: it must name a host
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({host[:300]}) for parameter Host is invalid: not a host name or IP address.",
        )
    if not 1 <= port <= 65535:
        raise CloudError("InvalidParameterValue", f"Value ({port}) for parameter Port is invalid.")
    try:
        client.call(cluster.REGISTER_NODE, cluster.RegisterNode(host=host, port=port))
    except (OSError, RpcError) as exc:
        raise CloudError(
            "ServiceUnavailable", f"The cluster controller of {zone} did not answer: {exc}", 503
        ) from exc
    return {"Return": True}
