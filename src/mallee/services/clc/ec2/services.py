"""Administrator extensions about the cloud's components: DescribeServices (euca-describe-services,
what `mallee status` shows), RegisterCluster (euca_conf --register-cluster: a zone and its cluster
controller, `mallee cluster register`), RegisterStorageController (euca_conf --register-sc: a zone's
storage controller, `mallee storage register`) and the node controllers of the zones' clusters
(`mallee node`): RegisterNode (euca_conf --register-nodes), DescribeNodes, ModifyNodeMaintenance,
EvacuateNode (euserv-migrate-instances, for EBS-backed instances: evacuation.py) and DeregisterNode.

Zones are the CLC's (the `clusters` table, which `peers.ClusterRegistry` reads; their storage
controllers the `storage_controllers` table, which `peers.StorageRegistry` reads): only the
administrator makes one, so a component that merely heartbeats with the deployment key cannot. Nodes
are the clusters' (each CC keeps its own in `cc-nodes.json`), so these ask the CCs and record
nothing, except EvacuateNode, which records each instance's move before it asks anyone."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mallee.core import clock, crashpoints
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import cluster, storage
from mallee.rpc.contract import Empty, Message, Ok, Operation
from mallee.rpc.node import Resources
from mallee.rpc.transport import Client, RpcError
from mallee.services.clc import components, evacuation, peers
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import instance_power
from mallee.services.clc.tables import Cluster, ServiceRecord, StorageController

DEFAULT_NODE_PORT = 8775  # a node controller's port with the default port_base
DEFAULT_CLUSTER_PORT = 8774  # a cluster controller's
DEFAULT_STORAGE_PORT = 8776  # a storage controller's
# Zone names as AWS spells them (us-east-1a): lower-case letters, digits and inner hyphens.
_ZONE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
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
def register_cluster(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    """Add the zone `Zone`, served by the cluster controller at Host:Port, which must answer (with
    the deployment key) before the zone exists: zones cannot be deregistered, so a mistyped
    address must not make one. Registering a zone again at the same address changes nothing."""
    _register(ctx, p, _CLUSTER)
    return {"Return": True}


@EC2.operation(access="system")
def register_storage_controller(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    """Give the registered zone `Zone` the storage controller at Host:Port (euca_conf
    --register-sc), checked as RegisterCluster checks a cluster controller: it must answer, and
    must not heartbeat as another zone's. Its volumes and snapshots are then the zone's."""
    _register(ctx, p, _STORAGE)
    return {"Return": True}


@dataclass(frozen=True)
class _Kind:
    """A kind of zone controller the administrator registers, one per zone."""

    table: type[Cluster] | type[StorageController]
    type: str  # as it heartbeats (ServiceRecord.type), its partition being its zone
    title: str
    prefix: str  # of its name: cluster-mallee-1a, sc-mallee-1a
    default_port: int
    describe: Operation[Empty, Any]  # what it must answer before it is recorded


_CLUSTER = _Kind(Cluster, "cc", "cluster controller", "cluster-", DEFAULT_CLUSTER_PORT, cluster.DESCRIBE)
_STORAGE = _Kind(StorageController, "sc", "storage controller", "sc-", DEFAULT_STORAGE_PORT, storage.DESCRIBE)


def _register(ctx: RequestContext, p: dict[str, Any], kind: _Kind) -> None:
    """Record `kind`'s controller of the zone `Zone` at Host:Port, once it answered: refused when
    the zone has another already, the address serves another zone, or it heartbeats as another."""
    zone, host = p["Zone"], p["Host"]
    port = int(p["Port"]) if p.get("Port") is not None else kind.default_port
    if not _ZONE_NAME.fullmatch(zone):
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({zone[:100]}) for parameter Zone is invalid: lower-case letters, digits and "
            "hyphens, 64 at most.",
        )
    _check_address(host, port)
    s = ctx.session
    if kind.table is StorageController and s.get(Cluster, zone) is None:
        raise CloudError(
            "InvalidZone.NotFound",
            f"The zone '{zone}' does not exist: register its cluster controller first "
            f"(mallee cluster register HOST --zone {zone}).",
        )
    table = kind.table
    known = s.get(table, zone)
    if known is not None:
        if (known.host, known.port) == (host, port):
            return
        raise CloudError(
            "InvalidParameterValue",
            f"The zone '{zone}' is already registered, served by the {kind.title} at "
            f"{known.host}:{known.port}.",
        )
    taken = s.scalar(select(table).where(table.host == host, table.port == port))
    if taken is not None:
        raise CloudError(
            "InvalidParameterValue",
            f"The {kind.title} at {host}:{port} already serves the zone '{taken.zone}'.",
        )
    other = s.scalar(
        select(ServiceRecord.partition).where(
            ServiceRecord.type == kind.type, ServiceRecord.host == host, ServiceRecord.port == port
        )
    )
    if other is not None and other != zone:
        raise CloudError(
            "InvalidParameterValue",
            f"The {kind.title} at {host}:{port} reports the zone '{other}', not '{zone}': start "
            f"it with zone = {zone}.",
        )
    s.commit()  # no rpc inside a transaction
    try:
        Client(f"http://{host}:{port}", peers.get().key, timeout=5).call(kind.describe, Empty())
    except (OSError, RpcError) as exc:
        raise CloudError(
            "ServiceUnavailable",
            f"No {kind.title} answered at {host}:{port} ({exc}); start it (mallee serve {kind.type} "
            f"with zone = {zone}) and register it again.",
            503,
        ) from exc
    s.add(table(zone=zone, name=f"{kind.prefix}{zone}", host=host, port=port, created=clock.now()))
    try:
        s.flush()
    except IntegrityError as exc:  # the same zone registered at the same moment by another call
        s.rollback()
        raise CloudError("InvalidParameterValue", f"The zone '{zone}' already has its {kind.title}.") from exc


@EC2.operation(access="system")
def register_node(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    clusters = peers.get().clusters
    zone = p.get("Zone") or next(iter(clusters), "")  # the first registered: the CLC's own
    client = clusters.get(zone)
    if client is None:
        raise CloudError("InvalidParameterValue", f"No cluster controller serves the zone '{zone}'.")
    port = int(p.get("Port") or DEFAULT_NODE_PORT)
    host = p["Host"]
    _check_address(host, port)
    try:
        client.call(cluster.REGISTER_NODE, cluster.RegisterNode(host=host, port=port))
    except (OSError, RpcError) as exc:
        raise CloudError(
            "ServiceUnavailable", f"The cluster controller of {zone} did not answer: {exc}", 503
        ) from exc
    return {"Return": True}


@EC2.operation(access="system")
def describe_nodes(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    """Each node of each zone (or of `Zone`) as its cluster controller reports it now; a zone whose
    controller does not answer is left out."""
    zone = p.get("Zone")
    clusters = peers.get().clusters
    if zone and zone not in clusters:
        raise CloudError("InvalidParameterValue", f"No cluster controller serves the zone '{zone}'.")
    out = []
    for name, report in sorted(_reports([zone] if zone else sorted(clusters)).items()):
        for node in report.nodes:
            live = sorted(
                i
                for i, seen in report.instances.items()
                if seen.node == node.name and seen.state not in _GONE
            )
            out.append(
                {
                    "NodeName": node.name,
                    "Zone": name,
                    "State": node_state(node),
                    "Hypervisor": node.hypervisor,
                    "InstanceIds": live,
                    "Free": _resources(node.free),
                    "Total": _resources(node.total),
                }
            )
    return {"Nodes": out}


@EC2.operation(access="system")
def modify_node_maintenance(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    zone, _report, node = _find_node(p["Node"])
    request = cluster.NodeMaintenance(node=node.name, maintenance=bool(p["Maintenance"]))
    _ask(zone, cluster.SET_NODE_MAINTENANCE, request)
    return {"Return": True}


@EC2.operation(access="system")
def evacuate_node(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    """Move the EBS-backed instances off a node in maintenance; name those that cannot move."""
    zone, report, node = _find_node(p["Node"])
    if not node.maintenance:
        raise CloudError(
            "IncorrectState",
            f"The node {node.name} is not in maintenance: put it in maintenance first "
            f"(mallee node maintenance {node.name}), so that no new instance lands on it.",
        )
    moved = evacuation.record(ctx.session, zone, node.name, report)
    ctx.session.commit()  # record, then ask
    crashpoints.reached("clc.evacuate.recorded")
    instance_power.ask_to_stop({zone: moved.to_stop} if moved.to_stop else {})
    return {
        "NodeName": node.name,
        "MovingInstances": moved.moving,
        "UnmovableInstances": [
            {"InstanceId": i, "Reason": why} for i, why in sorted(moved.unmovable.items())
        ],
    }


@EC2.operation(access="system")
def deregister_node(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    zone, report, node = _find_node(p["Node"])
    live = {i.id for i in evacuation.on_node(ctx.session, zone, node.name, report)}
    ctx.session.commit()  # nothing to record: only no rpc inside a transaction
    if live:
        raise _in_use(node.name, sorted(live))
    _ask(zone, cluster.DEREGISTER_NODE, cluster.NodeName(node=node.name))
    return {"Return": True}


def _check_address(host: str, port: int) -> None:
    """A component's address as a cluster or the CLC keeps it and calls it for good."""
    if not _HOST_NAME.fullmatch(host):
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({host[:300]}) for parameter Host is invalid: not a host name or IP address.",
        )
    if not 1 <= port <= 65535:
        raise CloudError("InvalidParameterValue", f"Value ({port}) for parameter Port is invalid.")


def node_state(node: cluster.NodeSummary) -> str:
    """ENABLED, NOTREADY (its cluster cannot reach it) or MAINTENANCE."""
    if node.state != "ENABLED":
        return node.state
    return "MAINTENANCE" if node.maintenance else "ENABLED"


_GONE = ("stopped", "terminated")


def _in_use(name: str, instance_ids: list[str]) -> CloudError:
    return CloudError(
        "DependencyViolation",
        f"The node {name} still has instances: {', '.join(instance_ids)}. Evacuate it "
        "(mallee node evacuate) or terminate them first.",
    )


def _resources(r: Resources) -> dict[str, int]:
    return {"Cores": r.cores, "MemoryMiB": r.memory_mib, "DiskGiB": r.disk_gib}


def _reports(zones: list[str]) -> dict[str, cluster.ClusterReport]:
    """Each zone's report, of those whose cluster controller answers."""
    clusters = peers.get().clusters
    out = {}
    for zone in zones:
        try:
            out[zone] = clusters[zone].call(cluster.DESCRIBE, Empty())
        except (OSError, RpcError):
            continue
    return out


def _find_node(spec: str) -> tuple[str, cluster.ClusterReport, cluster.NodeSummary]:
    """The zone, its cluster's report and the node `spec` names: HOST:PORT, or HOST when one node of
    the cloud has that host."""
    host, sep, port = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not _HOST_NAME.fullmatch(host) or (sep and not (port.isdigit() and 1 <= int(port) <= 65535)):
        raise CloudError(
            "InvalidParameterValue",
            f"Value ({spec[:300]}) for parameter Node is invalid: give HOST or HOST:PORT.",
        )
    zones = sorted(peers.get().clusters)
    reports = _reports(zones)
    found = [
        (zone, report, node)
        for zone, report in sorted(reports.items())
        for node in report.nodes
        if node.name == spec or (not sep and node.name.rpartition(":")[0] == host)
    ]
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(f"{node.name} ({zone})" for zone, _report, node in found)
        raise CloudError("InvalidParameterValue", f"'{spec}' names several nodes: {names}. Give HOST:PORT.")
    silent = [zone for zone in zones if zone not in reports]
    if silent:
        raise CloudError(
            "ServiceUnavailable",
            f"No answering zone has the node '{spec}'; the cluster controller of {', '.join(silent)} "
            "did not answer.",
            503,
        )
    raise CloudError("InvalidParameterValue", f"The node '{spec}' is not registered in any zone.")


def _ask(zone: str, operation: Operation[Any, Ok], request: Message) -> None:
    """Ask the zone's cluster controller; it not answering is ServiceUnavailable, a node it does
    not know InvalidParameterValue, one with instances DependencyViolation."""
    client: Client = peers.get().clusters[zone]
    try:
        client.call(operation, request)
    except RpcError as err:
        if err.code == "UnknownNode":
            raise CloudError("InvalidParameterValue", f"The node is not registered: {err.message}.") from err
        if err.code == "NodeInUse":  # an instance landed on it since the report was read
            raise CloudError("DependencyViolation", f"The node {err.message}.") from err
        raise CloudError(
            "ServiceUnavailable", f"The cluster controller of {zone}: {err.message}", 503
        ) from err
    except OSError as exc:
        raise CloudError(
            "ServiceUnavailable", f"The cluster controller of {zone} did not answer: {exc}", 503
        ) from exc
