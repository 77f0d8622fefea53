"""DescribeAccountAttributes: what EC2 allows this account: VPC only (EC2-Classic is gone), and
its default VPC."""

from __future__ import annotations

from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import vpcs

ATTRIBUTES: dict[str, list[str]] = {
    "supported-platforms": ["VPC"],
    "default-vpc": ["none"],
    "max-instances": ["20"],
    "max-elastic-ips": ["5"],
    "vpc-max-elastic-ips": ["5"],
    "vpc-max-security-groups-per-interface": ["5"],
}


@EC2.operation()
def describe_account_attributes(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    names = p.get("AttributeNames") or list(ATTRIBUTES)
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise CloudError("InvalidParameterValue", f"Invalid attribute name: {unknown[0]}")
    vpc = vpcs.ensure_default(ctx)
    values = {**ATTRIBUTES, "default-vpc": [vpc.id if vpc is not None else "none"]}
    return {
        "AccountAttributes": [
            {"AttributeName": n, "AttributeValues": [{"AttributeValue": v} for v in values[n]]} for n in names
        ]
    }
