"""What the CLC's handlers reach beyond their database, set up once by the app at start-up:
rpc clients for Walrus and the zones' cluster controllers, a presigner that lets a node
fetch an image object from Walrus with a short-lived URL (as Eucalyptus' NCs did), the
cloud's public address pool, and the per-account EBS quotas."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mallee.rpc.transport import Client

Presigner = Callable[[str, str, int], str]  # (bucket, key, seconds) -> URL


@dataclass
class Peers:
    walrus: Client
    clusters: dict[str, Client]  # zone -> its cluster controller
    storage: dict[str, Client]  # zone -> its storage controller
    presign: Presigner
    public_pool: list[str]  # the addresses public and elastic IPs come from (Config.public_ips)
    max_volumes: int = 5000  # per account (Config.max_volumes_per_account)
    max_volume_gib: int = 51200  # per account, all its volumes (Config.max_volume_gib_per_account)


_peers: Peers | None = None


def configure(peers: Peers) -> None:
    global _peers
    _peers = peers


def get() -> Peers:
    assert _peers is not None, "the CLC app configures its peers at start-up"
    return _peers


def walrus() -> Client:
    return get().walrus
