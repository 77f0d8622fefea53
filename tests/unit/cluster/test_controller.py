"""The Cluster Controller against fake nodes: placement, retries, adoption, readiness, pushes, and
the relay of each node's network."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mallee.core.errors import CloudError
from mallee.rpc import cluster as api
from mallee.rpc import node
from mallee.rpc.contract import Ok
from mallee.rpc.transport import RpcError
from mallee.services.cluster import controller as controller_mod
from mallee.services.cluster.controller import ClusterController
from mallee.services.cluster.scheduler import Overcommit

NO_OVERCOMMIT = Overcommit(cpu=1.0, memory=1.0)


class FakeNode:
    """A node's rpc as the CC sees it: it keeps what it is asked to run. Unless given more, it has
    room for `cores` instances of `_launch`'s type without overcommit."""

    def __init__(self, cores: int = 4, memory_mib: int | None = None, disk_gib: int | None = None) -> None:
        self.resources = node.Resources(
            cores=cores,
            memory_mib=cores * 256 if memory_mib is None else memory_mib,
            disk_gib=cores * 5 if disk_gib is None else disk_gib,
        )
        self.instances: dict[str, node.NodeInstance] = {}
        self.launches: list[str] = []
        self.networks: list[node.NodeNetwork] = []
        self.refusal: RpcError | None = None  # what the node answers apply_network with, if not Ok
        self.up = True
        self.lock = threading.Lock()  # the CC calls from several threads at once

    def call(self, operation: Any, request: Any) -> Any:
        with self.lock:
            return self._answer(operation, request)

    def _answer(self, operation: Any, request: Any) -> Any:
        if not self.up:
            raise OSError("connection refused")
        if operation is node.DESCRIBE:
            applied = max((n.generation for n in self.networks), default=0)
            return node.NodeReport(
                instances=dict(self.instances),
                resources=self.resources,
                hypervisor="fake",
                network_generation=applied,
                underlay="10.0.0.9:4789",
            )
        if operation is node.APPLY_NETWORK:
            if self.refusal is not None:
                raise self.refusal
            self.networks.append(request)
            return Ok()
        if operation is node.RUN_INSTANCE:
            launch = request.launch
            self.launches.append(launch.instance_id)
            self.instances[launch.instance_id] = node.NodeInstance(
                state="running", needs=launch.instance_type.needs, private_ip=launch.private_ip
            )
            return Ok()
        if operation is node.TERMINATE_INSTANCE:
            if request.instance_id in self.instances:
                self.instances[request.instance_id].state = "terminated"
            return Ok()
        raise AssertionError(operation)


def _cc(
    tmp_path: Path, *nodes: FakeNode, policy: str = "ROUNDROBIN", overcommit: Overcommit = NO_OVERCOMMIT
) -> tuple[ClusterController, list[str]]:
    pushed: list[str] = []
    cc = ClusterController(
        b"k", tmp_path / "nodes.json", policy, on_change=pushed.extend, overcommit=overcommit
    )
    for i, fake in enumerate(nodes):
        cc.register_node("127.0.0.1", 9000 + i)
        cc.nodes[f"127.0.0.1:{9000 + i}"].client = fake  # type: ignore[assignment]
    return cc, pushed


def _launch(n: int, cpus: int = 1) -> node.InstanceLaunch:
    return node.InstanceLaunch(
        instance_id=f"i-{n:017x}",
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=node.InstanceType(name="t", cpus=cpus, memory_mib=256, disk_gib=5),
        image=node.LaunchImage(root=node.ImageSource(key="ami-1", url="u")),
        private_ip=f"10.111.0.{n + 2}",
        mac=f"d0:0d:00:00:00:{n:02x}",
        hostname=f"i-{n:017x}",
        availability_zone="z",
    )


def test_a_new_cc_asks_its_nodes_before_it_places_anything(tmp_path: Path) -> None:
    busy = FakeNode(cores=1)
    busy.instances["i-00000000000000099"] = node.NodeInstance(
        state="running", needs=node.Resources(cores=1, memory_mib=256, disk_gib=5)
    )
    cc, _ = _cc(tmp_path, busy)
    assert not cc.ready and not cc.describe().ready
    with pytest.raises(CloudError) as err:  # the node is full with an instance the CC had not heard of
        cc.run_instances(api.RunInstances(instances=[_launch(1)], min_count=1))
    assert err.value.code == "InsufficientInstanceCapacity" and cc.ready
    assert "i-00000000000000099" in cc.describe().instances  # adopted from the report


def test_a_retried_launch_is_answered_from_the_placement_and_never_sent_twice(tmp_path: Path) -> None:
    fake = FakeNode()
    cc, _ = _cc(tmp_path, fake)
    request = api.RunInstances(instances=[_launch(1), _launch(2)], min_count=2)
    first = cc.run_instances(request)
    assert cc.run_instances(request) == first and fake.launches == [
        _launch(1).instance_id,
        _launch(2).instance_id,
    ]


def test_min_count_is_all_or_nothing_and_extras_are_placed_when_they_fit(tmp_path: Path) -> None:
    fake = FakeNode(cores=2)
    cc, _ = _cc(tmp_path, fake)
    with pytest.raises(CloudError):
        cc.run_instances(api.RunInstances(instances=[_launch(i) for i in range(3)], min_count=3))
    assert fake.launches == [] and cc.describe().instances == {}
    placed = cc.run_instances(api.RunInstances(instances=[_launch(i) for i in range(3)], min_count=1)).placed
    assert len(placed) == 2 and len(fake.launches) == 2


def test_a_pinned_launch_goes_back_to_its_node(tmp_path: Path) -> None:
    first, second = FakeNode(), FakeNode()
    cc, _ = _cc(tmp_path, first, second)
    pinned = api.RunInstances(
        instances=[_launch(1)], min_count=1, nodes={_launch(1).instance_id: "127.0.0.1:9001"}
    )
    assert cc.run_instances(pinned).placed == {_launch(1).instance_id: "127.0.0.1:9001"}
    assert second.launches == [_launch(1).instance_id] and first.launches == []


def test_a_launch_a_node_never_kept_is_forgotten_so_the_clc_can_send_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNode()
    cc, pushed = _cc(tmp_path, fake)
    cc.run_instances(api.RunInstances(instances=[_launch(1)], min_count=1))
    fake.instances.clear()  # the node died before it kept the launch
    cc.poll()
    assert _launch(1).instance_id in cc.describe().instances  # still in flight
    monkeypatch.setattr(controller_mod, "IN_FLIGHT_SECONDS", -1.0)
    cc.poll()
    assert cc.describe().instances == {} and _launch(1).instance_id in pushed


def test_state_changes_seen_in_a_poll_are_pushed_and_terminated_ones_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNode()
    cc, pushed = _cc(tmp_path, fake)
    cc.run_instances(api.RunInstances(instances=[_launch(1)], min_count=1))
    cc.poll()
    pushed.clear()
    cc.terminate_instances([_launch(1).instance_id, "i-0000000000000dead"])  # unknown ids: already gone
    cc.poll()
    assert pushed == [_launch(1).instance_id]
    assert cc.describe().instances[_launch(1).instance_id].state == "terminated"
    del fake.instances[_launch(1).instance_id]  # reported once more, then gone from the node
    cc.poll()  # the CC still says so for a while, so the CLC cannot miss the final state
    assert cc.describe().instances[_launch(1).instance_id].state == "terminated"
    monkeypatch.setattr(controller_mod, "KEEP_FINAL_SECONDS", -1.0)
    cc.poll()
    assert cc.describe().instances == {}


def test_an_unreachable_node_is_reported_notready_with_no_free_room(tmp_path: Path) -> None:
    fake = FakeNode()
    cc, _ = _cc(tmp_path, fake)
    cc.poll()
    fake.up = False
    cc.poll()
    (summary,) = cc.describe().nodes
    assert summary.state == "NOTREADY" and summary.free == node.Resources()
    with pytest.raises(CloudError):
        cc.run_instances(api.RunInstances(instances=[_launch(1)], min_count=1))


class HangingNode(FakeNode):
    """A host that is gone without a word: its describe takes `seconds` (a connect timing out)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def call(self, operation: Any, request: Any) -> Any:
        if operation is node.DESCRIBE:
            time.sleep(self.seconds)
            raise OSError("timed out")
        return super().call(operation, request)


def test_nodes_that_do_not_answer_are_asked_aside_all_at_once(tmp_path: Path) -> None:
    """Hosts that are gone (their connects timing out) are asked at once, beside the nodes that
    answer: four of them cost a poll one timeout, not four, on the first poll (no node has answered
    yet) and on every poll after."""
    hanging = [HangingNode(0.6) for _ in range(4)]
    healthy = FakeNode()
    cc, _ = _cc(tmp_path, healthy, *hanging)
    for _ in range(2):
        started = time.monotonic()
        cc.poll()
        took = time.monotonic() - started
        assert took < 4 * 0.6, f"the four hanging nodes were asked one after another ({took:.2f} s)"
        states = {s.name: s.state for s in cc.describe().nodes}
        assert states["127.0.0.1:9000"] == "ENABLED"
        assert [states[f"127.0.0.1:{9001 + i}"] for i in range(4)] == ["NOTREADY"] * 4
    assert all(s.unreachable_since > 0 for s in cc.describe().nodes if s.state == "NOTREADY")


def _network(generation: int) -> node.NodeNetwork:
    return node.NodeNetwork(generation=generation, vpcs=[])


def test_a_network_is_relayed_to_its_node_only_and_its_generation_reported(tmp_path: Path) -> None:
    first, second = FakeNode(), FakeNode()
    cc, _ = _cc(tmp_path, first, second)
    cc.apply_network(api.ApplyNetwork(node="127.0.0.1:9001", network=_network(7)))
    assert second.networks == [_network(7)] and first.networks == []
    cc.poll()
    summaries = {s.name: s for s in cc.describe().nodes}
    assert summaries["127.0.0.1:9001"].network_generation == 7
    assert summaries["127.0.0.1:9000"].network_generation == 0
    assert summaries["127.0.0.1:9001"].underlay == "10.0.0.9:4789"


def test_a_network_for_an_unknown_node_is_an_error_the_clc_can_retry(tmp_path: Path) -> None:
    cc, _ = _cc(tmp_path, FakeNode())
    with pytest.raises(RpcError) as err:
        cc.apply_network(api.ApplyNetwork(node="127.0.0.1:9999", network=_network(1)))
    assert (err.value.status, err.value.code) == (404, "UnknownNode")


def test_a_network_for_a_node_that_does_not_answer_is_node_unavailable(tmp_path: Path) -> None:
    fake = FakeNode()
    cc, _ = _cc(tmp_path, fake)
    fake.up = False
    with pytest.raises(RpcError) as err:
        cc.apply_network(api.ApplyNetwork(node="127.0.0.1:9000", network=_network(1)))
    assert (err.value.status, err.value.code) == (503, "NodeUnavailable")


def test_a_node_refusing_a_network_is_answered_as_the_node_answered(tmp_path: Path) -> None:
    fake = FakeNode()
    cc, _ = _cc(tmp_path, fake)
    fake.refusal = RpcError(400, "InvalidNetwork", "generation 1: invalid MAC")
    with pytest.raises(RpcError) as err:
        cc.apply_network(api.ApplyNetwork(node="127.0.0.1:9000", network=_network(1)))
    assert err.value is fake.refusal


# -- capacity: overcommit, and room that holds under concurrency ------------------------------------


def test_a_node_offers_its_cores_times_the_cpu_ratio(tmp_path: Path) -> None:
    fake = FakeNode(cores=2, memory_mib=4096, disk_gib=100)
    cc, _ = _cc(tmp_path, fake, overcommit=Overcommit(cpu=4.0, memory=1.0))
    cc.poll()
    (summary,) = cc.describe().nodes
    assert summary.total == node.Resources(cores=8, memory_mib=4096, disk_gib=100)
    placed = cc.run_instances(api.RunInstances(instances=[_launch(i) for i in range(9)], min_count=1)).placed
    assert len(placed) == 8 and len(fake.launches) == 8  # a 2-core node runs 8 one-vCPU instances
    assert cc.describe().nodes[0].free.cores == 0


def test_without_cpu_overcommit_a_node_runs_one_vcpu_per_core(tmp_path: Path) -> None:
    fake = FakeNode(cores=2, memory_mib=4096, disk_gib=100)
    cc, _ = _cc(tmp_path, fake, overcommit=NO_OVERCOMMIT)
    placed = cc.run_instances(api.RunInstances(instances=[_launch(i) for i in range(3)], min_count=1)).placed
    assert len(placed) == 2


def test_memory_is_overcommitted_only_by_its_own_ratio(tmp_path: Path) -> None:
    def fitting(memory_ratio: float, where: Path) -> int:
        where.mkdir()
        fake = FakeNode(cores=8, memory_mib=512, disk_gib=100)  # memory for two of `_launch`'s type
        cc, _ = _cc(where, fake, overcommit=Overcommit(cpu=4.0, memory=memory_ratio))
        launches = [_launch(i) for i in range(8)]
        return len(cc.run_instances(api.RunInstances(instances=launches, min_count=1)).placed)

    assert fitting(1.0, tmp_path / "a") == 2
    assert fitting(2.0, tmp_path / "b") == 4


def test_launches_at_once_never_take_more_than_the_node_offers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty launches from twenty threads, while the CC polls its node, against room for ten."""
    fake = FakeNode(cores=5, memory_mib=16384, disk_gib=200)
    cc, _ = _cc(tmp_path, fake, overcommit=Overcommit(cpu=2.0, memory=1.0))
    cc.poll()
    place = cc.scheduler.place

    def slow_place(*args: Any) -> list[str]:  # a slow decision: others come in before it is recorded
        chosen = place(*args)
        time.sleep(0.005)
        return chosen

    monkeypatch.setattr(cc.scheduler, "place", slow_place)
    start, done = threading.Barrier(21), threading.Event()
    outcomes: list[str] = []

    def launch(n: int) -> None:
        start.wait()
        try:
            cc.run_instances(api.RunInstances(instances=[_launch(n)], min_count=1))
            outcomes.append("placed")
        except CloudError as err:
            outcomes.append(err.code)

    def poll() -> None:
        start.wait()
        while not done.is_set():
            cc.poll()

    threads = [threading.Thread(target=launch, args=(n,)) for n in range(20)]
    poller = threading.Thread(target=poll)
    for thread in [*threads, poller]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    poller.join()
    assert sorted(outcomes) == ["InsufficientInstanceCapacity"] * 10 + ["placed"] * 10
    assert len(fake.launches) == 10 and len(fake.instances) == 10
    cc.poll()
    assert cc.describe().nodes[0].free.cores == 0


class LaggingNode(FakeNode):
    """A node whose answer is still on its way while `meanwhile` (set for one call of
    `operation`) runs: a report it built before, or a launch it has not taken yet."""

    def __init__(self, cores: int) -> None:
        super().__init__(cores)
        self.meanwhile: dict[Any, Any] = {}

    def call(self, operation: Any, request: Any) -> Any:
        hook = self.meanwhile.pop(operation, None)
        if operation is node.RUN_INSTANCE and hook is not None:
            hook()  # before the node takes the launch
        answer = super().call(operation, request)
        if operation is node.DESCRIBE and hook is not None:
            hook()  # after the node built its report
        return answer


def _stopped_on_a_full_node(tmp_path: Path) -> tuple[ClusterController, LaggingNode, node.InstanceLaunch]:
    """A node with room for one, whose one instance the CC has seen stopped (the node reports the
    stop once more before it forgets it)."""
    fake = LaggingNode(cores=1)
    cc, _ = _cc(tmp_path, fake)
    first = _launch(1)
    cc.run_instances(api.RunInstances(instances=[first], min_count=1))
    fake.instances[first.instance_id].state = "stopped"
    cc.poll()
    assert cc.describe().instances[first.instance_id].state == "stopped"
    return cc, fake, first


def _assert_the_started_instance_keeps_its_room(cc: ClusterController, started: str) -> None:
    assert cc.describe().instances[started].state != "stopped"
    with pytest.raises(CloudError) as err:  # the node's one slot is the started instance's
        cc.run_instances(api.RunInstances(instances=[_launch(2)], min_count=1))
    assert err.value.code == "InsufficientInstanceCapacity"


def test_a_report_asked_before_a_start_does_not_free_the_started_instances_room(tmp_path: Path) -> None:
    cc, fake, first = _stopped_on_a_full_node(tmp_path)
    # The CLC starts the instance again while the node's last report (still saying stopped) is on
    # its way to the CC.
    fake.meanwhile[node.DESCRIBE] = lambda: cc.run_instances(api.RunInstances(instances=[first], min_count=1))
    cc.poll()
    _assert_the_started_instance_keeps_its_room(cc, first.instance_id)
    assert len(fake.instances) == 1


def test_a_report_taken_while_a_launch_is_on_its_way_does_not_free_its_room(tmp_path: Path) -> None:
    cc, fake, first = _stopped_on_a_full_node(tmp_path)
    fake.meanwhile[node.RUN_INSTANCE] = cc.poll  # the node still reports the stop
    cc.run_instances(api.RunInstances(instances=[first], min_count=1))
    _assert_the_started_instance_keeps_its_room(cc, first.instance_id)
    assert len(fake.instances) == 1


def test_a_pinned_launch_takes_room_on_its_node_and_never_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full, empty = FakeNode(cores=1), FakeNode(cores=1)
    cc, _ = _cc(tmp_path, full, empty, policy="GREEDY")
    lost, other = _launch(1), _launch(2)
    cc.run_instances(api.RunInstances(instances=[lost], min_count=1))
    full.instances.clear()  # the node died before it kept the launch: forgotten, its room freed
    monkeypatch.setattr(controller_mod, "IN_FLIGHT_SECONDS", -1.0)
    cc.poll()
    cc.run_instances(api.RunInstances(instances=[other], min_count=1))  # takes that room
    again = api.RunInstances(instances=[lost], min_count=1, nodes={lost.instance_id: "127.0.0.1:9000"})
    with pytest.raises(CloudError) as err:
        cc.run_instances(again)
    assert err.value.code == "InsufficientInstanceCapacity"
    assert full.launches == [lost.instance_id, other.instance_id] and empty.launches == []
