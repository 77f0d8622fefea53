"""The Cluster Controller's state: its nodes (from their reports), where each instance runs, and the
zone's addresses. Nothing here is the truth for long: every poll of the nodes rebuilds it, so a
restarted CC recovers by asking its nodes."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mallee.core.errors import CloudError
from mallee.rpc import node as node_rpc
from mallee.rpc.transport import Client, RpcError
from mallee.services.cluster.network import AddressPool, mac_for
from mallee.services.cluster.scheduler import NodeState, Resources, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Placement:
    instance_id: str
    node: str
    private_ip: str
    mac: str
    need: Resources
    state: str = "pending"
    reason: str = ""


@dataclass
class Node:
    name: str  # host:port
    client: Client
    state: NodeState
    reachable: bool = False
    hypervisor: str = ""
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)


class ClusterController:
    def __init__(self, key: bytes, subnet: str, nodes_file: Path, policy: str = "ROUNDROBIN") -> None:
        self.key = key
        self.addresses = AddressPool(subnet)
        self.scheduler = Scheduler(policy)
        self.nodes_file = nodes_file
        self.nodes: dict[str, Node] = {}
        self.placements: dict[str, Placement] = {}
        self.lock = threading.RLock()
        for name in self._saved_nodes():
            self._add_node(name)

    # -- nodes ----------------------------------------------------------------------------------

    def _saved_nodes(self) -> list[str]:
        if not self.nodes_file.exists():
            return []
        return list(json.loads(self.nodes_file.read_text()))

    def register_node(self, host: str, port: int) -> None:
        name = f"{host}:{port}"
        with self.lock:
            if name in self.nodes:
                return
            self._add_node(name)
            tmp = self.nodes_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self.nodes)))
            tmp.replace(self.nodes_file)

    def _add_node(self, name: str) -> None:
        client = Client(f"http://{name}", self.key, timeout=10)
        self.nodes[name] = Node(name, client, NodeState(name, Resources()))

    def poll(self) -> None:
        """Ask every node what it runs and has; rebuild placements and free resources from it."""
        for node in list(self.nodes.values()):
            try:
                report = node_rpc.call(node.client, node_rpc.DESCRIBE)
            except (OSError, RpcError) as exc:
                if node.reachable:
                    log.warning("node %s stopped answering: %s", node.name, exc)
                node.reachable = False
                continue
            with self.lock:
                self._absorb(node, report)

    def _absorb(self, node: Node, report: dict[str, Any]) -> None:
        node.reachable = True
        node.hypervisor = str(report.get("hypervisor", ""))
        total = report.get("resources", {})
        node.state.total = Resources(
            int(total.get("cores", 0)), int(total.get("memory_mib", 0)), int(total.get("disk_gib", 0))
        )
        node.instances = dict(report.get("instances", {}))
        for instance_id, info in node.instances.items():
            placement = self.placements.get(instance_id)
            if placement is None:  # a node reports an instance we did not know: adopt it
                need = Resources(**info.get("needs", {})) if info.get("needs") else Resources()
                placement = Placement(
                    instance_id, node.name, info.get("private_ip", ""), mac_for(instance_id), need
                )
                self.placements[instance_id] = placement
                if placement.private_ip:
                    self.addresses.claim(placement.private_ip, instance_id)
            placement.state = str(info.get("state", placement.state))
            placement.reason = str(info.get("reason", ""))
        for placement in list(self.placements.values()):
            gone = placement.node == node.name and placement.instance_id not in node.instances
            if gone and placement.state in ("shutting-down", "terminated"):
                self._forget(placement.instance_id)
        node.state.used = self._used(node.name)

    def _used(self, node_name: str) -> Resources:
        used = Resources()
        for p in self.placements.values():
            if p.node == node_name and p.state not in ("terminated",):
                used = Resources(
                    used.cores + p.need.cores,
                    used.memory_mib + p.need.memory_mib,
                    used.disk_gib + p.need.disk_gib,
                )
        return used

    def _forget(self, instance_id: str) -> None:
        self.placements.pop(instance_id, None)
        self.addresses.release(instance_id)

    # -- instances ------------------------------------------------------------------------------

    def run_instances(self, launches: list[dict[str, Any]], min_count: int) -> dict[str, Any]:
        if not any(n.reachable for n in self.nodes.values()):
            self.poll()  # just started (or every node was down): ask now rather than refuse
        with self.lock:
            placed: dict[str, dict[str, str]] = {}
            todo = []
            for launch in launches:
                known = self.placements.get(launch["instance_id"])
                if known is not None:  # a retried call: answer what was decided
                    placed[known.instance_id] = {
                        "node": known.node,
                        "private_ip": known.private_ip,
                        "mac": known.mac,
                    }
                else:
                    todo.append(launch)
            needs = [_needs(launch) for launch in todo]
            usable = [n.state for n in self.nodes.values() if n.reachable]
            chosen = self.scheduler.place(usable, needs, max(0, min_count - len(placed)))
            if todo and not chosen and min_count > len(placed):
                raise CloudError(
                    "InsufficientInstanceCapacity",
                    "There is not enough capacity in the availability zone for the requested instances.",
                    500,
                )
            for launch, need, node_name in zip(todo, needs, chosen, strict=False):
                instance_id = launch["instance_id"]
                ip = self.addresses.allocate(instance_id)
                placement = Placement(instance_id, node_name, ip, mac_for(instance_id), need)
                self.placements[instance_id] = placement
                self.nodes[node_name].state.used = self._used(node_name)
                placed[instance_id] = {"node": node_name, "private_ip": ip, "mac": placement.mac}
                launch.update(
                    private_ip=ip,
                    mac=placement.mac,
                    gateway=self.addresses.gateway,
                    prefix=self.addresses.network.prefixlen,
                )
        for launch in todo[: len(chosen)]:
            self._send_launch(launch)
        return {"placed": placed}

    def _send_launch(self, launch: dict[str, Any]) -> None:
        placement = self.placements[launch["instance_id"]]
        try:
            node_rpc.call(self.nodes[placement.node].client, node_rpc.RUN_INSTANCE, launch=launch)
        except (OSError, RpcError) as exc:
            log.warning("node %s refused %s: %s", placement.node, placement.instance_id, exc)
            placement.state, placement.reason = "terminated", f"Server.InternalError: {exc}"

    def terminate_instances(self, instance_ids: list[str]) -> list[str]:
        done = []
        for instance_id in instance_ids:
            with self.lock:
                placement = self.placements.get(instance_id)
                if placement is None:
                    continue
                placement.state = "shutting-down"
                client = self.nodes[placement.node].client
            try:
                node_rpc.call(client, node_rpc.TERMINATE_INSTANCE, instance_id=instance_id)
            except (OSError, RpcError) as exc:
                log.warning(
                    "could not reach the node of %s to terminate it (will retry): %s", instance_id, exc
                )
            done.append(instance_id)
        return done

    def reboot_instances(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            placement = self.placements.get(instance_id)
            if placement is not None:
                node_rpc.call(
                    self.nodes[placement.node].client, node_rpc.REBOOT_INSTANCE, instance_id=instance_id
                )

    def console_output(self, instance_id: str) -> dict[str, Any]:
        placement = self.placements.get(instance_id)
        if placement is None:
            return {"output": ""}
        return node_rpc.call(
            self.nodes[placement.node].client, node_rpc.CONSOLE_OUTPUT, instance_id=instance_id
        )

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "instances": {
                    p.instance_id: {
                        "state": p.state,
                        "node": p.node,
                        "private_ip": p.private_ip,
                        "reason": p.reason,
                    }
                    for p in self.placements.values()
                },
                "nodes": [
                    {
                        "name": n.name,
                        "state": "ENABLED" if n.reachable else "NOTREADY",
                        "hypervisor": n.hypervisor,
                        "total": n.state.total.as_dict(),
                        "free": n.state.free.as_dict() if n.reachable else Resources().as_dict(),
                    }
                    for n in self.nodes.values()
                ],
            }


def _needs(launch: dict[str, Any]) -> Resources:
    t = launch["instance_type"]
    return Resources(int(t["cpus"]), int(t["memory_mib"]), int(t["disk_gib"]))
