"""What the CLC's handlers reach beyond their database, set up once by the app at start-up:
rpc clients for Walrus and the zones' cluster and storage controllers, a presigner that lets a node
fetch an image object from Walrus with a short-lived URL (as Eucalyptus' NCs did), the
cloud's public address pool, and the per-account EBS quotas.

The zones are the `clusters` table's rows (the CLC's own zone, made by bootstrap, and each zone
RegisterCluster added), and their storage controllers the `storage_controllers` table's (the CLC's
own zone's, and each RegisterStorageController added): a `ZoneRegistry` maps each zone to its
controller's client, read again every few seconds and whenever a zone it does not know is asked for,
so every CLC process, and one restarted, sees a controller as soon as it is registered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import select

from mallee.db.session import Database
from mallee.rpc.transport import Client
from mallee.services.clc.tables import Cluster, StorageController

Presigner = Callable[[str, str, int], str]  # (bucket, key, seconds) -> URL

REFRESH_SECONDS = 5.0  # how stale a process's zone list may be when nobody asks for a new zone
ZoneTable = type[Cluster] | type[StorageController]  # a zone's controllers of one kind: zone, host, port


@dataclass
class Peers:
    walrus: Client
    clusters: Mapping[str, Client]  # zone -> its cluster controller (a ClusterRegistry)
    storage: Mapping[str, Client]  # zone -> its storage controller (a StorageRegistry; some have none)
    presign: Presigner
    public_pool: list[str]  # the addresses public and elastic IPs come from (Config.public_ips)
    max_volumes: int = 5000  # per account (Config.max_volumes_per_account)
    max_volume_gib: int = 51200  # per account, all its volumes (Config.max_volume_gib_per_account)
    key: bytes = b""  # the deployment key: for a component not registered yet (RegisterCluster)


class ZoneRegistry(Mapping[str, Client]):
    """Zone -> the client of its controller of one kind, from that kind's table (`clusters` for the
    cluster controllers, `storage_controllers` for the storage controllers), in registration
    order. A read costs a dict lookup; the table (a row per zone) is read again when the last
    read is `refresh_seconds` old, or when a zone it lacks is asked for (`zone in`, `[zone]`,
    `.get(zone)`), so a controller registered through another CLC process is found on its first
    use. Clients are kept across reads while their zone's address is unchanged."""

    table: ClassVar[ZoneTable]

    def __init__(self, db: Database, key: bytes, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._db, self._key, self._refresh = db, key, refresh_seconds
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._read_at = float("-inf")

    def reload(self) -> dict[str, Client]:
        """Read the table now; the zones and their clients."""
        t = self.table
        with self._db.session() as s:
            rows = s.execute(select(t.zone, t.host, t.port).order_by(t.created, t.zone)).all()
        with self._lock:
            old = self._clients
            clients = {}
            for zone, host, port in rows:
                url = f"http://{host}:{port}"
                kept = old.get(zone)
                clients[zone] = kept if kept is not None and kept.base_url == url else Client(url, self._key)
            self._clients, self._read_at = clients, time.monotonic()
        return clients

    def _current(self) -> dict[str, Client]:
        if time.monotonic() - self._read_at > self._refresh:
            return self.reload()
        return self._clients

    def __getitem__(self, zone: str) -> Client:
        clients = self._current()
        if zone not in clients:
            clients = self.reload()  # registered since the last read, perhaps by another process
        return clients[zone]

    def __contains__(self, zone: object) -> bool:
        if not isinstance(zone, str):
            return False
        try:
            self[zone]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._current()))

    def __len__(self) -> int:
        return len(self._current())


class ClusterRegistry(ZoneRegistry):
    """The zones, each with its cluster controller."""

    table = Cluster


class StorageRegistry(ZoneRegistry):
    """The zones that have a storage controller, each with its own."""

    table = StorageController


_peers: Peers | None = None


def configure(peers: Peers) -> None:
    global _peers
    _peers = peers


def get() -> Peers:
    assert _peers is not None, "the CLC app configures its peers at start-up"
    return _peers


def walrus() -> Client:
    return get().walrus
