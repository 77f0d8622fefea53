"""The CLC's volume reconciler against the Storage Controller's own operations (on the fake block
store and an SQLite database of its own) and a fake cluster whose node plugs volumes in: volumes made
and deleted, attachments plugged in, unplugged, released, DeleteOnTermination, resizes; an SC that
crashed half way repaired at its start; nothing decided while the SC or the node does not answer."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mallee.db import migrate
from mallee.db.session import Database
from mallee.drivers.blockstore.fake import FakeBlockStore
from mallee.rpc import cluster, node, storage
from mallee.rpc.contract import Ok
from mallee.rpc.transport import RpcError
from mallee.services.clc.tables import Account, Instance
from mallee.services.clc.volume_reconcile import VolumeReconciler
from mallee.services.clc.volume_tables import Volume, VolumeAttachment
from mallee.services.storage import tables as sc_tables
from mallee.services.storage.volumes import Volumes

ZONE = "mallee-1a"
NODE = "127.0.0.1:8775"
VOL = "vol-0123456789abcdef0"
INSTANCE = "i-0123456789abcdef0"


class Direct:
    """An rpc client that calls the handlers in this process (errors raise as from the wire)."""

    def __init__(self, volumes: Volumes) -> None:
        self.table = volumes.handlers().table
        self.down = False

    def call(self, operation: Any, request: Any) -> Any:
        if self.down:
            raise OSError("connection refused")
        return self.table[operation.name][1](request)


class FakeCluster:
    """One node; the instance runs there; attach/detach change what the node reports."""

    def __init__(self) -> None:
        self.instances = {INSTANCE: cluster.ClusterInstance(state="running", node=NODE)}
        self.node_state = "ENABLED"
        self.attached: list[node.AttachVolume] = []
        self.detached: list[node.DetachVolume] = []

    def report(self) -> cluster.ClusterReport:
        summary = cluster.NodeSummary(
            name=NODE, state=self.node_state, hypervisor="fake", total=node.Resources(), free=node.Resources()
        )
        return cluster.ClusterReport(ready=True, instances=dict(self.instances), nodes=[summary])

    def call(self, operation: Any, request: Any) -> Any:
        seen = self.instances[request.instance_id]
        if operation is cluster.ATTACH_VOLUME:
            self.attached.append(request)
            seen.volumes = {**seen.volumes, request.export.volume_id: "vdb"}
        elif operation is cluster.DETACH_VOLUME:
            self.detached.append(request)
            seen.volumes = {k: v for k, v in seen.volumes.items() if k != request.volume_id}
        else:
            raise AssertionError(operation)
        return Ok()


@pytest.fixture
def sc(tmp_path: Path) -> Volumes:
    db = Database(f"sqlite:///{tmp_path / 'sc.db'}")
    migrate.upgrade(db.engine, "sc")
    return Volumes(db, FakeBlockStore(tmp_path / "sc"))


@pytest.fixture
def world(database: Database, sc: Volumes) -> tuple[VolumeReconciler, Direct, FakeCluster]:
    with database.session() as s:
        s.add(Account(id="123456789012", name="acme", created=_dt.datetime.now(_dt.UTC)))
        s.flush()
        s.add(
            Instance(
                id=INSTANCE,
                reservation_id="r-0000000000000000a",
                account_id="123456789012",
                image_id="ami-1",
                instance_type="m1.small",
                zone=ZONE,
                state="running",
                desired="running",
                node=NODE,
                launch_time=_dt.datetime.now(_dt.UTC),
                launch="{}",
                min_count=1,
                private_ip="172.31.0.4",
                mac="d0:0d:00:00:00:01",
            )  # fmt: skip
        )
    direct, cc = Direct(sc), FakeCluster()
    return VolumeReconciler(database, {ZONE: cc}, {ZONE: direct}), direct, cc  # type: ignore[dict-item]


def _volume(db: Database, state: str = "creating", size: int = 2) -> None:
    with db.session() as s:
        s.add(
            Volume(
                id=VOL,
                account_id="123456789012",
                zone=ZONE,
                size_gib=size,
                volume_type="gp3",
                state=state,
                created=_dt.datetime.now(_dt.UTC),
            )  # fmt: skip
        )


def _attach(db: Database, state: str = "attaching", delete_on_termination: bool = False) -> None:
    with db.session() as s:
        s.get(Volume, VOL).state = "in-use"  # type: ignore[union-attr]
        s.add(
            VolumeAttachment(
                volume_id=VOL,
                instance_id=INSTANCE,
                device="/dev/sdf",
                state=state,
                delete_on_termination=delete_on_termination,
                attach_time=_dt.datetime.now(_dt.UTC),
            )  # fmt: skip
        )


def _row(db: Database) -> tuple[str | None, str | None, int | None]:
    with db.session() as s:
        volume, attachment = s.get(Volume, VOL), s.get(VolumeAttachment, VOL)
        return (
            volume.state if volume else None,
            attachment.state if attachment else None,
            volume.size_gib if volume else None,
        )


def _run(world: tuple[VolumeReconciler, Direct, FakeCluster]) -> None:
    reconciler, _sc, cc = world
    reconciler.run({ZONE: cc.report()})


def test_a_volume_is_made_attached_detached_and_deleted(database: Database, sc: Volumes, world: Any) -> None:
    _volume(database)
    _run(world)  # asks the SC to make it
    assert sc.driver.size_gib(VOL) == 2 and _row(database)[0] == "creating"
    _run(world)  # the SC reports it
    assert _row(database)[0] == "available"
    _attach(database)
    _run(world)  # exported to the node, plugged in
    cc = world[2]
    assert [a.export.volume_id for a in cc.attached] == [VOL] and sc.driver.exports() == {VOL: NODE}
    _run(world)
    assert _row(database) == ("in-use", "attached", 2)
    _run(world)
    assert len(cc.attached) == 1  # plugged in: nothing asked again
    with database.session() as s:
        s.get(VolumeAttachment, VOL).state = "detaching"  # type: ignore[union-attr]
    _run(world)  # unplugged; the next pass sees it gone, unexports it and lets the volume go
    assert [d.volume_id for d in cc.detached] == [VOL]
    _run(world)
    assert _row(database) == ("available", None, 2) and sc.driver.exports() == {}
    with database.session() as s:
        s.get(Volume, VOL).state = "deleting"  # type: ignore[union-attr]
    _run(world)
    assert _row(database) == (None, None, None) and sc.driver.volumes() == {}


def test_termination_releases_and_deletes_on_termination_only(
    database: Database, sc: Volumes, world: Any
) -> None:
    _volume(database, state="creating")
    _run(world)
    _run(world)
    _attach(database, delete_on_termination=True)
    _run(world)
    _run(world)
    cc = world[2]
    cc.instances[INSTANCE] = cluster.ClusterInstance(state="terminated", node=NODE)
    with database.session() as s:
        s.get(Instance, INSTANCE).state = "terminated"  # type: ignore[union-attr]
    _run(world)  # released (unexported): to be deleted with its instance
    assert _row(database)[:2] == ("deleting", None) and sc.driver.exports() == {}
    _run(world)
    assert _row(database)[0] is None and sc.driver.volumes() == {}


def test_nothing_is_decided_while_the_sc_or_the_node_is_away(
    database: Database, sc: Volumes, world: Any
) -> None:
    reconciler, direct, cc = world
    _volume(database)
    direct.down = True
    _run(world)
    assert _row(database)[0] == "creating" and sc.driver.volumes() == {}
    direct.down = False
    _run(world)
    _run(world)
    _attach(database, state="attached")
    cc.node_state = "NOTREADY"  # the node does not answer: its report says nothing of the volume
    _run(world)
    assert _row(database)[1] == "attached" and cc.attached == []


def test_a_resize_is_made_then_completed(database: Database, sc: Volumes, world: Any) -> None:
    _volume(database, state="available")
    sc.create(storage.VolumeSpec(volume_id=VOL, size_gib=2))
    with database.session() as s:
        volume = s.get(Volume, VOL)
        assert volume is not None
        volume.modification_state, volume.target_size_gib, volume.target_volume_type = "modifying", 5, "io2"
    _run(world)
    assert sc.driver.size_gib(VOL) == 5
    _run(world)
    with database.session() as s:
        volume = s.get(Volume, VOL)
        assert volume is not None
        assert (volume.size_gib, volume.volume_type, volume.modification_state) == (5, "io2", "completed")


def test_the_sc_finishes_what_a_crash_interrupted(sc: Volumes) -> None:
    with sc.db.session() as s:  # recorded, then killed before the driver was asked
        s.add(sc_tables.StoredVolume(id=VOL, size_gib=3, state="creating", created=_dt.datetime.now(_dt.UTC)))
        s.add(
            sc_tables.StoredVolume(
                id="vol-00000000000000001", size_gib=1, state="deleting", created=_dt.datetime.now(_dt.UTC)
            )
        )
    sc.driver.create("vol-00000000000000001", 1)
    assert VOL not in sc.describe(storage.Empty()).volumes  # not made yet: not reported
    sc.repair()
    assert sc.driver.volumes() == {VOL: 3}
    assert sc.describe(storage.Empty()).volumes == {VOL: storage.StoredVolume(size_gib=3)}
    with sc.db.session() as s:
        assert [r.id for r in s.scalars(select(sc_tables.StoredVolume))] == [VOL]


def test_the_sc_refuses_what_cannot_be(sc: Volumes) -> None:
    with pytest.raises(RpcError) as err:
        sc.export(storage.ExportVolume(volume_id=VOL, node=NODE))
    assert err.value.code == "VolumeNotReady"
    sc.create(storage.VolumeSpec(volume_id=VOL, size_gib=2))
    sc.export(storage.ExportVolume(volume_id=VOL, node=NODE))
    with pytest.raises(RpcError) as err:
        sc.export(storage.ExportVolume(volume_id=VOL, node="127.0.0.2:8775"))
    assert err.value.code == "ExportedElsewhere"
    with pytest.raises(RpcError) as err:
        sc.resize(storage.ResizeVolume(volume_id=VOL, size_gib=1))
    assert err.value.code == "InvalidSize"
    with pytest.raises(RpcError) as err:
        sc.create(storage.VolumeSpec(volume_id="vol-nothex", size_gib=1))
    assert err.value.code == "InvalidVolumeId"


def test_a_volume_the_sc_could_not_make_is_shown_as_an_error(
    database: Database, sc: Volumes, world: Any
) -> None:
    _volume(database)
    with sc.db.session() as s:  # as a restore from a snapshot that failed leaves it
        s.add(sc_tables.StoredVolume(id=VOL, size_gib=2, state="error", created=_dt.datetime.now(_dt.UTC)))
    _run(world)
    with database.session() as s:
        volume = s.get(Volume, VOL)
        assert volume is not None and volume.state == "error" and "restore" in volume.state_reason
