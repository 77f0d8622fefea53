"""The zones' storage controllers as the CLC records and uses them: bootstrap records the CLC's own
zone's SC (and follows the configuration), and volume work is refused by name in a zone without an
SC, in one whose SC stopped heartbeating, and from a snapshot another zone's SC keeps."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from mallee.core import clock
from mallee.core.config import Config
from mallee.core.errors import CloudError
from mallee.db.session import Database
from mallee.rpc.transport import Client
from mallee.services.clc import peers
from mallee.services.clc.bootstrap import ensure_database
from mallee.services.clc.ec2 import volumes
from mallee.services.clc.tables import Account, Cluster, ServiceRecord, StorageController
from mallee.services.clc.volume_tables import Snapshot

KEY = b"k" * 32


def _config(db: Database, tmp_path: Path, host: str) -> Config:
    url = db.engine.url.render_as_string(hide_password=False)
    return Config(data_dir=tmp_path, host=host, port_base=9773, zone="mallee-1a", database_url=url)


def test_bootstrap_records_its_own_zones_storage_controller_and_follows_the_configuration(
    blank_database: Database, tmp_path: Path
) -> None:
    ensure_database(_config(blank_database, tmp_path, "10.0.0.1"))
    with blank_database.session() as s:
        s.add(
            Cluster(
                zone="mallee-1b", name="cluster-mallee-1b", host="10.0.0.2", port=8774, created=clock.now()
            )
        )
        s.add(
            StorageController(
                zone="mallee-1b", name="sc-mallee-1b", host="10.0.0.2", port=8776, created=clock.now()
            )
        )
    ensure_database(_config(blank_database, tmp_path, "10.0.0.9"))  # the CLC's host moved
    storage = peers.StorageRegistry(blank_database, KEY)
    assert list(storage) == ["mallee-1a", "mallee-1b"]
    assert storage["mallee-1a"].base_url == "http://10.0.0.9:9776"  # port_base + 3
    assert storage["mallee-1b"].base_url == "http://10.0.0.2:8776"  # a registered one is left alone


@pytest.fixture
def zones(database: Database) -> Iterator[Database]:
    """mallee-1a with an SC, mallee-1b with one, mallee-1c with a cluster only."""
    now = clock.now()
    with database.session() as s:
        for n, zone in enumerate(("mallee-1a", "mallee-1b", "mallee-1c")):
            s.add(Cluster(zone=zone, name=f"cluster-{zone}", host=f"10.0.0.{n}", port=8774, created=now))
        for n, zone in enumerate(("mallee-1a", "mallee-1b")):
            s.add(StorageController(zone=zone, name=f"sc-{zone}", host=f"10.0.0.{n}", port=8776, created=now))
        s.add(Account(id="123456789012", name="zones", is_system=False, created=now))
    before = peers._peers
    peers.configure(
        peers.Peers(
            walrus=Client("http://127.0.0.1:1", KEY),
            clusters=peers.ClusterRegistry(database, KEY),
            storage=peers.StorageRegistry(database, KEY),
            presign=lambda bucket, key, seconds: "",
            public_pool=[],
        )
    )
    try:
        yield database
    finally:
        peers._peers = before


def _beat(db: Database, zone: str, seconds_ago: float) -> None:
    with db.session() as s:
        s.merge(
            ServiceRecord(
                name=f"sc-{zone}",
                type="sc",
                partition=zone,
                host="10.0.0.1",
                port=8776,
                state="ENABLED",
                last_seen=clock.now() - _dt.timedelta(seconds=seconds_ago),
            )
        )


def _refusal(db: Database, zone: str, snapshot_ids: list[str] | None = None) -> CloudError | None:
    with db.session() as s:
        try:
            volumes.check_storage(s, zone, snapshot_ids or [])
        except CloudError as err:
            return err
    return None


def test_a_zone_without_a_storage_controller_is_refused_by_name(zones: Database) -> None:
    err = _refusal(zones, "mallee-1c")
    assert err is not None and (err.code, err.status) == ("Unsupported", 400) and "mallee-1c" in err.message
    assert _refusal(zones, "mallee-1a") is None  # never heartbeated yet: recorded, made once it is up


def test_a_zone_whose_storage_controller_stopped_heartbeating_is_unavailable(zones: Database) -> None:
    _beat(zones, "mallee-1a", 1)
    _beat(zones, "mallee-1b", 60)
    assert _refusal(zones, "mallee-1a") is None
    err = _refusal(zones, "mallee-1b")
    assert (
        err is not None
        and (err.code, err.status) == ("ServiceUnavailable", 503)
        and "mallee-1b" in err.message
    )


def test_a_volume_from_another_zones_snapshot_is_refused_by_name(zones: Database) -> None:
    with zones.session() as s:
        s.add(
            Snapshot(
                id="snap-0123456789abcdef0",
                account_id="123456789012",
                volume_id="vol-0123456789abcdef0",
                volume_size_gib=1,
                zone="mallee-1b",
                state="completed",
                started=clock.now(),
            )
        )
    assert _refusal(zones, "mallee-1b", ["snap-0123456789abcdef0"]) is None
    err = _refusal(zones, "mallee-1a", ["snap-0123456789abcdef0"])
    assert err is not None and err.code == "Unsupported"
    assert "snap-0123456789abcdef0" in err.message and "mallee-1b" in err.message
