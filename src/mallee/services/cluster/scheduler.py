"""Placing instances on nodes with room: Eucalyptus' ROUNDROBIN (default) and GREEDY policies.

Placement is all-or-nothing per request: either at least `min_count` of the instances fit (and
that many, up to all, are placed) or none is, so nothing is half-launched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mallee.rpc.node import Resources


@dataclass
class NodeState:
    name: str  # host:port
    total: Resources
    used: Resources = field(default_factory=Resources)
    enabled: bool = True

    @property
    def free(self) -> Resources:
        return self.total.minus(self.used)


class Scheduler:
    def __init__(self, policy: str = "ROUNDROBIN") -> None:
        if policy not in ("ROUNDROBIN", "GREEDY"):
            raise ValueError(f"unknown scheduling policy {policy!r}")
        self.policy = policy
        self._next = 0  # round-robin cursor

    def place(self, nodes: list[NodeState], needs: list[Resources], min_count: int) -> list[str]:
        """Node names for the first N of `needs` (N ≥ min_count), or [] when fewer than min_count fit.
        Does not change `nodes`; the caller commits the placement."""
        free = {n.name: n.free for n in nodes if n.enabled}
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
