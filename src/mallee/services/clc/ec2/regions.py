"""DescribeRegions: the one region this cloud is, at the endpoint the client used."""

from __future__ import annotations

from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters


def endpoint_of(ctx: RequestContext) -> str:
    host = ctx.request.headers.get("host") or "localhost:8773"
    return f"http://{host}"


@EC2.operation()
def describe_regions(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    region = {"RegionName": ctx.region, "Endpoint": endpoint_of(ctx), "OptInStatus": "opt-in-not-required"}
    for name in p.get("RegionNames", []):
        if name != ctx.region:
            raise CloudError("InvalidParameterValue", f"Invalid region: {name}")
    regions = filters.apply(
        [region],
        p.get("Filters"),
        {
            "endpoint": lambda r: r["Endpoint"],
            "region-name": lambda r: r["RegionName"],
            "opt-in-status": lambda r: r["OptInStatus"],
        },
    )
    return {"Regions": regions}
