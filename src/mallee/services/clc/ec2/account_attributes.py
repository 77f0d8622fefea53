"""DescribeAccountAttributes: what EC2 allows this account (Eucalyptus EDGE networking is
EC2-Classic-like: no default VPC)."""

from __future__ import annotations

from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2

ATTRIBUTES: dict[str, list[str]] = {
    "supported-platforms": ["EC2"],
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
    return {
        "AccountAttributes": [
            {"AttributeName": n, "AttributeValues": [{"AttributeValue": v} for v in ATTRIBUTES[n]]}
            for n in names
        ]
    }
