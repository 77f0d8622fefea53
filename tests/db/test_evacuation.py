"""A node's evacuation as the CLC records it and moves it on (services/clc/evacuation.py), on SQLite
and PostgreSQL: EBS-backed instances are marked and recorded stopping, instance-store ones named and
left alone, nothing is stopped when the other nodes have no room, and each reconciler step starts a
stopped evacuated instance again and forgets the evacuation once it runs or was terminated."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from db.test_reconcile import NODE, ZONE, _record
from mallee.core.errors import CloudError
from mallee.db.session import Database
from mallee.rpc import cluster
from mallee.rpc.node import Resources
from mallee.services.clc import evacuation
from mallee.services.clc.ec2 import instance_power
from mallee.services.clc.tables import Instance

OTHER = "127.0.0.2:8775"


def _report(other_free: Resources, *running: str) -> cluster.ClusterReport:
    def summary(name: str, free: Resources, maintenance: bool) -> cluster.NodeSummary:
        return cluster.NodeSummary(
            name=name, state="ENABLED", hypervisor="fake", total=free, free=free, maintenance=maintenance
        )

    return cluster.ClusterReport(
        ready=True,
        instances={i: cluster.ClusterInstance(state="running", node=NODE) for i in running},
        nodes=[summary(NODE, Resources(), True), summary(OTHER, other_free, False)],
    )


ROOM = Resources(cores=8, memory_mib=8192, disk_gib=100)


def _ebs(db: Database, n: int, **kw: str) -> str:
    instance_id = _record(db, n, state=kw.pop("state", "running"), node_name=NODE, **kw)
    with db.session() as s:
        found = s.get(Instance, instance_id)
        assert found is not None
        found.root_device_type = "ebs"
    return instance_id


def _get(s: Session, instance_id: str) -> Instance:
    found = s.get(Instance, instance_id)
    assert found is not None
    return found


def test_ebs_instances_are_recorded_stopping_and_instance_store_ones_named(database: Database) -> None:
    ebs, store = _ebs(database, 1), _record(database, 2, state="running", node_name=NODE)
    with database.session() as s:
        moved = evacuation.record(s, ZONE, NODE, _report(ROOM, ebs, store))
    assert (moved.moving, moved.to_stop, list(moved.unmovable)) == ([ebs], [ebs], [store])
    assert "instance-store" in moved.unmovable[store]
    with database.session() as s:
        i, kept = _get(s, ebs), _get(s, store)
        assert (i.state, i.desired, i.evacuating_from) == ("stopping", "stopped", NODE)
        assert i.state_reason.startswith("Server.ScheduledStop")
        assert (kept.state, kept.desired, kept.evacuating_from) == ("running", "running", "")
        again = evacuation.record(s, ZONE, NODE, _report(ROOM, ebs, store))  # asked twice: nothing new
    assert (again.moving, again.to_stop) == ([ebs], [])


def test_nothing_is_stopped_when_the_other_nodes_have_no_room(database: Database) -> None:
    ebs = _ebs(database, 1)
    with database.session() as s, pytest.raises(CloudError) as err:
        evacuation.record(s, ZONE, NODE, _report(Resources(cores=1, memory_mib=128, disk_gib=100), ebs))
    assert err.value.code == "InsufficientInstanceCapacity" and ebs in err.value.message
    with database.session() as s:
        assert (_get(s, ebs).state, _get(s, ebs).evacuating_from) == ("running", "")


def test_a_stopped_evacuated_instance_is_started_again_and_forgotten_once_it_runs(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    def record_start(_s: Session, i: Instance) -> None:  # StartInstances' fresh launch, in short
        started.append(i.id)
        i.state, i.desired, i.node = "pending", "running", ""

    monkeypatch.setattr(instance_power, "record_start", record_start)
    ebs = _ebs(database, 1, state="stopped", desired="stopped")
    ended = _ebs(database, 2, state="terminated", desired="terminated")
    with database.session() as s:
        _get(s, ebs).evacuating_from = _get(s, ended).evacuating_from = NODE
    with database.session() as s:
        evacuation.advance(s)
    assert started == [ebs]
    with database.session() as s:
        assert (_get(s, ebs).state, _get(s, ebs).evacuating_from) == ("pending", NODE)
        assert _get(s, ended).evacuating_from == ""
        _get(s, ebs).state, _get(s, ebs).node = "running", OTHER
    with database.session() as s:
        evacuation.advance(s)
    with database.session() as s:
        assert _get(s, ebs).evacuating_from == ""


def test_an_evacuated_instance_that_cannot_start_stays_stopped_and_is_forgotten(database: Database) -> None:
    """StartInstances would refuse it too (here it has no root volume attached, nor a known type)."""
    ebs = _ebs(database, 1, state="stopped", desired="stopped")
    with database.session() as s:
        _get(s, ebs).evacuating_from = NODE
    with database.session() as s:
        evacuation.advance(s)
    with database.session() as s:
        assert (_get(s, ebs).state, _get(s, ebs).evacuating_from) == ("stopped", "")
