"""Placement policies: ROUNDROBIN spreads, GREEDY packs, MinCount is all or nothing; what a node
offers under the overcommit ratios."""

from __future__ import annotations

import pytest

from mallee.rpc.node import Resources
from mallee.services.cluster.scheduler import NodeState, Overcommit, Scheduler

SMALL = Resources(cores=1, memory_mib=256, disk_gib=5)


def _nodes(*cores: int) -> list[NodeState]:
    return [
        NodeState(f"n{i}:8775", Resources(cores=c, memory_mib=c * 256, disk_gib=c * 5))
        for i, c in enumerate(cores)
    ]


def test_round_robin_spreads_instances_over_nodes_and_remembers_where_it_was() -> None:
    scheduler = Scheduler("ROUNDROBIN")
    nodes = _nodes(4, 4, 4)
    assert scheduler.place(nodes, [SMALL] * 4, 4) == ["n0:8775", "n1:8775", "n2:8775", "n0:8775"]
    assert scheduler.place(nodes, [SMALL], 1) == ["n1:8775"]


def test_greedy_fills_the_first_node_with_room_first() -> None:
    assert Scheduler("GREEDY").place(_nodes(2, 4), [SMALL] * 3, 3) == ["n0:8775", "n0:8775", "n1:8775"]


def test_an_exact_fit_is_placed_and_one_more_is_not() -> None:
    scheduler = Scheduler("GREEDY")
    assert scheduler.place(_nodes(2), [SMALL] * 2, 2) == ["n0:8775", "n0:8775"]
    assert scheduler.place(_nodes(2), [SMALL] * 3, 3) == []


def test_beyond_min_count_as_many_as_fit_are_placed() -> None:
    assert Scheduler().place(_nodes(1, 1), [SMALL] * 5, 2) == ["n0:8775", "n1:8775"]


def test_nothing_is_placed_when_fewer_than_min_count_fit_and_the_cursor_stays() -> None:
    scheduler = Scheduler()
    nodes = _nodes(1, 1)
    assert scheduler.place(nodes, [SMALL] * 3, 3) == []
    assert scheduler.place(nodes, [SMALL], 1) == ["n0:8775"]


def test_a_used_or_disabled_node_gets_nothing() -> None:
    nodes = _nodes(2, 2)
    nodes[0].used = Resources(cores=2, memory_mib=512, disk_gib=10)
    nodes[1].enabled = False
    assert Scheduler().place(nodes, [SMALL], 1) == []
    assert Scheduler().place([], [SMALL], 1) == []


def test_every_resource_counts() -> None:
    big_disk = Resources(cores=1, memory_mib=1, disk_gib=100)
    assert Scheduler().place(_nodes(8), [big_disk], 1) == []


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler("BEST")


def test_a_node_offers_cores_times_the_cpu_ratio_and_memory_times_the_memory_ratio() -> None:
    real = Resources(cores=2, memory_mib=4096, disk_gib=100)
    assert Overcommit(cpu=4.0, memory=1.5).offered(real) == Resources(cores=8, memory_mib=6144, disk_gib=100)


def test_without_overcommit_a_node_offers_what_it_has() -> None:
    real = Resources(cores=2, memory_mib=4096, disk_gib=100)
    assert Overcommit().offered(real) == real


def test_disk_is_never_overcommitted() -> None:
    assert Overcommit(cpu=16.0, memory=16.0).offered(Resources(disk_gib=100)).disk_gib == 100


def test_a_ratio_below_one_holds_part_of_a_node_back_rounding_down() -> None:
    offered = Overcommit(cpu=0.5, memory=0.29).offered(Resources(cores=3, memory_mib=100))
    assert (offered.cores, offered.memory_mib) == (1, 29)  # 100 × 0.29 is 28.999… in floating point


def test_a_two_core_node_overcommitted_four_times_takes_eight_one_vcpu_instances() -> None:
    node = NodeState("n0:8775", Overcommit(cpu=4.0).offered(Resources(cores=2, memory_mib=8192, disk_gib=80)))
    assert Scheduler("GREEDY").place([node], [SMALL] * 9, 1) == ["n0:8775"] * 8
