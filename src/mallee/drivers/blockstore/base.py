"""The block-store driver contract: where the Storage Controller keeps its zone's volumes, and how a
node reaches one that is attached to an instance there.

A volume is a block device of a whole number of GiB, named by the CLC's id (`vol-` + hex). The SC
records what it wants before it calls a driver, and calls again after a crash, so every operation is
idempotent: creating a volume that exists with that size, deleting one that is gone, exporting one
that is exported to that node, and removing an export that is gone all succeed and change nothing.

An export makes one volume reachable by one node (the one running the instance it is attached to),
and by no other: the driver binds each export to its node (the default driver serves each node from
a server of its own, on a socket or port only that node is given). `Export` says how to reach it in
the terms a hypervisor needs for a network disk: libvirt's `<disk type='network'>` takes the
protocol, the export (or image) name and the hosts, so an NBD server and a Ceph RBD pool fit the
same message; an RBD driver would answer `Export(protocol="rbd", name="pool/vol-…", hosts=[…],
auth=…)` and export nothing itself (see docs/architecture.md, "Volumes").

Exports outlive the SC process: a restarted SC finds them (`exports()`) and keeps them, so a guest
never loses a disk because the SC restarted. Bytes are never lost: `delete` is the only operation that
drops data, and `resize` only grows.

Contract for every implementation (checked by tests/unit/drivers/test_blockstore_contract.py):
- `create(volume_id, size_gib, source=None)`: a volume of that size, all zeros, or with the bytes of
  `source` (a readable file of at most that size; the rest zeros). VolumeExists when a volume of that
  id exists with another size.
- `delete(volume_id)`: removes the volume and any export of it; gone is success.
- `resize(volume_id, size_gib)`: grows it, keeping its bytes (also while exported); smaller raises
  BlockStoreError; VolumeNotFound when there is none.
- `size_gib(volume_id)`: its size, or None when there is none; `volumes()`: every volume, with its size.
- `export(volume_id, node)`: an Export that `node` (the address the node's rpc is reached at) uses to
  open it read-write. Exporting it to another node while exported raises ExportedElsewhere.
- `unexport(volume_id)`: removes the export; gone is success. The node must have closed it first
  (a detached disk); what an open connection sees afterwards is undefined.
- `exports()`: volume id -> the node it is exported to.
- `open_path(volume_id)`: a local file path with the volume's bytes, for the SC's own reads (snapshots),
  or None when the driver keeps no local file (RBD); VolumeNotFound when there is no such volume.
- `point_in_time(volume_id)`: a context manager giving a read-only local file with the volume's
  bytes as of the call, while the volume stays usable (a guest may write it meanwhile); the file is
  removed on exit. For snapshots. VolumeNotFound when there is no such volume.
- `teardown()`: stop every process the driver started (servers), leaving the volumes; for
  `mallee down`, tests and benchmarks.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
GIB = 1024**3


class BlockStoreError(Exception):
    """Anything a block-store driver raises on purpose; the message says what to do about it."""


class VolumeNotFound(BlockStoreError):
    pass


class VolumeExists(BlockStoreError):
    """A volume of that id exists with another size."""


class ExportedElsewhere(BlockStoreError):
    """The volume is exported to another node (detach it there first)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a network disk is served: a unix socket on the node's host, or host and port."""

    socket: str = ""
    host: str = ""
    port: int = 0


@dataclass(frozen=True)
class Export:
    """How one node opens one volume (libvirt's network disk source)."""

    protocol: str  # "nbd" (the default driver), "rbd" (a Ceph driver)
    name: str  # the NBD export name, or the RBD image ("pool/vol-…")
    endpoints: tuple[Endpoint, ...]
    auth: Mapping[str, str] = field(default_factory=dict)  # e.g. RBD's username and secret uuid


def check_volume_id(volume_id: str) -> None:
    if not VOLUME_ID.match(volume_id):
        raise BlockStoreError(f"volume id {volume_id!r} is not of the form vol-<8 to 17 hex digits>")


def check_size(size_gib: int) -> None:
    if size_gib < 1:
        raise BlockStoreError(f"a volume is at least 1 GiB, not {size_gib}")


class BlockStore(abc.ABC):
    """The volumes of one zone. See the module docstring for the rules every driver keeps."""

    # "local_files": open_path gives files; "exports_outlive_process": exports survive the SC;
    # "bound_exports": an export serves only its node.
    capabilities: Mapping[str, bool] = {}

    @abc.abstractmethod
    def create(self, volume_id: str, size_gib: int, source: Path | None = None) -> None: ...

    @abc.abstractmethod
    def delete(self, volume_id: str) -> None: ...

    @abc.abstractmethod
    def resize(self, volume_id: str, size_gib: int) -> None: ...

    @abc.abstractmethod
    def size_gib(self, volume_id: str) -> int | None: ...

    @abc.abstractmethod
    def volumes(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def export(self, volume_id: str, node: str) -> Export: ...

    @abc.abstractmethod
    def unexport(self, volume_id: str) -> None: ...

    @abc.abstractmethod
    def exports(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def open_path(self, volume_id: str) -> Path | None: ...

    @abc.abstractmethod
    def point_in_time(self, volume_id: str) -> contextlib.AbstractContextManager[Path]: ...

    @abc.abstractmethod
    def teardown(self) -> None: ...
