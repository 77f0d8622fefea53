"""The CLC's zones (`peers.ClusterRegistry`) and their storage controllers (`peers.StorageRegistry`):
read from the `clusters` and `storage_controllers` tables, so a zone or a storage controller
registered through any CLC process is found by every other on its first use, in registration order."""

from __future__ import annotations

import datetime as _dt

from mallee.db.session import Database
from mallee.services.clc.peers import ClusterRegistry, StorageRegistry
from mallee.services.clc.tables import Cluster, StorageController

KEY = b"k" * 32
T0 = _dt.datetime(2026, 12, 1, 12, 0, tzinfo=_dt.UTC)


def _register(db: Database, zone: str, host: str, minutes: int, port: int = 8774) -> None:
    with db.session() as s:
        s.add(
            Cluster(
                zone=zone,
                name=f"cluster-{zone}",
                host=host,
                port=port,
                created=T0 + _dt.timedelta(minutes=minutes),
            )
        )


def test_zones_come_in_registration_order_with_their_controllers(database: Database) -> None:
    _register(database, "mallee-1z", "10.0.0.1", 0)  # the CLC's own, first though last by name
    _register(database, "mallee-1b", "10.0.0.2", 1)
    zones = ClusterRegistry(database, KEY)
    assert list(zones) == ["mallee-1z", "mallee-1b"]
    assert len(zones) == 2
    assert zones["mallee-1b"].base_url == "http://10.0.0.2:8774"
    assert "mallee-1c" not in zones and zones.get("mallee-1c") is None


def test_a_zone_registered_elsewhere_is_found_on_its_first_use(database: Database) -> None:
    _register(database, "mallee-1a", "10.0.0.1", 0)
    zones = ClusterRegistry(database, KEY, refresh_seconds=3600)
    assert list(zones) == ["mallee-1a"]
    _register(database, "mallee-1b", "10.0.0.2", 1)  # as another CLC process would
    assert list(zones) == ["mallee-1a"]  # a listing may be a few seconds old …
    assert "mallee-1b" in zones  # … but a zone asked for by name is looked up at once
    assert zones.get("mallee-1b") is not None
    assert list(zones) == ["mallee-1a", "mallee-1b"]


def test_listings_are_read_again_after_the_refresh_interval(database: Database) -> None:
    _register(database, "mallee-1a", "10.0.0.1", 0)
    zones = ClusterRegistry(database, KEY, refresh_seconds=0)
    assert list(zones) == ["mallee-1a"]
    _register(database, "mallee-1b", "10.0.0.2", 1)
    assert dict(zones.items()).keys() == {"mallee-1a", "mallee-1b"}  # the reconciler's iteration


def test_a_client_is_kept_while_its_zone_address_is_unchanged(database: Database) -> None:
    _register(database, "mallee-1a", "10.0.0.1", 0)
    zones = ClusterRegistry(database, KEY)
    first = zones["mallee-1a"]
    zones.reload()
    assert zones["mallee-1a"] is first
    with database.session() as s:
        row = s.get(Cluster, "mallee-1a")
        assert row is not None
        row.host = "10.0.0.9"  # the CLC's own zone's controller moved (bootstrap follows the config)
    zones.reload()
    assert zones["mallee-1a"] is not first
    assert zones["mallee-1a"].base_url == "http://10.0.0.9:8774"


def _register_storage(db: Database, zone: str, host: str, minutes: int, port: int = 8776) -> None:
    with db.session() as s:
        s.add(
            StorageController(
                zone=zone,
                name=f"sc-{zone}",
                host=host,
                port=port,
                created=T0 + _dt.timedelta(minutes=minutes),
            )
        )


def test_storage_controllers_are_read_from_their_own_table(database: Database) -> None:
    _register(database, "mallee-1a", "10.0.0.1", 0)
    _register(database, "mallee-1b", "10.0.0.2", 1)
    _register_storage(database, "mallee-1a", "10.0.0.1", 0)
    zones, storage = ClusterRegistry(database, KEY), StorageRegistry(database, KEY)
    assert list(zones) == ["mallee-1a", "mallee-1b"]
    assert list(storage) == ["mallee-1a"]  # a zone with a cluster but no storage controller: absent
    assert storage["mallee-1a"].base_url == "http://10.0.0.1:8776"
    assert "mallee-1b" not in storage and storage.get("mallee-1b") is None


def test_a_storage_controller_registered_elsewhere_is_found_on_its_first_use(database: Database) -> None:
    _register(database, "mallee-1a", "10.0.0.1", 0)
    _register(database, "mallee-1b", "10.0.0.2", 1)
    _register_storage(database, "mallee-1a", "10.0.0.1", 0)
    storage = StorageRegistry(database, KEY, refresh_seconds=3600)
    assert "mallee-1b" not in storage
    _register_storage(database, "mallee-1b", "10.0.0.2", 1)  # as RegisterStorageController in another process
    assert storage["mallee-1b"].base_url == "http://10.0.0.2:8776"
    assert dict(storage.items()).keys() == {"mallee-1a", "mallee-1b"}  # the volume reconciler's iteration
