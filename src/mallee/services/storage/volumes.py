"""The Storage Controller's volume operations (rpc/storage.py): each records what it is about to do in
the SC's database, asks the block-store driver, then records that it is done. A crash between the two
leaves a `creating` or `deleting` row that `repair()` (run at start) finishes; the driver's operations
are idempotent, so doing one twice is harmless. One lock serialises the driver calls: they take
milliseconds, and two calls for one volume (a reconciler pass and an API-driven one) must not cross.

A volume made from a snapshot is restored in the background (the create call answers at once) into
a scratch file, which the driver then copies into a volume it builds under a temporary name: the
volume is reported (`available`) only once it is whole, and `repair()` restarts a restore a crash cut
short.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import threading
from pathlib import Path

from sqlalchemy import select

from mallee.core import clock, crashpoints
from mallee.db.session import Database
from mallee.drivers.blockstore.base import (
    BlockStore,
    BlockStoreError,
    ExportedElsewhere,
    VolumeExists,
    VolumeNotFound,
    check_volume_id,
)
from mallee.rpc import storage
from mallee.rpc.contract import Empty, Handlers, Ok
from mallee.rpc.transport import RpcError
from mallee.services.storage.snapshots import Snapshots
from mallee.services.storage.tables import StoredVolume

log = logging.getLogger(__name__)


class Volumes:
    def __init__(
        self,
        db: Database,
        driver: BlockStore,
        snapshots: Snapshots | None = None,
        scratch_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.driver = driver
        self.snapshots = snapshots
        self.scratch_dir = Path(scratch_dir or tempfile.gettempdir())
        self.lock = threading.Lock()
        self._restoring: set[str] = set()  # volumes a restore thread is making
        self._restoring_lock = threading.Lock()

    def handlers(self) -> Handlers:
        handlers = Handlers()
        handlers.add(storage.CREATE_VOLUME, self.create)
        handlers.add(storage.DELETE_VOLUME, self.delete)
        handlers.add(storage.RESIZE_VOLUME, self.resize)
        handlers.add(storage.EXPORT_VOLUME, self.export)
        handlers.add(storage.UNEXPORT_VOLUME, self.unexport)
        handlers.add(storage.DESCRIBE, self.describe)
        return handlers

    def create(self, p: storage.VolumeSpec) -> Ok:
        _check(p.volume_id)
        if p.size_gib < 1:
            raise RpcError(400, "InvalidSize", f"{p.volume_id}: {p.size_gib} GiB is not a volume size")
        if p.snapshot_id and self.snapshots is None:
            raise RpcError(501, "NotImplemented", "this SC keeps no snapshots")
        with self.lock:
            with self.db.session() as s:
                row = s.get(StoredVolume, p.volume_id)
                if row is None:
                    row = StoredVolume(
                        id=p.volume_id,
                        size_gib=p.size_gib,
                        state="creating",
                        created=clock.now(),
                        snapshot_id=p.snapshot_id,
                    )
                    s.add(row)
                elif row.state == "deleting":
                    raise RpcError(409, "VolumeDeleting", f"{p.volume_id} is being deleted")
                elif row.size_gib != p.size_gib and row.state == "creating":
                    row.size_gib = p.size_gib  # not made yet: the newest ask wins
                from_snapshot = bool(row.snapshot_id) and row.state == "creating"
            crashpoints.reached("sc.create.recorded")
            if not from_snapshot:
                self._create(p.volume_id)
        if from_snapshot:
            self._restore_in_background(p.volume_id)
        return Ok()

    def delete(self, p: storage.VolumeRef) -> Ok:
        _check(p.volume_id)
        with self.lock:
            with self.db.session() as s:
                row = s.get(StoredVolume, p.volume_id)
                if row is None:  # perhaps a volume the driver has without a row: delete it all the same
                    s.add(StoredVolume(id=p.volume_id, size_gib=0, state="deleting", created=clock.now()))
                else:
                    row.state = "deleting"
            crashpoints.reached("sc.delete.recorded")
            self._delete(p.volume_id)
        return Ok()

    def resize(self, p: storage.ResizeVolume) -> Ok:
        _check(p.volume_id)
        with self.lock:
            with self.db.session() as s:
                row = s.get(StoredVolume, p.volume_id)
                if row is None or row.state == "deleting":
                    raise RpcError(404, "VolumeNotFound", f"the SC holds no volume {p.volume_id}")
                if p.size_gib < row.size_gib:
                    raise RpcError(
                        400, "InvalidSize", f"{p.volume_id} is {row.size_gib} GiB: volumes only grow"
                    )
                row.size_gib = p.size_gib
            try:
                self.driver.resize(p.volume_id, p.size_gib)
            except VolumeNotFound as exc:
                raise RpcError(409, "VolumeNotReady", f"{p.volume_id} is not created yet") from exc
            except BlockStoreError as exc:
                raise RpcError(500, "ResizeFailed", str(exc)) from exc
        return Ok()

    def export(self, p: storage.ExportVolume) -> storage.VolumeExport:
        _check(p.volume_id)
        with self.lock:
            with self.db.session() as s:
                row = s.get(StoredVolume, p.volume_id)
                if row is None or row.state != "available":
                    state = row.state if row is not None else "unknown"
                    raise RpcError(409, "VolumeNotReady", f"{p.volume_id} is {state} on the SC")
            try:
                found = self.driver.export(p.volume_id, p.node)
            except ExportedElsewhere as exc:
                raise RpcError(409, "ExportedElsewhere", str(exc)) from exc
            except BlockStoreError as exc:
                raise RpcError(500, "ExportFailed", str(exc)) from exc
        crashpoints.reached("sc.export.made")
        endpoints = [storage.NbdEndpoint(socket=e.socket, host=e.host, port=e.port) for e in found.endpoints]
        return storage.VolumeExport(
            volume_id=p.volume_id,
            protocol=found.protocol,
            name=found.name,
            endpoints=endpoints,
            auth=dict(found.auth),
        )

    def unexport(self, p: storage.VolumeRef) -> Ok:
        _check(p.volume_id)
        with self.lock:
            try:
                self.driver.unexport(p.volume_id)
            except BlockStoreError as exc:
                raise RpcError(500, "UnexportFailed", str(exc)) from exc
        return Ok()

    def describe(self, _p: Empty) -> storage.StorageReport:
        """The volumes that are made (`available` rows), with the size the driver has and the node
        each is exported to; and the snapshots."""
        with self.db.session() as s:
            ready = list(s.scalars(select(StoredVolume.id).where(StoredVolume.state == "available")))
            failed = list(s.scalars(select(StoredVolume.id).where(StoredVolume.state == "error")))
        sizes = self.driver.volumes()
        exports = self.driver.exports()
        return storage.StorageReport(
            volumes={
                v: storage.StoredVolume(size_gib=sizes[v], node=exports.get(v, ""))
                for v in ready
                if v in sizes
            },
            snapshots=self.snapshots.report() if self.snapshots is not None else {},
            failed={v: "the restore from its snapshot failed (the SC's log says why)" for v in failed},
        )

    def repair(self) -> None:
        """Finish what a crash interrupted: volumes recorded as creating are made, those recorded as
        deleting are removed; a resize recorded but not made is made."""
        with self.db.session() as s:
            rows = [(r.id, r.state, r.size_gib, r.snapshot_id) for r in s.scalars(select(StoredVolume))]
        sizes = self.driver.volumes()
        with self.lock:
            for volume_id, state, size_gib, snapshot_id in rows:
                try:
                    if state == "creating" and snapshot_id:
                        self._restore_in_background(volume_id)
                    elif state == "creating":
                        self._create(volume_id)
                    elif state == "deleting":
                        self._delete(volume_id)
                    elif sizes.get(volume_id, size_gib) < size_gib:
                        self.driver.resize(volume_id, size_gib)
                except (RpcError, BlockStoreError) as exc:
                    log.warning("could not finish %s of %s: %s", state, volume_id, exc)

    def _restore_in_background(self, volume_id: str) -> None:
        with self._restoring_lock:
            if volume_id in self._restoring:
                return
            self._restoring.add(volume_id)
        threading.Thread(
            target=self._restore, args=(volume_id,), name=f"sc-restore-{volume_id}", daemon=True
        ).start()

    def _restore(self, volume_id: str) -> None:
        """Make a creating volume from its snapshot; a failure leaves it `error` (never reported)."""
        try:
            with self.db.session() as s:
                row = s.get(StoredVolume, volume_id)
                if row is None or row.state != "creating" or self.snapshots is None:
                    return
                snapshot_id, size_gib = row.snapshot_id, row.size_gib
            if self.driver.size_gib(volume_id) is None:  # else made before a crash: whole (renamed)
                self.scratch_dir.mkdir(parents=True, exist_ok=True)
                scratch = self.scratch_dir / f".{volume_id}.{secrets.token_hex(4)}.restore"
                try:
                    self.snapshots.restore(volume_id, snapshot_id, size_gib, scratch)
                    with self.lock:  # a delete meanwhile holds it too: never a volume it removed
                        with self.db.session() as s:
                            row = s.get(StoredVolume, volume_id)
                            if row is None or row.state != "creating":
                                return
                        self.driver.create(volume_id, size_gib, source=scratch)
                finally:
                    scratch.unlink(missing_ok=True)
            crashpoints.reached("sc.restore.made")
            with self.db.session() as s:
                row = s.get(StoredVolume, volume_id)
                if row is not None and row.state == "creating":
                    row.state = "available"
        except Exception as exc:  # the snapshot is gone or corrupt, the store down, the disk full
            log.warning("could not restore %s: %s", volume_id, exc)
            with self.db.session() as s:
                row = s.get(StoredVolume, volume_id)
                if row is not None and row.state == "creating":
                    row.state = "error"
        finally:
            with self._restoring_lock:
                self._restoring.discard(volume_id)

    def _create(self, volume_id: str) -> None:
        with self.db.session() as s:
            row = s.get(StoredVolume, volume_id)
            if row is None or row.state == "available" or row.snapshot_id:
                return
            size_gib = row.size_gib
        try:
            self.driver.create(volume_id, size_gib)
        except VolumeExists:
            # Made before a crash with a size asked for earlier: grow it to the newest ask.
            if (self.driver.size_gib(volume_id) or 0) < size_gib:
                self.driver.resize(volume_id, size_gib)
        except BlockStoreError as exc:
            raise RpcError(500, "CreateFailed", f"{volume_id}: {exc}") from exc
        crashpoints.reached("sc.create.made")
        with self.db.session() as s:
            row = s.get(StoredVolume, volume_id)
            if row is not None and row.state == "creating":
                row.state = "available"

    def _delete(self, volume_id: str) -> None:
        try:
            self.driver.delete(volume_id)
        except BlockStoreError as exc:
            raise RpcError(500, "DeleteFailed", f"{volume_id}: {exc}") from exc
        with self.db.session() as s:
            row = s.get(StoredVolume, volume_id)
            if row is not None and row.state == "deleting":
                s.delete(row)


def _check(volume_id: str) -> None:
    try:
        check_volume_id(volume_id)
    except BlockStoreError as exc:
        raise RpcError(400, "InvalidVolumeId", str(exc)) from exc
