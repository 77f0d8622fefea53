"""The cluster controller's metrics: each node's capacity as its report gives it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mallee.core import metrics
from mallee.rpc.cluster import ClusterReport, NodeSummary
from mallee.rpc.node import Resources
from mallee.services.cluster.capacity_metrics import GIB, MIB, node_capacity

TOTAL = Resources(cores=16, memory_mib=16384, disk_gib=200)


def report() -> ClusterReport:
    return ClusterReport(
        ready=True,
        instances={},
        nodes=[
            NodeSummary(
                name="10.0.0.1:8775",
                state="ENABLED",
                hypervisor="fake",
                total=TOTAL,
                free=Resources(cores=14, memory_mib=15872, disk_gib=190),
                used=Resources(cores=2, memory_mib=512, disk_gib=10),
            ),
            NodeSummary(name="10.0.0.2:8775", state="NOTREADY", hypervisor="", total=TOTAL, free=Resources()),
            NodeSummary(
                name="10.0.0.3:8775",
                state="ENABLED",
                hypervisor="fake",
                total=TOTAL,
                free=Resources(),
                used=Resources(cores=4, memory_mib=1024, disk_gib=20),
                maintenance=True,
            ),
        ],
    )


def test_each_nodes_cores_memory_and_disk_total_used_and_free() -> None:
    page = metrics.render(node_capacity("zone-a", report)).decode()
    found = {
        (s.name, s.labels["node"], s.labels.get("kind", "")): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.labels.get("zone") == "zone-a"
    }
    up = "10.0.0.1:8775"
    assert found[("mallee_node_up", up, "")] == 1
    assert found[("mallee_node_vcpus", up, "total")] == 16
    assert found[("mallee_node_vcpus", up, "used")] == 2
    assert found[("mallee_node_vcpus", up, "free")] == 14
    assert found[("mallee_node_memory_bytes", up, "used")] == 512 * MIB
    assert found[("mallee_node_disk_bytes", up, "free")] == 190 * GIB
    # A node that does not answer: its last total, and nothing said of what is free on it.
    down = "10.0.0.2:8775"
    assert found[("mallee_node_up", down, "")] == 0
    assert found[("mallee_node_vcpus", down, "total")] == 16
    assert ("mallee_node_vcpus", down, "free") not in found
    # In maintenance: what its instances take is used, and nothing is free for new ones.
    resting = "10.0.0.3:8775"
    assert found[("mallee_node_vcpus", resting, "used")] == 4
    assert found[("mallee_node_vcpus", resting, "free")] == 0
