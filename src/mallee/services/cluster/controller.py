"""The Cluster Controller's state: its nodes (from their reports), where each instance runs, and
which nodes have room. Nothing here is the truth for long: every poll of the nodes rebuilds it, so
a restarted CC recovers by asking its nodes, and says it is `ready` only once it has asked them all.
What it keeps on disk (`nodes_file`) is what no node can tell it: which nodes it has, which are in
maintenance (they take no new instances) and which the administrator deregistered.

It is the one place that decides placement for its zone: every CLC worker and process asks it, and
it checks room and records the placement under one lock, so launches at once never take more than
the nodes offer (their reported resources × the cloud's overcommit ratios).

Addresses and MACs come from the CLC, which records them before it asks for a launch; the CC only
chooses nodes. Changes it sees (from a poll, or a node's push) are pushed on to the CLC at once.
Each node's whole VPC network is made by the CLC and relayed to the node as it is
(`apply_network`); the CC reports which generation each node applied and its VXLAN underlay.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from mallee.core import crashpoints
from mallee.core.errors import CloudError
from mallee.core.files import write_atomically
from mallee.rpc import cluster as api
from mallee.rpc import node as node_rpc
from mallee.rpc.contract import Message, Ok, Operation
from mallee.rpc.node import InstanceLaunch, InstanceState, NodeInstance, Resources
from mallee.rpc.transport import Client, RpcError
from mallee.services.cluster.scheduler import NodeState, Overcommit, Scheduler

log = logging.getLogger(__name__)
Req = TypeVar("Req", bound=Message)

# A launch sent to a node shows in its reports at once; one still missing from them this long after
# it was sent was lost on the way (a node that died before keeping it): forget it, and the CLC
# sends it again.
IN_FLIGHT_SECONDS = 10.0
# A node reports a stopped or terminated instance once, then forgets it; the CC keeps reporting that
# final state this long, so the CLC's reconciler sees it whatever its timing (a stop it missed would
# look like an instance lost).
KEEP_FINAL_SECONDS = 30.0
POLL_CONCURRENCY = 16  # nodes that did not answer the last poll, asked at once by the next


@dataclass
class Placement:
    instance_id: str
    node: str
    need: Resources
    state: InstanceState = "pending"
    reason: str = ""
    # When the CC placed it or last finished sending its launch; while `sending`, the launch may
    # not have reached the node. A report asked before either says nothing of this placement (its
    # node may still report the instance's last life, stopped).
    since: float = field(default_factory=time.monotonic)
    sending: bool = False
    final_since: float | None = None  # when a node first reported it stopped or terminated
    volumes: dict[str, str] = field(default_factory=dict)  # as the node last reported them
    awaiting: list[str] = field(default_factory=list)  # volumes a pending launch waits for


class Placements(MutableMapping[str, Placement]):
    """The zone's placements by instance id, indexed by node as well (`on`), so that absorbing a
    node's report costs O(that node's instances), not O(the zone's). Every change goes through the
    mapping, which keeps the index right; a placement's `node` is never changed in place (an
    instance that moves gets a new placement)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Placement] = {}
        self._by_node: dict[str, dict[str, Placement]] = {}

    def on(self, node_name: str) -> list[Placement]:
        """The placements on the node (a copy: the caller may change the mapping meanwhile)."""
        return list(self._by_node.get(node_name, {}).values())

    def __getitem__(self, instance_id: str) -> Placement:
        return self._by_id[instance_id]

    def __setitem__(self, instance_id: str, placement: Placement) -> None:
        self._unindex(instance_id)
        self._by_id[instance_id] = placement
        self._by_node.setdefault(placement.node, {})[instance_id] = placement

    def __delitem__(self, instance_id: str) -> None:
        self._unindex(instance_id)
        del self._by_id[instance_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._by_id

    def values(self) -> ValuesView[Placement]:
        return self._by_id.values()

    def items(self) -> ItemsView[str, Placement]:
        return self._by_id.items()

    def _unindex(self, instance_id: str) -> None:
        placement = self._by_id.get(instance_id)
        if placement is None:
            return
        on_node = self._by_node.get(placement.node, {})
        on_node.pop(instance_id, None)
        if not on_node:
            self._by_node.pop(placement.node, None)


@dataclass
class Node:
    name: str  # host:port
    client: Client
    state: NodeState
    reachable: bool = False
    hypervisor: str = ""
    network_generation: int = 0  # from the node's last report
    underlay: str = ""
    unreachable_since: float = 0.0  # unix time of the first poll it did not answer (0: it answers)


class ClusterController:
    def __init__(
        self,
        key: bytes,
        nodes_file: Path,
        policy: str = "ROUNDROBIN",
        url: str = "",
        on_change: Callable[[list[str]], None] = lambda _ids: None,
        overcommit: Overcommit | None = None,
    ) -> None:
        self.key = key
        self.url = url  # where nodes push their changes
        self.on_change = on_change
        self.scheduler = Scheduler(policy)
        self.overcommit = overcommit or Overcommit()
        self.nodes_file = nodes_file
        self.nodes: dict[str, Node] = {}
        self.placements = Placements()
        self.lock = threading.RLock()
        self._pollers = ThreadPoolExecutor(POLL_CONCURRENCY, thread_name_prefix="poll-node")
        # Every node has been asked since this CC started, so its picture is whole (instances on a
        # node that did not answer are unknown, and that node is reported NOTREADY).
        self.ready = False
        # Nodes the administrator deregistered: one the configuration names stays out of the
        # cluster until it is registered again by name.
        self.deregistered: set[str] = set()
        for name, maintenance in self._saved_nodes():
            self._add_node(name).state.maintenance = maintenance

    # -- nodes ----------------------------------------------------------------------------------

    def _saved_nodes(self) -> list[tuple[str, bool]]:
        """Each kept node and whether it is in maintenance; the deregistered names are read on the
        way. The file's first format, a bare list of names, is read too."""
        if not self.nodes_file.exists():
            return []
        saved = json.loads(self.nodes_file.read_text())
        if isinstance(saved, list):
            return [(name, False) for name in saved]
        self.deregistered = set(saved.get("deregistered", []))
        maintenance = set(saved.get("maintenance", []))
        return [(name, name in maintenance) for name in saved.get("nodes", [])]

    def _save_nodes(self) -> None:
        """Keep the nodes, their maintenance and the deregistered names (under the lock), whole or
        not at all: a restarted CC finds them as they were."""
        saved = {
            "nodes": sorted(self.nodes),
            "maintenance": sorted(n.name for n in self.nodes.values() if n.state.maintenance),
            "deregistered": sorted(self.deregistered),
        }
        write_atomically(self.nodes_file, json.dumps(saved), fsync=True)

    def register_node(self, host: str, port: int, *, configured: bool = False) -> None:
        """Add a node. One the configuration names (`configured`, at each start) is not added back
        when the administrator deregistered it; registering it by name does."""
        name = f"{host}:{port}"
        with self.lock:
            if name in self.nodes or (configured and name in self.deregistered):
                return
            self.deregistered.discard(name)
            self._add_node(name)
            self._save_nodes()

    def set_node_maintenance(self, name: str, maintenance: bool) -> None:
        """In maintenance a node takes no new instance (the scheduler skips it) and those it runs
        keep running; kept across restarts."""
        with self.lock:
            node = self._registered(name)
            if node.state.maintenance != maintenance:
                node.state.maintenance = maintenance
                self._save_nodes()

    def deregister_node(self, name: str) -> None:
        """Remove a node that runs nothing (`NodeInUse` otherwise): it is no longer polled, placed on
        or counted. Its stopped and terminated instances' last reports go with it."""
        with self.lock:
            self._registered(name)
            on_node = self.placements.on(name)
            live = sorted(p.instance_id for p in on_node if p.state not in ("stopped", "terminated"))
            if live:
                raise RpcError(409, "NodeInUse", f"{name} still has instances: {', '.join(live)}")
            del self.nodes[name]
            for placement in on_node:
                del self.placements[placement.instance_id]
            self.deregistered.add(name)
            self._save_nodes()

    def _registered(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            raise RpcError(404, "UnknownNode", f"{name} is no node of this cluster")
        return node

    def _add_node(self, name: str) -> Node:
        client = Client(f"http://{name}", self.key, timeout=10)
        node = self.nodes[name] = Node(name, client, NodeState(name, Resources()))
        return node

    def poll(self) -> None:
        """Ask every node what it runs and has; rebuild placements and free resources from it, and
        push the instances whose state changed to the CLC."""
        answering: list[Node] = []
        away: list[Node] = []
        for node in list(self.nodes.values()):
            (answering if node.reachable else away).append(node)
        # Nodes that did not answer last time are asked aside, all at once: a host that is gone (its
        # connect timing out) then delays no other node's report. Those that answer are asked one
        # after another, which on a busy host costs less than asking them all at once.
        aside = [self._pollers.submit(self._poll_node, node) for node in away]
        changed = [i for node in answering for i in self._poll_node(node)]
        if changed:
            self.on_change(changed)
        changed = [i for asked in aside for i in asked.result()]
        self.ready = True
        if changed:
            self.on_change(changed)

    def _poll_node(self, node: Node) -> list[str]:
        asked = time.monotonic()
        try:
            report = node.client.call(node_rpc.DESCRIBE, node_rpc.DescribeNode(cluster_url=self.url))
        except (OSError, RpcError) as exc:
            if node.reachable:
                log.warning("node %s stopped answering: %s", node.name, exc)
            if node.reachable or not node.unreachable_since:
                node.unreachable_since = time.time()
            node.reachable = False
            return []
        with self.lock:
            if self.nodes.get(node.name) is not node:  # deregistered while it was asked
                return []
            return self._absorb(node, report, asked)

    def _absorb(self, node: Node, report: node_rpc.NodeReport, asked: float) -> list[str]:
        """Apply a report the node was asked for at `asked`; placements made or sent since are newer
        than it and keep what they say."""
        node.reachable, node.unreachable_since = True, 0.0
        node.hypervisor = report.hypervisor
        node.network_generation, node.underlay = report.network_generation, report.underlay
        node.state.total = self.overcommit.offered(report.resources)
        changed = []
        for instance_id, info in report.instances.items():
            placement = self.placements.get(instance_id)
            if placement is None:  # a node reports an instance we did not know: adopt it
                placement = self.placements[instance_id] = Placement(instance_id, node.name, info.needs)
                changed.append(instance_id)
            elif _newer_than(placement, asked):
                continue
            if _changed(placement, info):
                changed.append(instance_id)
            placement.state, placement.reason, placement.volumes = info.state, info.reason, info.volumes
            placement.awaiting = info.awaiting
            if info.state in node_rpc.FINAL_STATES and placement.final_since is None:
                placement.final_since = time.monotonic()
        now = time.monotonic()
        for placement in self.placements.on(node.name):
            if placement.instance_id in report.instances:
                continue
            if _newer_than(placement, asked):  # the launch may not have reached the node yet
                continue
            if placement.final_since is not None:
                gone = now - placement.final_since > KEEP_FINAL_SECONDS
            else:
                gone = (
                    placement.state in ("shutting-down", "stopping")
                    or now - placement.since > IN_FLIGHT_SECONDS
                )
            if gone:
                self.placements.pop(placement.instance_id, None)
                changed.append(placement.instance_id)
        node.state.used = self._used(node.name)
        return sorted(set(changed))

    def _used(self, node_name: str) -> Resources:
        used = Resources()
        for p in self.placements.on(node_name):
            if p.state not in node_rpc.FINAL_STATES:
                used = used.plus(p.need)
        return used

    # -- instances ------------------------------------------------------------------------------

    def run_instances(self, request: api.RunInstances) -> api.Placed:
        if not self.ready:
            self.poll()  # just started: learn what the nodes run before placing anything
        with self.lock:  # room is checked and taken in one step: launches at once never overfill
            placed: dict[str, str] = {}
            pinned: list[tuple[InstanceLaunch, str]] = []
            unplaced: list[InstanceLaunch] = []
            for launch in request.instances:
                known = self.placements.get(launch.instance_id)
                if known is not None and known.state == "stopped":  # started again: placed anew
                    del self.placements[launch.instance_id]
                    known = None
                node_name = request.nodes.get(launch.instance_id)
                if known is not None:  # a retried call: answer what was decided
                    placed[known.instance_id] = known.node
                elif node_name in self.nodes:  # placed before, lost on the way: same node again
                    pinned.append((launch, node_name))
                else:
                    unplaced.append(launch)
            todo = self._place(pinned, unplaced, max(0, request.min_count - len(placed)))
            sends = []
            for launch, node_name in todo:
                placement = Placement(launch.instance_id, node_name, launch.needs, sending=True)
                self.placements[launch.instance_id] = placement
                sends.append((launch, placement))
                placed[launch.instance_id] = node_name
            for node_name in {node_name for _, node_name in todo}:
                self.nodes[node_name].state.used = self._used(node_name)
        crashpoints.reached("cc.run.placed")
        for launch, placement in sends:
            self._send_launch(launch, placement)
        crashpoints.reached("cc.run.sent")
        return api.Placed(placed=placed)

    def _place(
        self, pinned: list[tuple[InstanceLaunch, str]], unplaced: list[InstanceLaunch], min_count: int
    ) -> list[tuple[InstanceLaunch, str]]:
        """Where each launch goes, at least `min_count` of them, or InsufficientInstanceCapacity. A
        pinned launch takes room on its own node or is not placed: never on another, as its node
        may still hold it and start it later."""
        nodes = {n.name: replace(n.state) for n in self.nodes.values() if n.reachable}
        todo: list[tuple[InstanceLaunch, str]] = []
        for launch, node_name in pinned:
            state = nodes.get(node_name)
            if state is not None and state.free.fits(launch.needs):
                state.used = state.used.plus(launch.needs)
                todo.append((launch, node_name))
        wanted = max(0, min_count - len(todo))
        chosen = self.scheduler.place(list(nodes.values()), [launch.needs for launch in unplaced], wanted)
        if len(chosen) < wanted:
            raise CloudError(
                "InsufficientInstanceCapacity",
                "There is not enough capacity in the availability zone for the requested instances.",
                500,
            )
        return todo + list(zip(unplaced, chosen, strict=False))

    def _send_launch(self, launch: InstanceLaunch, placement: Placement) -> None:
        try:
            client = self.nodes[placement.node].client
            client.call(node_rpc.RUN_INSTANCE, node_rpc.RunInstance(launch=launch))
        except (OSError, RpcError) as exc:
            # Left as placed: the node's next report shows whether it kept the launch; if not, the
            # placement is forgotten after IN_FLIGHT_SECONDS and the CLC sends the launch again.
            log.warning("node %s did not take %s: %s", placement.node, launch.instance_id, exc)
        finally:
            with self.lock:  # in flight from now on: the node's next report shows it
                placement.sending = False
                placement.since = time.monotonic()

    def terminate_instances(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:  # one terminated already is asked again: the node confirms
            request = node_rpc.InstanceRef(instance_id=instance_id)
            self._end_on_node(instance_id, "shutting-down", (), node_rpc.TERMINATE_INSTANCE, request)

    def stop_instances(self, request: api.StopInstances) -> None:
        """Ask each instance's node to stop it; one on no node is stopped already."""
        for instance_id in request.instance_ids:
            stop = node_rpc.StopInstance(instance_id=instance_id, force=request.force)
            ended = ("stopped", "shutting-down", "terminated")
            self._end_on_node(instance_id, "stopping", ended, node_rpc.STOP_INSTANCE, stop)

    def _end_on_node(
        self,
        instance_id: str,
        state: InstanceState,
        skip: tuple[str, ...],
        operation: Operation[Req, Ok],
        request: Req,
    ) -> None:
        """Record that the instance's node is asked to end it (`state`, unless it is terminated
        already), then ask; one on no node, or in a state of `skip`, is left alone. A node that does
        not answer is asked again by the CLC's next reconciler pass."""
        with self.lock:
            placement = self.placements.get(instance_id)
            if placement is None or placement.state in skip:
                return
            if placement.state != "terminated":
                placement.state = state
            client = self.nodes[placement.node].client
        try:
            client.call(operation, request)
        except (OSError, RpcError) as exc:
            log.warning(
                "could not reach the node of %s for %s (will retry): %s", instance_id, operation.name, exc
            )

    def reboot_instances(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            placement = self.placements.get(instance_id)
            if placement is not None:
                self.nodes[placement.node].client.call(
                    node_rpc.REBOOT_INSTANCE, node_rpc.InstanceRef(instance_id=instance_id)
                )

    def console_output(self, instance_id: str) -> node_rpc.ConsoleOutput:
        placement = self.placements.get(instance_id)
        if placement is None:
            return node_rpc.ConsoleOutput(output="")
        return self.nodes[placement.node].client.call(
            node_rpc.CONSOLE_OUTPUT, node_rpc.InstanceRef(instance_id=instance_id)
        )

    def attach_volume(self, request: node_rpc.AttachVolume) -> None:
        self._node_of(request.instance_id).call(node_rpc.ATTACH_VOLUME, request)

    def detach_volume(self, request: node_rpc.DetachVolume) -> None:
        self._node_of(request.instance_id).call(node_rpc.DETACH_VOLUME, request)

    def _node_of(self, instance_id: str) -> Client:
        """The rpc client of the node running the instance: `InstanceNotPlaced` (404) when none does
        (the CLC's reconciler asks again once the instance runs somewhere)."""
        with self.lock:
            placement = self.placements.get(instance_id)
            if placement is None or placement.state not in ("pending", "running"):
                raise RpcError(404, "InstanceNotPlaced", f"{instance_id} runs on no node of this cluster")
            return self.nodes[placement.node].client

    def apply_network(self, request: api.ApplyNetwork) -> None:
        """Relay a node's whole network to it. An unknown node is `UnknownNode` (404) and one that
        does not answer `NodeUnavailable` (503): the CLC tries again with its next publication; a
        node's own refusal comes back as the node answered it."""
        with self.lock:
            node = self.nodes.get(request.node)
        if node is None:
            raise RpcError(404, "UnknownNode", f"{request.node} is no node of this cluster")
        try:
            node.client.call(node_rpc.APPLY_NETWORK, request.network)
        except OSError as exc:
            raise RpcError(503, "NodeUnavailable", f"{request.node} did not answer: {exc}") from exc

    def describe(self) -> api.ClusterReport:
        with self.lock:
            return api.ClusterReport(
                ready=self.ready,
                instances={
                    p.instance_id: api.ClusterInstance(
                        state=p.state, node=p.node, reason=p.reason, volumes=p.volumes, awaiting=p.awaiting
                    )
                    for p in self.placements.values()
                },
                nodes=[
                    api.NodeSummary(
                        name=n.name,
                        state="ENABLED" if n.reachable else "NOTREADY",
                        hypervisor=n.hypervisor,
                        total=n.state.total,
                        # the room new instances may take: none on a node away or in maintenance
                        free=n.state.free if n.reachable and not n.state.maintenance else Resources(),
                        used=n.state.used,
                        network_generation=n.network_generation,
                        underlay=n.underlay,
                        unreachable_since=n.unreachable_since,
                        maintenance=n.state.maintenance,
                    )
                    for n in self.nodes.values()
                ],
            )


def _newer_than(placement: Placement, asked: float) -> bool:
    """Whether the placement was made, or its launch sent, after a report was asked for."""
    return placement.sending or placement.since >= asked


def _changed(placement: Placement, info: NodeInstance) -> bool:
    return (placement.state, placement.reason, placement.volumes, placement.awaiting) != (
        info.state,
        info.reason,
        info.volumes,
        info.awaiting,
    )
