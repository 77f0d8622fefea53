"""Placing instances on nodes with room, by Eucalyptus' policies: ROUNDROBIN (the default) spreads
instances over the nodes in turn, GREEDY packs each node before it uses the next.

Placement is all-or-nothing per request: either at least `min_count` of the instances fit (and
that many, up to all, are placed) or none is, so nothing is half-launched. A node's room is what
it offers (`Overcommit.offered`) less what its instances take; a node in maintenance offers none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mallee.core.config import PLACEMENT_POLICIES
from mallee.rpc.node import Resources


@dataclass(frozen=True)
class Overcommit:
    """How much more than it has a node offers: `cpu` vCPUs per core (Eucalyptus let a node run more
    vCPUs than cores, as OpenStack's `cpu_allocation_ratio` does) and `memory` MiB per MiB. Disk is
    never promised twice: an instance's disk is written."""

    cpu: float = 1.0
    memory: float = 1.0

    def offered(self, resources: Resources) -> Resources:
        """What a node with `resources` (as it measured or was told them) offers instances."""
        return Resources(
            cores=_scaled(resources.cores, self.cpu),
            memory_mib=_scaled(resources.memory_mib, self.memory),
            disk_gib=resources.disk_gib,
        )


@dataclass
class NodeState:
    name: str  # host:port
    total: Resources  # what the node offers instances (its resources, overcommitted)
    used: Resources = field(default_factory=Resources)
    enabled: bool = True
    # The administrator's `mallee node maintenance`: no new instance goes there; those it runs stay.
    maintenance: bool = False

    @property
    def free(self) -> Resources:
        return self.total.minus(self.used)


class Scheduler:
    def __init__(self, policy: str = "ROUNDROBIN") -> None:
        if policy not in PLACEMENT_POLICIES:
            raise ValueError(f"unknown scheduling policy {policy!r}")
        self.policy = policy
        self._next = 0  # round-robin cursor

    def place(self, nodes: list[NodeState], needs: list[Resources], min_count: int) -> list[str]:
        """Node names for the first N of `needs` (N ≥ min_count), or [] when fewer than min_count fit.
        Does not change `nodes`; the caller commits the placement."""
        free = {n.name: n.free for n in nodes if n.enabled and not n.maintenance}
        order = sorted(free)
        chosen: list[str] = []
        cursor = self._next
        for need in needs:
            node = self._pick(order, free, need, cursor)
            if node is None:
                break
            free[node] = free[node].minus(need)
            chosen.append(node)
            cursor = order.index(node) + 1
        if len(chosen) < min_count:
            return []
        self._next = cursor
        return chosen

    def _pick(self, order: list[str], free: dict[str, Resources], need: Resources, cursor: int) -> str | None:
        if not order:
            return None
        if self.policy == "GREEDY":  # fill the first node with room before using the next
            return next((name for name in order if free[name].fits(need)), None)
        for i in range(len(order)):
            name = order[(cursor + i) % len(order)]
            if free[name].fits(need):
                return name
        return None


def _scaled(amount: int, ratio: float) -> int:
    # Rounded first so that a product such as 100 × 0.29 (28.999…) counts as the 29 it means.
    return math.floor(round(amount * ratio, 6))
