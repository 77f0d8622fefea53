"""The CC's index of placements by node (controller.Placements): whatever places, moves, adopts or
forgets a placement, each node's placements and the room they take are what a full scan of the
zone's placements finds."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from mallee.rpc import cluster as api
from mallee.rpc import node
from mallee.rpc.contract import Ok
from mallee.services.cluster import controller as controller_mod
from mallee.services.cluster.controller import ClusterController, Placement, Placements
from mallee.services.cluster.scheduler import Overcommit

NEEDS = node.Resources(cores=1, memory_mib=256, disk_gib=5)


class FakeNode:
    """A node's rpc as the CC sees it: it runs what it is asked to, and reports it."""

    def __init__(self, cores: int = 4) -> None:
        self.instances: dict[str, node.NodeInstance] = {}
        self.resources = node.Resources(cores=cores, memory_mib=cores * 256, disk_gib=cores * 5)
        self.up = True
        self.lock = threading.Lock()

    def call(self, operation: Any, request: Any) -> Any:
        with self.lock:
            if not self.up:
                raise OSError("connection refused")
            if operation is node.DESCRIBE:
                return node.NodeReport(
                    instances=dict(self.instances), resources=self.resources, hypervisor="fake"
                )
            if operation is node.RUN_INSTANCE:
                self.instances[request.launch.instance_id] = node.NodeInstance(state="running", needs=NEEDS)
                return Ok()
            if operation is node.TERMINATE_INSTANCE:
                self.instances[request.instance_id].state = "terminated"
                return Ok()
            raise AssertionError(operation)


def _launch(n: int) -> node.InstanceLaunch:
    return node.InstanceLaunch(
        instance_id=f"i-{n:017x}",
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=node.InstanceType(name="t", cpus=1, memory_mib=256, disk_gib=5),
        image=node.LaunchImage(root=node.ImageSource(key="ami-1", url="u")),
        private_ip=f"10.111.0.{n + 2}",
        mac=f"d0:0d:00:00:00:{n:02x}",
        hostname=f"i-{n:017x}",
        availability_zone="z",
    )


def _assert_index_is_a_full_scan(cc: ClusterController) -> None:
    everything = list(cc.placements.values())
    for name, n in cc.nodes.items():
        scanned = [p for p in everything if p.node == name]
        assert sorted(p.instance_id for p in cc.placements.on(name)) == sorted(p.instance_id for p in scanned)
        assert all(a is b for a, b in zip(cc.placements.on(name), scanned, strict=True))
        used = node.Resources()
        for p in scanned:
            if p.state not in node.FINAL_STATES:
                used = used.plus(p.need)
        assert cc._used(name) == used
        if n.reachable:
            assert n.state.used == used
    assert sum(len(cc.placements.on(name)) for name in cc.nodes) == len(cc.placements)


def test_the_index_follows_placements_made_adopted_moved_and_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = [FakeNode(), FakeNode(), FakeNode()]
    cc = ClusterController(
        b"k", tmp_path / "nodes.json", "ROUNDROBIN", overcommit=Overcommit(cpu=1.0, memory=1.0)
    )
    for i, fake in enumerate(fakes):
        cc.register_node("127.0.0.1", 9000 + i)
        cc.nodes[f"127.0.0.1:{9000 + i}"].client = fake  # type: ignore[assignment]
    fakes[2].instances["i-00000000000000099"] = node.NodeInstance(state="running", needs=NEEDS)
    cc.poll()  # adopts the instance node 2 reports
    _assert_index_is_a_full_scan(cc)

    placed = cc.run_instances(api.RunInstances(instances=[_launch(n) for n in range(6)], min_count=6)).placed
    assert len(set(placed.values())) == 3  # spread over the three nodes
    _assert_index_is_a_full_scan(cc)
    cc.poll()
    _assert_index_is_a_full_scan(cc)

    # One instance stops and starts again while its node is down: it moves to another node.
    moved = _launch(0)
    old = placed[moved.instance_id]
    fake_of = {f"127.0.0.1:{9000 + i}": fake for i, fake in enumerate(fakes)}
    fake_of[old].instances[moved.instance_id].state = "stopped"
    cc.poll()
    fake_of[old].instances.pop(moved.instance_id)
    fake_of[old].up = False
    cc.poll()
    new = cc.run_instances(api.RunInstances(instances=[moved], min_count=1)).placed[moved.instance_id]
    assert new != old and cc.placements[moved.instance_id].node == new
    _assert_index_is_a_full_scan(cc)
    assert moved.instance_id not in [p.instance_id for p in cc.placements.on(old)]

    # Terminated ones are forgotten after a while; so is a launch its node never kept.
    fake_of[old].up = True
    gone = _launch(1)
    cc.terminate_instances([gone.instance_id])
    cc.poll()
    _assert_index_is_a_full_scan(cc)
    fake_of[placed[gone.instance_id]].instances.pop(gone.instance_id)  # reported once, then forgotten
    lost = _launch(2)
    fake_of[placed[lost.instance_id]].instances.pop(lost.instance_id)
    monkeypatch.setattr(controller_mod, "KEEP_FINAL_SECONDS", -1.0)
    monkeypatch.setattr(controller_mod, "IN_FLIGHT_SECONDS", -1.0)
    cc.poll()
    assert gone.instance_id not in cc.placements and lost.instance_id not in cc.placements
    _assert_index_is_a_full_scan(cc)


def test_every_change_through_the_mapping_keeps_the_index_right() -> None:
    placements = Placements()
    a, b = Placement("i-1", "n1", NEEDS), Placement("i-2", "n1", NEEDS)
    placements["i-1"], placements["i-2"] = a, b
    assert placements.on("n1") == [a, b] and placements.on("n2") == []
    moved = Placement("i-1", "n2", NEEDS)
    placements["i-1"] = moved  # the same instance, placed anew elsewhere
    assert placements.on("n1") == [b] and placements.on("n2") == [moved]
    assert list(placements) == ["i-1", "i-2"]  # kept in the order first placed, as a dict
    assert placements.pop("i-2") is b and placements.on("n1") == []
    assert placements.pop("i-9", None) is None
    del placements["i-1"]
    assert placements.on("n2") == [] and len(placements) == 0
    with pytest.raises(KeyError):
        del placements["i-1"]
    placements.setdefault("i-3", Placement("i-3", "n3", NEEDS))
    placements.update({"i-4": Placement("i-4", "n3", NEEDS)})
    assert [p.instance_id for p in placements.on("n3")] == ["i-3", "i-4"]
    placements.clear()
    assert placements.on("n3") == [] and dict(placements) == {}
