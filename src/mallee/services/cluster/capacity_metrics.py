"""The cluster controller's reading for its metrics page: each node's capacity, total, used and
free, as its last poll found it (read from `describe`, the report the CC gives the CLC)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from mallee.core.metrics import Reading
from mallee.rpc.cluster import ClusterReport

MIB = 1024**2
GIB = 1024**3


def node_capacity(zone: str, describe: Callable[[], ClusterReport]) -> Reading:
    """`mallee_node_up`, and `mallee_node_vcpus`, `_memory_bytes`, `_disk_bytes` by kind (total,
    used, free): what the node offers instances, after the cloud's overcommit ratios. A node that
    does not answer shows only its last total: what it has free is not known, and nothing is placed
    on it; one in maintenance has nothing free."""

    def read() -> Iterable[Metric]:
        node_labels, labels = ("zone", "node"), ("zone", "node", "kind")
        up = GaugeMetricFamily("mallee_node_up", "1 while the node answers polls.", labels=node_labels)
        vcpus = GaugeMetricFamily(
            "mallee_node_vcpus", "vCPUs a node offers instances (cores x cpu_overcommit).", labels=labels
        )
        memory = GaugeMetricFamily("mallee_node_memory_bytes", "Memory a node offers.", labels=labels)
        disk = GaugeMetricFamily("mallee_node_disk_bytes", "Instance disk a node offers.", labels=labels)
        for node in describe().nodes:
            answers = node.state == "ENABLED"
            up.add_metric((zone, node.name), 1 if answers else 0)
            kinds = {"total": node.total}
            if answers:
                kinds.update(used=node.used, free=node.free)
            for kind, amount in kinds.items():
                vcpus.add_metric((zone, node.name, kind), amount.cores)
                memory.add_metric((zone, node.name, kind), amount.memory_mib * MIB)
                disk.add_metric((zone, node.name, kind), amount.disk_gib * GIB)
        yield from (up, vcpus, memory, disk)

    return read
