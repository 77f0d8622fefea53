"""The Storage Controller's snapshots (rpc/storage.py): a point-in-time copy of a volume, cut into
4 MiB chunks stored once each by their sha256 in the chunk store (chunks.py), with a manifest per
snapshot. A later snapshot of the same volume uploads only the chunks that changed.

Record, then act: a snapshot is a `pending` row before a background worker takes it; its chunk rows
are written before the chunks are uploaded, so that they count as references at once; the manifest
is written last and only then is the row `completed`. A crash leaves a `pending` row that `repair()`
takes again from scratch (chunks are content-addressed: uploading one again is harmless), or a
`deleting` one that it deletes again. One lock (`_gc`) orders taking references against deleting
unreferenced chunks, so a chunk a new snapshot counts on is never deleted under it.

An imported snapshot (ImportSnapshot) is a disk image at a URL: its worker downloads it into a
temporary directory (converting qcow2 to raw, imports.py) and cuts that file into chunks with the same
code as a volume's; its row names the URL and format, so that repair imports it again from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import ColumnElement, delete, insert, literal, select

from mallee.core import clock, crashpoints
from mallee.db.session import Database
from mallee.drivers.blockstore.base import GIB, BlockStore, BlockStoreError, VolumeNotFound, check_volume_id
from mallee.rpc import storage
from mallee.rpc.contract import Handlers, Ok
from mallee.rpc.transport import RpcError
from mallee.services.storage import imports
from mallee.services.storage.chunks import CHUNK_SIZE, ChunkStore, ChunkStoreError
from mallee.services.storage.tables import SnapshotChunk, StoredSnapshot

log = logging.getLogger(__name__)

SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8,17}$")
_ZERO_CHUNK = bytes(CHUNK_SIZE)
_BATCH = 8  # chunks read and recorded per step (32 MiB in memory)
_PROGRESS_STEP = 5  # percent between progress writes
_THREADS = 4  # parallel chunk uploads and downloads: S3 round trips, not CPU, bound them


class _Stopped(Exception):
    """The snapshot was deleted while it was being taken."""


class _Failed(Exception):
    """The snapshot cannot be taken; the message is its reason."""


@dataclass
class _Cut:
    """A file cut into chunks: their digests by index (all-zero ones have none), those the crashed
    take before had, the file's size and the bytes this snapshot added to the store."""

    chunks: dict[int, str]
    old: dict[int, str]
    size: int
    stored: int


class Snapshots:
    def __init__(
        self,
        db: Database,
        driver: BlockStore,
        chunk_store_factory: Callable[[], ChunkStore],
        work_dir: Path | None = None,
    ) -> None:
        """`work_dir`: where imports download their images (beside the volumes, not in /tmp; the
        default is the system's temporary directory). A directory of its own is cleared of what a
        crashed import left at repair."""
        self.db = db
        self.driver = driver
        self._factory = chunk_store_factory
        self.work_dir = Path(work_dir or tempfile.gettempdir())
        self._own_work_dir = work_dir is not None
        self._store: ChunkStore | None = None
        self._guard = threading.Lock()  # the worker map and the store
        self._workers: dict[str, threading.Event] = {}  # snapshot -> its stop flag
        self._gc = threading.Lock()

    def handlers(self) -> Handlers:
        handlers = Handlers()
        handlers.add(storage.CREATE_SNAPSHOT, self.create)
        handlers.add(storage.COPY_SNAPSHOT, self.copy)
        handlers.add(storage.IMPORT_SNAPSHOT, self.import_)
        handlers.add(storage.DELETE_SNAPSHOT, self.delete)
        return handlers

    def create(self, p: storage.SnapshotSpec) -> Ok:
        _check(p.snapshot_id, p.volume_id)
        with self.db.session() as s:
            row = s.get(StoredSnapshot, p.snapshot_id)
            if row is None:
                s.add(_row(p.snapshot_id, p.volume_id))
            elif row.volume_id != p.volume_id or row.source_snapshot_id or row.source_url:
                raise RpcError(409, "SnapshotExists", f"{p.snapshot_id} is of another volume")
            elif row.state == "deleting":
                raise RpcError(409, "SnapshotDeleting", f"{p.snapshot_id} is being deleted")
            elif row.state != "pending":
                return Ok()
        crashpoints.reached("sc.snapshot.recorded")
        self._start(p.snapshot_id, partial(self._take, p.snapshot_id, p.volume_id))
        return Ok()

    def import_(self, p: storage.ImportSnapshot) -> Ok:
        _check(p.snapshot_id)
        if p.disk_format not in imports.DISK_FORMATS:
            raise RpcError(400, "InvalidParameter", f"disk_format {p.disk_format!r} is not one of raw, qcow2")
        problem = imports.url_problem(p.url)
        if problem:
            raise RpcError(400, "InvalidParameter", problem)
        with self.db.session() as s:
            row = s.get(StoredSnapshot, p.snapshot_id)
            if row is None:
                s.add(_row(p.snapshot_id, storage.IMPORTED_VOLUME, url=p.url, disk_format=p.disk_format))
            elif (row.source_url, row.disk_format) != (p.url, p.disk_format):
                raise RpcError(409, "SnapshotExists", f"{p.snapshot_id} exists and is not that import")
            elif row.state == "deleting":
                raise RpcError(409, "SnapshotDeleting", f"{p.snapshot_id} is being deleted")
            elif row.state != "pending":
                return Ok()
        crashpoints.reached("sc.import.recorded")
        self._start(p.snapshot_id, partial(self._import, p.snapshot_id, p.url, p.disk_format))
        return Ok()

    def copy(self, p: storage.CopySnapshot) -> Ok:
        _check(p.snapshot_id)
        _check(p.source_snapshot_id)
        with self._gc, self.db.session() as s:
            row = s.get(StoredSnapshot, p.snapshot_id)
            if row is not None:
                if row.source_snapshot_id != p.source_snapshot_id or row.state == "deleting":
                    raise RpcError(409, "SnapshotExists", f"{p.snapshot_id} exists and is not that copy")
                if row.state != "pending":
                    return Ok()
            else:
                source = s.get(StoredSnapshot, p.source_snapshot_id)
                if source is None or source.state == "deleting":
                    raise RpcError(
                        404, "SnapshotNotFound", f"the SC holds no snapshot {p.source_snapshot_id}"
                    )
                if source.state != "completed":
                    raise RpcError(409, "IncorrectState", f"{p.source_snapshot_id} is {source.state}")
                s.add(_row(p.snapshot_id, source.volume_id, source.size_gib, p.source_snapshot_id))
                # The copy's rows name the source's chunks, in the same transaction: shared, no bytes.
                s.execute(
                    insert(SnapshotChunk).from_select(
                        ["snapshot_id", "chunk", "sha256"],
                        select(literal(p.snapshot_id), SnapshotChunk.chunk, SnapshotChunk.sha256).where(
                            SnapshotChunk.snapshot_id == p.source_snapshot_id
                        ),
                    )
                )
        crashpoints.reached("sc.snapshot.copy.recorded")
        self._finish_copy(p.snapshot_id)
        return Ok()

    def delete(self, p: storage.SnapshotRef) -> Ok:
        _check(p.snapshot_id)
        with self.db.session() as s:
            row = s.get(StoredSnapshot, p.snapshot_id)
            if row is None:
                return Ok()
            row.state = "deleting"
        crashpoints.reached("sc.snapshot.delete.recorded")
        with self._guard:
            stop = self._workers.get(p.snapshot_id)
            if stop is not None:  # its worker deletes it once it has stopped
                stop.set()
                return Ok()
        try:
            self._delete(p.snapshot_id)
        except ChunkStoreError as exc:
            raise RpcError(500, "DeleteFailed", f"{p.snapshot_id}: {exc}") from exc
        return Ok()

    def report(self) -> dict[str, storage.StoredSnapshot]:
        """Every snapshot but those being deleted, for describe."""
        with self.db.session() as s:
            rows = s.scalars(select(StoredSnapshot).where(StoredSnapshot.state != "deleting"))
            return {
                r.id: storage.StoredSnapshot(
                    state=r.state,
                    progress=r.progress,
                    size_gib=r.size_gib,
                    stored_bytes=r.stored_bytes,
                    reason=r.reason,
                )
                for r in rows
            }

    def repair(self) -> None:
        """Finish what a crash interrupted: pending snapshots are taken (or imported) again, a
        pending copy is finished, deleting ones are deleted; a crashed import's temporary files go."""
        if self._own_work_dir and self.work_dir.is_dir():
            for snapshot_id, path in imports.work_dirs(self.work_dir):
                with self._guard:
                    running = snapshot_id in self._workers
                if not running:  # a running import's worker made its directory after it registered
                    shutil.rmtree(path, ignore_errors=True)
        with self.db.session() as s:
            rows = [
                (r.id, r.volume_id, r.state, r.source_snapshot_id, r.source_url, r.disk_format)
                for r in s.scalars(select(StoredSnapshot))
            ]
        for snapshot_id, volume_id, state, source, url, disk_format in rows:
            try:
                if state == "pending" and source:
                    self._finish_copy(snapshot_id)
                elif state == "pending" and url:
                    self._start(snapshot_id, partial(self._import, snapshot_id, url, disk_format or "raw"))
                elif state == "pending":
                    self._start(snapshot_id, partial(self._take, snapshot_id, volume_id))
                elif state == "deleting":
                    self._delete(snapshot_id)
            except (ChunkStoreError, RpcError) as exc:
                log.warning("could not finish %s of %s: %s", state, snapshot_id, exc)

    def restore(self, volume_id: str, snapshot_id: str, size_gib: int, into: Path) -> None:
        """Write a sparse file of `size_gib` at `into` with the snapshot's chunks at their offsets
        and zeros elsewhere (each chunk checked against its digest). Raises ChunkStoreError."""
        with self.db.session() as s:
            row = s.get(StoredSnapshot, snapshot_id)
            if row is not None and row.state != "completed":
                raise ChunkStoreError(f"{snapshot_id} is {row.state}, not completed")
        store = self.store()
        manifest = json.loads(store.get_manifest(snapshot_id))
        if manifest["size_gib"] > size_gib:
            raise ChunkStoreError(f"{snapshot_id} is {manifest['size_gib']} GiB; {volume_id} is {size_gib}")
        chunk_size: int = manifest["chunk_size"]
        with open(into, "wb") as f:
            f.truncate(size_gib * GIB)
            fd = f.fileno()

            def place(item: tuple[str, str]) -> None:
                index, digest = item
                data = store.get(digest)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise ChunkStoreError(f"chunk {digest} of {snapshot_id} is corrupt")
                os.pwrite(fd, data, int(index) * chunk_size)

            with ThreadPoolExecutor(_THREADS) as pool:
                for _ in pool.map(place, manifest["chunks"].items()):
                    pass
            os.fsync(fd)

    def store(self) -> ChunkStore:
        with self._guard:
            if self._store is None:
                self._store = self._factory()
            return self._store

    # Taking a snapshot

    def _start(self, snapshot_id: str, work: Callable[[threading.Event], None]) -> None:
        """Run `work` (a take or an import, given the stop flag) in a worker, unless one runs."""
        with self._guard:
            if snapshot_id in self._workers:
                return
            stop = self._workers[snapshot_id] = threading.Event()
        threading.Thread(
            target=self._run, args=(snapshot_id, work, stop), name=f"sc-{snapshot_id}", daemon=True
        ).start()

    def _run(self, snapshot_id: str, work: Callable[[threading.Event], None], stop: threading.Event) -> None:
        try:
            work(stop)
        except _Stopped:
            pass
        except _Failed as exc:
            self._update(snapshot_id, state="error", reason=str(exc)[:1000])
        except Exception as exc:  # whatever went wrong is the snapshot's error, with its reason
            log.warning("snapshot %s failed: %s", snapshot_id, exc)
            self._update(snapshot_id, state="error", reason=f"{type(exc).__name__}: {exc}"[:1000])
        finally:
            with self._guard:
                del self._workers[snapshot_id]
                stopped = stop.is_set()
        if stopped:
            try:
                self._delete(snapshot_id)
            except ChunkStoreError as exc:
                log.warning("could not delete %s (repair will): %s", snapshot_id, exc)

    def _take(self, snapshot_id: str, volume_id: str, stop: threading.Event) -> None:
        try:
            with self.driver.point_in_time(volume_id) as path, open(path, "rb") as f:
                cut = self._cut(snapshot_id, f, stop)
        except VolumeNotFound:
            raise _Failed(f"the SC holds no volume {volume_id}") from None
        self._complete(snapshot_id, volume_id, cut)

    def _import(self, snapshot_id: str, url: str, disk_format: str, stop: threading.Event) -> None:
        def check() -> None:
            if stop.is_set():
                raise _Stopped

        try:
            with imports.fetched(url, disk_format, self.work_dir, snapshot_id, check) as path:
                crashpoints.reached("sc.import.downloaded")
                with open(path, "rb") as f:
                    cut = self._cut(snapshot_id, f, stop)
        except imports.ImportFailed as exc:
            raise _Failed(str(exc)) from None
        self._complete(snapshot_id, storage.IMPORTED_VOLUME, cut)

    def _cut(self, snapshot_id: str, f: BinaryIO, stop: threading.Event) -> _Cut:
        """Cut the open file into chunks, batch by batch: record the batch's rows, then upload the
        chunks the store lacks. The file is as long as its whole GiB: a short last chunk ends in zeros."""
        store = self.store()
        with self.db.session() as s:
            old = {
                c.chunk: c.sha256 for c in s.scalars(select(SnapshotChunk).where(_of(snapshot_id)))
            }  # a crashed take's
        chunks: dict[int, str] = {}
        stored = shown = 0
        size = os.fstat(f.fileno()).st_size
        count = -(-size // CHUNK_SIZE)
        self._update(snapshot_id, size_gib=_whole_gib(size), progress=0, stored_bytes=0)
        with ThreadPoolExecutor(_THREADS) as pool:
            for start in range(0, count, _BATCH):
                if stop.is_set():
                    raise _Stopped
                data: dict[str, bytes] = {}
                batch: dict[int, str] = {}
                for index in range(start, min(start + _BATCH, count)):
                    block = os.pread(f.fileno(), CHUNK_SIZE, index * CHUNK_SIZE)
                    if block != _ZERO_CHUNK[: len(block)]:  # zeros are not stored: sparse
                        if len(block) < CHUNK_SIZE:
                            block += _ZERO_CHUNK[len(block) :]
                        batch[index] = hashlib.sha256(block).hexdigest()
                        data[batch[index]] = block
                missing = self._reference(snapshot_id, batch, store)
                for _ in pool.map(store.put, missing, [data[d] for d in missing]):
                    pass
                stored += sum(len(data[d]) for d in missing)
                chunks.update(batch)
                progress = min(start + _BATCH, count) * 100 // count
                if progress >= shown + _PROGRESS_STEP and progress < 100:
                    shown = progress
                    self._update(snapshot_id, progress=progress, stored_bytes=stored)
        if stop.is_set():
            raise _Stopped
        return _Cut(chunks, old, size, stored)

    def _complete(self, snapshot_id: str, volume_id: str, cut: _Cut) -> None:
        """Drop what a crashed take left that this one has not, write the manifest, and only then
        record the snapshot completed."""
        store = self.store()
        crashpoints.reached("sc.snapshot.chunks_stored")
        with self._gc:  # a crashed take's rows for chunks that are zeros now go, and their chunks
            with self.db.session() as s:
                gone = set(cut.old) - set(cut.chunks)
                s.execute(delete(SnapshotChunk).where(_of(snapshot_id), SnapshotChunk.chunk.in_(gone)))
            self._collect(store, set(cut.old.values()) - set(cut.chunks.values()))
        manifest = {
            "snapshot_id": snapshot_id,
            "volume_id": volume_id,
            "size_gib": _whole_gib(cut.size),
            "chunk_size": CHUNK_SIZE,
            "chunks": {str(i): d for i, d in sorted(cut.chunks.items())},
        }
        store.put_manifest(snapshot_id, json.dumps(manifest).encode())
        crashpoints.reached("sc.snapshot.manifest_written")
        self._update(snapshot_id, state="completed", progress=100, stored_bytes=cut.stored)

    def _reference(self, snapshot_id: str, batch: dict[int, str], store: ChunkStore) -> set[str]:
        """Record the batch's chunk rows, then say which of its chunks the store lacks. Under `_gc`:
        once the rows are in, no deletion removes those chunks."""
        with self._gc:
            with self.db.session() as s:
                row = s.get(StoredSnapshot, snapshot_id)
                if row is None or row.state != "pending":
                    raise _Stopped
                for index, digest in batch.items():
                    s.merge(SnapshotChunk(snapshot_id=snapshot_id, chunk=index, sha256=digest))
                # A completed snapshot's chunks are in the store: no need to ask it.
                known = set(
                    s.scalars(
                        select(SnapshotChunk.sha256)
                        .join(StoredSnapshot, StoredSnapshot.id == SnapshotChunk.snapshot_id)
                        .where(
                            SnapshotChunk.sha256.in_(set(batch.values())), StoredSnapshot.state == "completed"
                        )
                    )
                )
            return {d for d in set(batch.values()) - known if not store.has(d)}

    # Copies and deletion

    def _finish_copy(self, snapshot_id: str) -> None:
        with self.db.session() as s:
            row = s.get(StoredSnapshot, snapshot_id)
            if row is None or row.state != "pending":
                return
            size_gib, volume_id = row.size_gib, row.volume_id
            chunks = {
                str(c.chunk): c.sha256
                for c in s.scalars(
                    select(SnapshotChunk).where(_of(snapshot_id)).order_by(SnapshotChunk.chunk)
                )
            }
        manifest = {
            "snapshot_id": snapshot_id,
            "volume_id": volume_id,
            "size_gib": size_gib,
            "chunk_size": CHUNK_SIZE,
            "chunks": chunks,
        }
        try:
            self.store().put_manifest(snapshot_id, json.dumps(manifest).encode())
        except ChunkStoreError as exc:
            raise RpcError(500, "CopyFailed", f"{snapshot_id}: {exc}") from exc
        self._update(snapshot_id, state="completed", progress=100)

    def _delete(self, snapshot_id: str) -> None:
        """The manifest, then the chunks no other snapshot names, then the rows: a crash anywhere
        leaves the `deleting` row for repair."""
        store = self.store()
        store.delete_manifest(snapshot_id)
        with self._gc:
            with self.db.session() as s:
                digests = set(s.scalars(select(SnapshotChunk.sha256).where(_of(snapshot_id))))
            self._collect(store, digests, excluding=snapshot_id)
            with self.db.session() as s:
                s.execute(delete(SnapshotChunk).where(_of(snapshot_id)))
                row = s.get(StoredSnapshot, snapshot_id)
                if row is not None and row.state == "deleting":
                    s.delete(row)

    def _collect(self, store: ChunkStore, digests: Iterable[str], excluding: str = "") -> None:
        """Delete the chunks among `digests` that no snapshot (but `excluding`) names. Under `_gc`."""
        wanted = sorted(set(digests))
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            with self.db.session() as s:
                named = set(
                    s.scalars(
                        select(SnapshotChunk.sha256).where(
                            SnapshotChunk.sha256.in_(part), SnapshotChunk.snapshot_id != excluding
                        )
                    )
                )
            for digest in part:
                if digest not in named:
                    store.delete(digest)

    def _update(self, snapshot_id: str, **values: object) -> None:
        """Change a pending snapshot's row (one being deleted, or gone, is left alone)."""
        with self.db.session() as s:
            row = s.get(StoredSnapshot, snapshot_id)
            if row is not None and row.state == "pending":
                for name, value in values.items():
                    setattr(row, name, value)


def _row(
    snapshot_id: str,
    volume_id: str,
    size_gib: int = 0,
    source: str = "",
    url: str = "",
    disk_format: str = "",
) -> StoredSnapshot:
    return StoredSnapshot(
        id=snapshot_id,
        volume_id=volume_id,
        size_gib=size_gib,
        state="pending",
        progress=0,
        stored_bytes=0,
        reason="",
        source_snapshot_id=source,
        source_url=url,
        disk_format=disk_format,
        created=clock.now(),
    )


def _whole_gib(size: int) -> int:
    return -(-size // GIB)


def _of(snapshot_id: str) -> ColumnElement[bool]:
    return SnapshotChunk.snapshot_id == snapshot_id


def _check(snapshot_id: str, volume_id: str | None = None) -> None:
    if not SNAPSHOT_ID.match(snapshot_id):
        raise RpcError(
            400, "InvalidSnapshotId", f"{snapshot_id!r} is not of the form snap-<8 to 17 hex digits>"
        )
    if volume_id is not None:
        try:
            check_volume_id(volume_id)
        except BlockStoreError as exc:
            raise RpcError(400, "InvalidVolumeId", str(exc)) from exc
