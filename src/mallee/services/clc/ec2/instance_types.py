"""Instance types: Eucalyptus' default table, DescribeInstanceTypes, and the administrator's
ModifyInstanceTypeAttribute (euca-modify-instance-type) to change a type's CPU, memory and disk."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters
from mallee.services.clc.paging import page
from mallee.services.clc.tables import InstanceType

# Eucalyptus' default instance types, in its listing order: name, vCPUs, memory MiB, disk GiB.
DEFAULT_TYPES: tuple[tuple[str, int, int, int], ...] = (
    ("t1.micro", 1, 256, 5),
    ("m1.small", 1, 256, 5),
    ("m1.medium", 1, 512, 10),
    ("c1.medium", 2, 512, 10),
    ("m1.large", 2, 512, 10),
    ("m1.xlarge", 2, 1024, 10),
    ("c1.xlarge", 2, 2048, 10),
    ("m2.xlarge", 2, 2048, 10),
    ("m3.xlarge", 4, 2048, 15),
    ("m2.2xlarge", 2, 4096, 30),
    ("m3.2xlarge", 4, 4096, 30),
    ("cc1.4xlarge", 8, 3072, 60),
    ("m2.4xlarge", 8, 4096, 60),
    ("hi1.4xlarge", 8, 6144, 120),
    ("cc2.8xlarge", 16, 6144, 120),
    ("cg1.4xlarge", 16, 12288, 200),
    ("cr1.8xlarge", 16, 16384, 240),
    ("hs1.8xlarge", 48, 119808, 24000),
)


def install_defaults(s: Session) -> None:
    """Create the default types that do not exist yet (an administrator's changes are kept)."""
    for position, (name, cpus, memory, disk) in enumerate(DEFAULT_TYPES):
        if s.get(InstanceType, name) is None:
            s.add(InstanceType(name=name, cpus=cpus, memory_mib=memory, disk_gib=disk, position=position))


def _view(t: InstanceType) -> dict[str, Any]:
    return {
        "InstanceType": t.name,
        "CurrentGeneration": True,
        "FreeTierEligible": t.name == "t1.micro",
        "SupportedUsageClasses": ["on-demand"],
        "SupportedRootDeviceTypes": ["instance-store", "ebs"],
        "SupportedVirtualizationTypes": ["hvm", "paravirtual"],
        "BareMetal": False,
        "Hypervisor": "nitro",
        "ProcessorInfo": {"SupportedArchitectures": ["x86_64"]},
        "VCpuInfo": {"DefaultVCpus": t.cpus, "DefaultCores": t.cpus, "DefaultThreadsPerCore": 1},
        "MemoryInfo": {"SizeInMiB": t.memory_mib},
        "InstanceStorageSupported": True,
        "InstanceStorageInfo": {
            "TotalSizeInGB": t.disk_gib,
            "Disks": [{"SizeInGB": t.disk_gib, "Count": 1, "Type": "hdd"}],
        },
        "EbsInfo": {"EbsOptimizedSupport": "unsupported", "EncryptionSupport": "unsupported"},
        "NetworkInfo": {
            "NetworkPerformance": "Moderate",
            "MaximumNetworkInterfaces": 1,
            "Ipv4AddressesPerInterface": 1,
        },
        "PlacementGroupInfo": {"SupportedStrategies": []},
        "HibernationSupported": False,
        "BurstablePerformanceSupported": False,
        "DedicatedHostsSupported": False,
        "AutoRecoverySupported": False,
    }


_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "instance-type": lambda v: v["InstanceType"],
    "current-generation": lambda v: v["CurrentGeneration"],
    "free-tier-eligible": lambda v: v["FreeTierEligible"],
    "vcpu-info.default-vcpus": lambda v: v["VCpuInfo"]["DefaultVCpus"],
    "vcpu-info.default-cores": lambda v: v["VCpuInfo"]["DefaultCores"],
    "memory-info.size-in-mib": lambda v: v["MemoryInfo"]["SizeInMiB"],
    "instance-storage-supported": lambda v: v["InstanceStorageSupported"],
    "instance-storage-info.total-size-in-gb": lambda v: v["InstanceStorageInfo"]["TotalSizeInGB"],
    "processor-info.supported-architecture": lambda v: v["ProcessorInfo"]["SupportedArchitectures"],
    "supported-root-device-type": lambda v: v["SupportedRootDeviceTypes"],
    "supported-virtualization-type": lambda v: v["SupportedVirtualizationTypes"],
    "supported-usage-class": lambda v: v["SupportedUsageClasses"],
    "bare-metal": lambda v: v["BareMetal"],
    "hypervisor": lambda v: v["Hypervisor"],
}


def all_types(s: Session) -> list[InstanceType]:
    return list(s.scalars(select(InstanceType).order_by(InstanceType.position, InstanceType.name)))


@EC2.operation()
def describe_instance_types(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    types = all_types(ctx.session)
    wanted = p.get("InstanceTypes")
    if wanted:
        known = {t.name for t in types}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise CloudError(
                "InvalidInstanceType",
                f"The following supplied instance types do not exist: [{', '.join(unknown)}]",
            )
        types = [t for t in types if t.name in wanted]
    views = filters.apply([_view(t) for t in types], p.get("Filters"), _FILTERS)
    limit = p.get("MaxResults")
    if limit is not None and not 5 <= limit <= 100:
        raise CloudError("InvalidParameterValue", "MaxResults must be between 5 and 100.")
    chunk, token = page(views, p.get("NextToken"), limit, default=len(views) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {"InstanceTypes": chunk}
    if token:
        out["NextToken"] = token
    return out


@EC2.operation(access="system")
def modify_instance_type_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    name = p["Name"]
    t = ctx.session.get(InstanceType, name)
    if t is None:
        raise CloudError(
            "InvalidInstanceType", f"The following supplied instance types do not exist: [{name}]"
        )
    if p.get("Reset"):
        defaults = {d[0]: d[1:] for d in DEFAULT_TYPES}
        if name in defaults:
            t.cpus, t.memory_mib, t.disk_gib = defaults[name]
        return {"Return": True}
    for member, attr in (("Cpu", "cpus"), ("Memory", "memory_mib"), ("Disk", "disk_gib")):
        if member in p:
            value = p[member]
            if value <= 0:
                raise CloudError("InvalidParameterValue", f"{member} must be a positive number, not {value}.")
            setattr(t, attr, value)
    return {"Return": True}
