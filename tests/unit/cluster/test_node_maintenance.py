"""Nodes in maintenance and deregistered nodes: the scheduler skips a node in maintenance, the zone
answers InsufficientInstanceCapacity when only such nodes have room, their instances keep running,
and the cluster keeps maintenance and deregistrations across a restart (reading its first file
format too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mallee.core.errors import CloudError
from mallee.rpc import cluster as api
from mallee.rpc.node import Resources
from mallee.rpc.transport import RpcError
from mallee.services.cluster.controller import ClusterController
from mallee.services.cluster.scheduler import NodeState, Scheduler
from unit.cluster.test_controller import FakeNode, _cc, _launch

SMALL = Resources(cores=1, memory_mib=256, disk_gib=5)
FIRST, SECOND = "127.0.0.1:9000", "127.0.0.1:9001"


def _states(*names: str) -> list[NodeState]:
    return [NodeState(name, Resources(cores=4, memory_mib=1024, disk_gib=20)) for name in names]


@pytest.mark.parametrize("policy", ["ROUNDROBIN", "GREEDY"])
def test_the_scheduler_places_nothing_on_a_node_in_maintenance(policy: str) -> None:
    nodes = _states("a:1", "b:1", "c:1")
    nodes[0].maintenance = nodes[2].maintenance = True
    assert Scheduler(policy).place(nodes, [SMALL] * 4, 4) == ["b:1"] * 4


def test_the_scheduler_finds_no_room_when_only_nodes_in_maintenance_have_it() -> None:
    nodes = _states("a:1", "b:1")
    nodes[0].used = Resources(cores=4, memory_mib=1024, disk_gib=20)  # full
    nodes[1].maintenance = True  # empty, but in maintenance
    assert Scheduler().place(nodes, [SMALL], 1) == []


def test_new_launches_go_to_the_node_not_in_maintenance(tmp_path: Path) -> None:
    first, second = FakeNode(), FakeNode()
    cc, _ = _cc(tmp_path, first, second)
    cc.set_node_maintenance(FIRST, True)
    placed = cc.run_instances(api.RunInstances(instances=[_launch(i) for i in range(3)], min_count=3)).placed
    assert set(placed.values()) == {SECOND} and first.launches == []


def test_a_zone_whose_only_room_is_in_maintenance_answers_insufficient_capacity(tmp_path: Path) -> None:
    full, spare = FakeNode(cores=1), FakeNode(cores=4)
    cc, _ = _cc(tmp_path, full, spare)
    cc.run_instances(
        api.RunInstances(instances=[_launch(1)], min_count=1, nodes={_launch(1).instance_id: FIRST})
    )
    cc.set_node_maintenance(SECOND, True)
    with pytest.raises(CloudError) as err:
        cc.run_instances(api.RunInstances(instances=[_launch(2)], min_count=1))
    assert err.value.code == "InsufficientInstanceCapacity" and spare.launches == []
    cc.set_node_maintenance(SECOND, False)
    assert cc.run_instances(api.RunInstances(instances=[_launch(2)], min_count=1)).placed == {
        _launch(2).instance_id: SECOND
    }


def test_a_node_in_maintenance_keeps_its_instances_and_reports_no_free_room(tmp_path: Path) -> None:
    fake = FakeNode(cores=4)
    cc, _ = _cc(tmp_path, fake)
    cc.run_instances(api.RunInstances(instances=[_launch(1)], min_count=1))
    cc.set_node_maintenance(FIRST, True)
    cc.poll()
    (summary,) = cc.describe().nodes
    assert (summary.state, summary.maintenance, summary.free) == ("ENABLED", True, Resources())
    assert summary.total.cores == 4
    assert cc.describe().instances[_launch(1).instance_id].state == "running"
    assert fake.instances[_launch(1).instance_id].state == "running"


def test_a_relaunch_pinned_to_a_node_in_maintenance_still_goes_there(tmp_path: Path) -> None:
    """It is no new instance: its node may hold its launch already, so it never goes elsewhere."""
    first, second = FakeNode(), FakeNode()
    cc, _ = _cc(tmp_path, first, second)
    cc.set_node_maintenance(FIRST, True)
    pinned = api.RunInstances(instances=[_launch(1)], min_count=1, nodes={_launch(1).instance_id: FIRST})
    assert cc.run_instances(pinned).placed == {_launch(1).instance_id: FIRST}


def test_maintenance_of_an_unknown_node_is_unknown_node(tmp_path: Path) -> None:
    cc, _ = _cc(tmp_path, FakeNode())
    with pytest.raises(RpcError) as err:
        cc.set_node_maintenance("127.0.0.9:9000", True)
    assert (err.value.status, err.value.code) == (404, "UnknownNode")


def test_maintenance_and_deregistrations_survive_a_restart(tmp_path: Path) -> None:
    cc, _ = _cc(tmp_path, FakeNode(), FakeNode())
    cc.set_node_maintenance(FIRST, True)
    cc.deregister_node(SECOND)
    again = ClusterController(b"k", tmp_path / "nodes.json")
    assert list(again.nodes) == [FIRST] and again.nodes[FIRST].state.maintenance
    again.register_node("127.0.0.1", 9001, configured=True)  # the configuration names it: stays out
    assert list(again.nodes) == [FIRST]
    again.register_node("127.0.0.1", 9001)  # the administrator registers it again
    assert set(again.nodes) == {FIRST, SECOND} and not again.nodes[SECOND].state.maintenance
    assert set(ClusterController(b"k", tmp_path / "nodes.json").nodes) == {FIRST, SECOND}


def test_the_first_file_format_a_bare_list_of_nodes_is_read(tmp_path: Path) -> None:
    (tmp_path / "nodes.json").write_text(json.dumps([FIRST, SECOND]))
    cc = ClusterController(b"k", tmp_path / "nodes.json")
    assert set(cc.nodes) == {FIRST, SECOND} and not any(n.state.maintenance for n in cc.nodes.values())
    cc.set_node_maintenance(SECOND, True)  # written in the new format from then on
    saved = json.loads((tmp_path / "nodes.json").read_text())
    assert saved == {"nodes": [FIRST, SECOND], "maintenance": [SECOND], "deregistered": []}


def test_a_node_with_instances_is_not_deregistered_and_an_empty_one_is_no_longer_polled(
    tmp_path: Path,
) -> None:
    busy, empty = FakeNode(), FakeNode()
    cc, _ = _cc(tmp_path, busy, empty)
    cc.run_instances(
        api.RunInstances(instances=[_launch(1)], min_count=1, nodes={_launch(1).instance_id: FIRST})
    )
    with pytest.raises(RpcError) as err:
        cc.deregister_node(FIRST)
    assert (err.value.status, err.value.code) == (409, "NodeInUse") and _launch(
        1
    ).instance_id in err.value.message
    cc.deregister_node(SECOND)
    empty.up = False  # were it still polled, it would be reported NOTREADY
    cc.poll()
    assert [n.name for n in cc.describe().nodes] == [FIRST]
    with pytest.raises(RpcError) as unknown:
        cc.deregister_node(SECOND)
    assert unknown.value.code == "UnknownNode"


def test_a_node_whose_instances_all_ended_can_be_deregistered(tmp_path: Path) -> None:
    fake = FakeNode()
    cc, _ = _cc(tmp_path, fake)
    cc.run_instances(api.RunInstances(instances=[_launch(1)], min_count=1))
    cc.terminate_instances([_launch(1).instance_id])
    cc.poll()  # the node reports it terminated (kept a while for the CLC)
    assert cc.describe().instances[_launch(1).instance_id].state == "terminated"
    cc.deregister_node(FIRST)
    assert cc.describe() == api.ClusterReport(ready=True, instances={}, nodes=[])
