"""The CLC's reconciler against a fake cluster, on SQLite and PostgreSQL: launches sent again,
lost instances recorded, orphans destroyed, nothing decided from a cluster that is not ready."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pytest
from sqlalchemy import select

from mallee.db.session import Database
from mallee.rpc import cluster, node
from mallee.rpc.contract import Ok, encode
from mallee.services.clc import reconcile
from mallee.services.clc.reconcile import Reconciler
from mallee.services.clc.tables import Account, Instance

ZONE = "mallee-1a"
NODE = "127.0.0.1:8775"


class FakeCluster:
    def __init__(self) -> None:
        self.ready = True
        self.instances: dict[str, cluster.ClusterInstance] = {}
        self.node_state = "ENABLED"
        self.placed: list[cluster.RunInstances] = []
        self.terminated: list[str] = []
        self.networks: list[cluster.ApplyNetwork] = []
        self.refuse = False

    def call(self, operation: Any, request: Any) -> Any:
        if operation is cluster.DESCRIBE:
            summary = cluster.NodeSummary(
                name=NODE,
                state=self.node_state,
                hypervisor="fake",
                total=node.Resources(),
                free=node.Resources(),
            )
            return cluster.ClusterReport(ready=self.ready, instances=dict(self.instances), nodes=[summary])
        if operation is cluster.RUN_INSTANCES:
            self.placed.append(request)
            if self.refuse:
                raise _rpc_error("InsufficientInstanceCapacity")
            for launch in request.instances:
                self.instances[launch.instance_id] = cluster.ClusterInstance(state="pending", node=NODE)
            return cluster.Placed(placed={launch.instance_id: NODE for launch in request.instances})
        if operation is cluster.TERMINATE_INSTANCES:
            self.terminated += request.instance_ids
            return Ok()
        if operation is cluster.APPLY_NETWORK:  # each pass publishes the nodes' networks
            self.networks.append(request)
            return Ok()
        raise AssertionError(operation)


def _rpc_error(code: str) -> Exception:
    from mallee.rpc.transport import RpcError

    return RpcError(500, code, "no room")


def _record(
    db: Database, n: int, *, state: str = "pending", node_name: str = "", age: float = 10, **kw: Any
) -> str:
    instance_id = f"i-{n:017x}"
    launch = node.InstanceLaunch(
        instance_id=instance_id,
        reservation_id="r-0000000000000000a",
        account_id="123456789012",
        instance_type=node.InstanceType(name="t1.micro", cpus=1, memory_mib=256, disk_gib=5),
        image=node.LaunchImage(root=node.ImageSource(key="ami-1", url="u")),
        private_ip=f"10.111.0.{n + 2}",
        mac=f"d0:0d:00:00:00:{n:02x}",
        hostname=instance_id,
        availability_zone=ZONE,
    )
    with db.session() as s:
        if s.get(Account, "123456789012") is None:
            s.add(Account(id="123456789012", name="acme", created=_dt.datetime.now(_dt.UTC)))
            s.flush()
        s.add(
            Instance(
                id=instance_id,
                reservation_id="r-0000000000000000a",
                account_id="123456789012",
                image_id="ami-1",
                instance_type="t1.micro",
                zone=ZONE,
                state=state,
                desired=kw.pop("desired", "running"),
                node=node_name,
                launch_time=_dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=age),
                launch=encode(launch).decode(),
                min_count=kw.pop("min_count", 1),
                private_ip=launch.private_ip,
                mac=launch.mac,
            )
        )
    return instance_id


def _state(db: Database, instance_id: str) -> tuple[str, str, str]:
    with db.session() as s:
        i = s.get(Instance, instance_id)
        assert i is not None
        return i.state, i.state_reason, i.node


@pytest.fixture
def fake() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def reconciler(database: Database, fake: FakeCluster) -> Reconciler:
    return Reconciler(database, {ZONE: fake})  # type: ignore[dict-item]


def test_a_launch_that_never_reached_the_cluster_is_sent_again(
    database: Database, fake: FakeCluster, reconciler: Reconciler
) -> None:
    a, b = _record(database, 1, min_count=2), _record(database, 2, min_count=2)
    reconciler.run()
    (request,) = fake.placed
    assert sorted(launch.instance_id for launch in request.instances) == [a, b] and request.min_count == 2
    assert _state(database, a)[2] == NODE
    reconciler.run()  # now the cluster reports them: nothing is sent again
    assert len(fake.placed) == 1


def test_a_fresh_launch_is_left_to_run_instances(
    database: Database, fake: FakeCluster, reconciler: Reconciler
) -> None:
    _record(database, 1, age=0)
    reconciler.run()
    assert fake.placed == []


def test_a_relaunch_the_zone_has_no_room_for_is_terminated_with_the_aws_reason(
    database: Database, fake: FakeCluster, reconciler: Reconciler
) -> None:
    fake.refuse = True
    a = _record(database, 1)
    reconciler.run()
    state, reason, _ = _state(database, a)
    assert state == "terminated" and reason.startswith("Server.InsufficientInstanceCapacity")


def test_a_launch_no_node_took_in_time_is_terminated(database: Database, reconciler: Reconciler) -> None:
    a = _record(database, 1, age=reconcile.LOST_AFTER.total_seconds() + 1)
    reconciler.run()
    assert _state(database, a)[:2] == ("terminated", "Server.InternalError: the launch did not reach a node")


def test_a_running_instance_no_node_reports_is_lost_after_the_grace(
    database: Database, fake: FakeCluster, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _record(database, 1, state="running", node_name=NODE)
    reconciler.run()
    assert _state(database, a)[0] == "running"  # within the grace period
    monkeypatch.setattr(reconcile, "MISSING_GRACE", -1.0)
    reconciler.run()
    assert _state(database, a)[:2] == ("terminated", "Server.InternalError: the instance was lost")


def test_nothing_is_decided_from_a_cluster_that_is_not_ready_or_about_a_node_that_is_down(
    database: Database, fake: FakeCluster, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "MISSING_GRACE", -1.0)
    monkeypatch.setattr(reconcile, "ORPHAN_GRACE", -1.0)
    a = _record(database, 1, state="running", node_name=NODE)
    fake.instances["i-000000000000000ff"] = cluster.ClusterInstance(state="running", node=NODE)
    fake.ready = False
    reconciler.run()
    fake.ready, fake.node_state = True, "NOTREADY"
    fake.instances.clear()
    reconciler.run()
    assert _state(database, a)[0] == "running" and fake.terminated == [] and fake.placed == []


def test_an_orphan_is_destroyed_after_the_grace_period(
    database: Database, fake: FakeCluster, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = "i-000000000000000ff"
    fake.instances[orphan] = cluster.ClusterInstance(state="running", node=NODE)
    reconciler.run()
    assert fake.terminated == []
    monkeypatch.setattr(reconcile, "ORPHAN_GRACE", -1.0)
    reconciler.run()
    assert fake.terminated == [orphan]


def test_a_terminate_is_sent_again_until_a_node_confirms_it(
    database: Database, fake: FakeCluster, reconciler: Reconciler
) -> None:
    a = _record(database, 1, state="shutting-down", node_name=NODE, desired="terminated")
    fake.instances[a] = cluster.ClusterInstance(state="running", node=NODE)
    reconciler.run()
    assert fake.terminated == [a]
    fake.instances[a] = cluster.ClusterInstance(state="terminated", node=NODE)
    reconciler.run()
    assert _state(database, a)[0] == "terminated"
    with database.session() as s:
        assert s.scalars(select(Instance.state)).all() == ["terminated"]


def test_state_a_cluster_reports_is_recorded(
    database: Database, fake: FakeCluster, reconciler: Reconciler
) -> None:
    a = _record(database, 1, age=0)
    fake.instances[a] = cluster.ClusterInstance(state="running", node=NODE)
    reconciler.run()
    assert _state(database, a) == ("running", "", NODE)
    fake.instances[a] = cluster.ClusterInstance(
        state="terminated", node=NODE, reason="Client.InstanceInitiatedShutdown: x"
    )
    reconciler.run()
    assert _state(database, a)[:2] == ("terminated", "Client.InstanceInitiatedShutdown: x")


def test_a_refused_relaunch_waits_while_a_node_is_down(
    database: Database, fake: FakeCluster, reconciler: Reconciler
) -> None:
    fake.refuse, fake.node_state = True, "NOTREADY"
    a = _record(database, 1)  # no node recorded: the zone is asked to place it anywhere
    reconciler.run()
    assert len(fake.placed) == 1 and _state(database, a)[0] == "pending"  # asked again next pass
