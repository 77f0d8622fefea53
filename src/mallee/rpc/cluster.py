"""The Cluster Controller's contract (one CC per availability zone), called by the CLC and, for
pushed state changes, by the zone's nodes.

Every call names instances by ids the CLC chose and recorded before calling, so a retried call never
makes two VMs. The CLC states what it wants (`run_instances`, `terminate_instances`); the CC reports
what is (`describe`); the CLC's reconciler moves one toward the other.
"""

from __future__ import annotations

import msgspec

from mallee.rpc.contract import Api, Empty, Message, Ok, Operation, StateChanged
from mallee.rpc.node import (
    AttachVolume,
    ConsoleOutput,
    DetachVolume,
    InstanceLaunch,
    InstanceRef,
    InstanceState,
    NodeNetwork,
    Resources,
)

# 2: nodes report their network; apply_network relays a node's whole network to it.
# 3: volumes: attach_volume and detach_volume go to the instance's node; instances report theirs.
# 4: EBS-backed instances: stop_instances; instances report the volumes they await.
# 5: node maintenance and deregistration (set_node_maintenance, deregister_node); nodes report
#    whether they are in maintenance.
API = Api("cluster", version=5, oldest=5)


class RunInstances(Message):
    """Place and start `instances`, all or nothing down to `min_count`: either at least `min_count`
    fit (and as many as fit are placed) or the call fails with InsufficientInstanceCapacity and
    nothing is placed. `nodes` pins instances the CLC already recorded as placed to their node (a
    re-sent launch goes where the first one went)."""

    instances: list[InstanceLaunch]
    min_count: int
    nodes: dict[str, str] = {}


class Placed(Message):
    placed: dict[str, str]  # instance id -> node (host:port)


class InstanceIds(Message):
    instance_ids: list[str]


class StopInstances(Message):
    instance_ids: list[str]
    force: bool = False


class ClusterInstance(Message):
    state: InstanceState
    node: str
    reason: str = ""
    volumes: dict[str, str] = {}  # volume id -> guest disk (NodeInstance.volumes)
    awaiting: list[str] = []  # NodeInstance.awaiting


class NodeSummary(Message):
    name: str  # host:port
    state: str  # ENABLED | NOTREADY
    hypervisor: str
    total: Resources  # what the node offers instances: its resources × the cloud's overcommit ratios
    free: Resources  # of `total`, what new instances may take (none while away or in maintenance)
    used: Resources = msgspec.field(default_factory=Resources)  # of `total`, what its instances take
    network_generation: int = 0  # of the last network the node applied (NodeReport)
    underlay: str = ""  # the node's VXLAN endpoint, "address:port"
    unreachable_since: float = 0.0  # unix time the node stopped answering (0: it answers)
    # Takes no new instances (`free` is then empty); its instances keep running.
    maintenance: bool = False


class ApplyNetwork(Message):
    """The whole network of one node of the zone, relayed to it as it is."""

    node: str  # host:port
    network: NodeNetwork


class ClusterReport(Message):
    """What runs in the zone. `ready`: every node has answered since the CC started, so an instance
    missing from `instances` is not on any reachable node."""

    ready: bool
    instances: dict[str, ClusterInstance]
    nodes: list[NodeSummary]


class RegisterNode(Message):
    host: str
    port: int


class NodeMaintenance(Message):
    """Put a node of the zone in maintenance (it takes no new instances), or take it out. An unknown
    node is `UnknownNode` (404)."""

    node: str  # host:port
    maintenance: bool


class NodeName(Message):
    node: str  # host:port


RUN_INSTANCES = Operation(API, "run_instances", RunInstances, Placed)
TERMINATE_INSTANCES = Operation(API, "terminate_instances", InstanceIds, Ok)
STOP_INSTANCES = Operation(API, "stop_instances", StopInstances, Ok)
REBOOT_INSTANCES = Operation(API, "reboot_instances", InstanceIds, Ok)
DESCRIBE = Operation(API, "describe_cluster", Empty, ClusterReport)
CONSOLE_OUTPUT = Operation(API, "console_output", InstanceRef, ConsoleOutput)
REGISTER_NODE = Operation(API, "register_node", RegisterNode, Ok)
SET_NODE_MAINTENANCE = Operation(API, "set_node_maintenance", NodeMaintenance, Ok)
# Refused (`NodeInUse`, 409) while an instance on the node is not stopped or terminated; an unknown
# node is `UnknownNode` (404).
DEREGISTER_NODE = Operation(API, "deregister_node", NodeName, Ok)
APPLY_NETWORK = Operation(API, "apply_network", ApplyNetwork, Ok)
INSTANCES_CHANGED = Operation(API, "instances_changed", StateChanged, Ok)  # pushed by a node
ATTACH_VOLUME = Operation(API, "attach_volume", AttachVolume, Ok)  # to the node running the instance
DETACH_VOLUME = Operation(API, "detach_volume", DetachVolume, Ok)
