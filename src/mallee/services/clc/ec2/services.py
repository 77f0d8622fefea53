"""DescribeServices (euca-describe-services): the registered components and their state.
An administrator's extension; `mallee status` calls it."""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.services.clc import components
from mallee.services.clc.apis import EC2


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
