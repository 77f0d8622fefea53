"""Imports every handler module of the CLC so their operations register in `apis`."""

from __future__ import annotations

from mallee.services.clc import sts  # noqa: F401
from mallee.services.clc.apis import EC2, IAM, STS
from mallee.services.clc.ec2 import (  # noqa: F401
    account_attributes,
    addresses,
    ebs_images,
    images,
    instance_identity,
    instance_power,
    instance_status,
    instance_types,
    instances,
    internet_gateways,
    keypairs,
    network_interfaces,
    regions,
    route_tables,
    security_groups,
    services,
    snapshot_attributes,
    snapshot_imports,
    snapshots,
    subnets,
    tags,
    volume_attachments,
    volume_modifications,
    volumes,
    vpcs,
    zones,
)
from mallee.services.clc.iam import (  # noqa: F401
    access_keys,
    accounts,
    groups,
    instance_profiles,
    login_profiles,
    password_policy,
    policies,
    roles,
    users,
)

REGISTRIES = {"ec2": EC2, "iam": IAM, "sts": STS}
