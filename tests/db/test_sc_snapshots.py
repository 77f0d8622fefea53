"""The Storage Controller's snapshots (services/storage/snapshots.py) on an SQLite SC database, a
directory chunk store and real bytes: the fake block store keeping bytes, and the file driver when
running as root with qemu-storage-daemon. Snapshot and restore give the same bytes, a second snapshot
stores only changed chunks, copies share chunks, deletion removes only unshared ones, a crash is
finished by repair, and an exported volume written during a snapshot keeps its point-in-time bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mallee.core import clock
from mallee.db import migrate
from mallee.db.base import Base
from mallee.db.session import Database
from mallee.drivers.blockstore.base import GIB, BlockStore
from mallee.drivers.blockstore.fake import FakeBlockStore
from mallee.drivers.blockstore.file import FileBlockStore
from mallee.rpc import storage
from mallee.rpc.contract import Empty
from mallee.services.storage import tables
from mallee.services.storage.chunks import CHUNK_SIZE, DirChunkStore
from mallee.services.storage.snapshots import Snapshots
from mallee.services.storage.volumes import Volumes

REAL = os.geteuid() == 0 and all(shutil.which(b) for b in ("qemu-storage-daemon", "qemu-io"))
VOL, VOL2, VOL3 = "vol-0123456789abcdef0", "vol-00000000000000aa1", "vol-00000000000000aa2"
SNAP, SNAP2, COPY = "snap-0123456789abcdef0", "snap-00000000000000bb1", "snap-00000000000000cc1"
MIB = 1024 * 1024


@dataclass
class SC:
    db: Database
    driver: BlockStore
    store: DirChunkStore
    snapshots: Snapshots
    volumes: Volumes
    state_dir: Path

    def restarted(self) -> SC:
        """A new SC process on the same database, driver state and store (its workers are not)."""
        snapshots = Snapshots(self.db, self.driver, lambda: self.store, self.state_dir / "tmp")
        return SC(
            self.db,
            self.driver,
            self.store,
            snapshots,
            Volumes(self.db, self.driver, snapshots),
            self.state_dir,
        )


def _sc(kind: str, base: Path) -> SC:
    db = Database(f"sqlite:///{base / 'sc.db'}")
    migrate.upgrade(db.engine, "sc")
    state_dir = base / "bs"
    state_dir.mkdir()
    driver: BlockStore = (
        FileBlockStore(state_dir) if kind == "file" else FakeBlockStore(state_dir, keep_bytes=True)
    )
    store = DirChunkStore(base / "store")
    snapshots = Snapshots(db, driver, lambda: store, state_dir / "tmp")
    return SC(db, driver, store, snapshots, Volumes(db, driver, snapshots, state_dir / "tmp"), state_dir)


@pytest.fixture(
    params=["fake", pytest.param("file", marks=pytest.mark.skipif(not REAL, reason="needs root and qemu"))]
)
def sc(request: pytest.FixtureRequest) -> Iterator[SC]:
    base = Path(tempfile.mkdtemp(prefix="mallee-sc-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    made = _sc(request.param, base)
    try:
        yield made
    finally:
        made.driver.teardown()
        made.db.dispose()
        shutil.rmtree(base, ignore_errors=True)


def _write(sc: SC, volume_id: str, offset: int, data: bytes) -> None:
    path = sc.driver.open_path(volume_id)
    assert path is not None
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), data, offset)


def _fill(sc: SC, volume_id: str, size: int) -> None:
    """Every chunk different (random), so nothing is shared by chance."""
    path = sc.driver.open_path(volume_id)
    assert path is not None
    with open(path, "r+b") as f:
        for offset in range(0, size, CHUNK_SIZE):
            os.pwrite(f.fileno(), random.randbytes(CHUNK_SIZE), offset)


def _digest(path: Path | None) -> str:
    assert path is not None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    return h.hexdigest()


def _settled(sc: SC, snapshot_id: str, timeout: float = 120) -> storage.StoredSnapshot:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sc.snapshots.report().get(snapshot_id)
        if found is not None and found.state != "pending":
            return found
        time.sleep(0.01)
    raise AssertionError(f"{snapshot_id} still pending")


def _snapshot(sc: SC, snapshot_id: str, volume_id: str = VOL) -> storage.StoredSnapshot:
    sc.snapshots.create(storage.SnapshotSpec(snapshot_id=snapshot_id, volume_id=volume_id))
    found = _settled(sc, snapshot_id)
    assert found.state == "completed", found.reason
    return found


def _restore(sc: SC, volume_id: str, snapshot_id: str, size_gib: int = 1) -> Path:
    sc.volumes.create(storage.VolumeSpec(volume_id=volume_id, size_gib=size_gib, snapshot_id=snapshot_id))
    deadline = time.monotonic() + 120
    while volume_id not in sc.volumes.describe(Empty()).volumes:
        assert time.monotonic() < deadline, f"{volume_id} never became available"
        time.sleep(0.01)
    path = sc.driver.open_path(volume_id)
    assert path is not None
    return path


def _chunks(sc: SC) -> set[str]:
    return {p.name for p in (sc.store.path / "chunks").iterdir() if not p.name.startswith(".")}


def test_snapshot_then_restore_gives_the_same_bytes(sc: SC) -> None:
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _write(sc, VOL, 0, random.randbytes(9 * MIB))
    _write(sc, VOL, 300 * MIB + 17, b"in the middle")
    _write(sc, VOL, GIB - 4096, b"\xff" * 4096)
    found = _snapshot(sc, SNAP)
    assert (found.progress, found.size_gib) == (100, 1)
    assert found.stored_bytes == 5 * CHUNK_SIZE  # three chunks of data, one in the middle, the last
    restored = _restore(sc, VOL2, SNAP, size_gib=2)
    assert restored.stat().st_size == 2 * GIB
    with open(restored, "rb") as f:
        head = f.read(GIB)
        assert hashlib.sha256(head).hexdigest() == _digest(sc.driver.open_path(VOL))
        assert f.read(4096) == bytes(4096)


def test_a_second_snapshot_stores_only_changed_chunks(sc: SC) -> None:
    """The first 256 MiB of a 1 GiB volume hold random bytes (the rest zeros, never stored); then 1 %
    of the volume changes in one region. The figures of the full 1 GiB case: bench/volumes.py."""
    filled = 256 * MIB
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _fill(sc, VOL, filled)
    first = _snapshot(sc, SNAP)
    assert first.stored_bytes == filled
    restored = _restore(sc, VOL3, SNAP)
    assert _digest(restored) == _digest(sc.driver.open_path(VOL))

    one_percent = GIB // 100
    _write(sc, VOL, 200 * MIB + 12345, random.randbytes(one_percent))  # one contiguous region
    contiguous = _snapshot(sc, SNAP2).stored_bytes
    # The changed 10 MiB and the two chunks it straddles at its ends: nothing else.
    assert one_percent <= contiguous <= one_percent + 2 * CHUNK_SIZE <= GIB * 5 // 100
    rng = random.Random(7)
    for _ in range(64):  # 4 KiB pieces in 64 distinct chunks of the filled part
        chunk = rng.randrange(filled // CHUNK_SIZE)
        _write(sc, VOL, chunk * CHUNK_SIZE + rng.randrange(CHUNK_SIZE // 4096) * 4096, rng.randbytes(4096))
    scattered = _snapshot(sc, "snap-00000000000000dd1").stored_bytes
    assert scattered <= 64 * CHUNK_SIZE  # each touched chunk is stored whole once, the rest not again


def test_a_copy_shares_the_chunks_and_outlives_its_source(sc: SC) -> None:
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _write(sc, VOL, 0, random.randbytes(3 * CHUNK_SIZE))
    _snapshot(sc, SNAP)
    before = _chunks(sc)
    sc.snapshots.copy(storage.CopySnapshot(snapshot_id=COPY, source_snapshot_id=SNAP))
    sc.snapshots.copy(storage.CopySnapshot(snapshot_id=COPY, source_snapshot_id=SNAP))
    copied = sc.snapshots.report()[COPY]
    assert (copied.state, copied.stored_bytes, copied.size_gib) == ("completed", 0, 1)
    assert _chunks(sc) == before
    sc.snapshots.delete(storage.SnapshotRef(snapshot_id=SNAP))
    assert _chunks(sc) == before
    assert _digest(_restore(sc, VOL2, COPY)) == _digest(sc.driver.open_path(VOL))
    sc.snapshots.delete(storage.SnapshotRef(snapshot_id=COPY))
    sc.snapshots.delete(storage.SnapshotRef(snapshot_id=COPY))
    assert _chunks(sc) == set()
    assert sc.snapshots.report() == {}


def test_delete_removes_only_the_chunks_no_other_snapshot_has(sc: SC) -> None:
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _write(sc, VOL, 0, random.randbytes(4 * CHUNK_SIZE))
    _snapshot(sc, SNAP)
    first = _chunks(sc)
    _write(sc, VOL, CHUNK_SIZE, b"changed")
    _snapshot(sc, SNAP2)
    assert len(_chunks(sc)) == 5
    sc.snapshots.delete(storage.SnapshotRef(snapshot_id=SNAP))
    assert len(_chunks(sc) & first) == 3 and len(_chunks(sc)) == 4
    assert not (sc.store.path / "manifests" / f"{SNAP}.json").exists()
    assert _digest(_restore(sc, VOL2, SNAP2)) == _digest(sc.driver.open_path(VOL))


def test_a_crash_mid_snapshot_is_taken_again_by_repair(sc: SC) -> None:
    """As after SIGKILL: a pending row with no worker, some chunk rows, a half-written manifest."""
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _write(sc, VOL, 0, random.randbytes(2 * CHUNK_SIZE))
    with sc.db.session() as s:
        s.add(
            tables.StoredSnapshot(
                id=SNAP,
                volume_id=VOL,
                size_gib=1,
                state="pending",
                progress=40,
                stored_bytes=0,
                reason="",
                source_snapshot_id="",
                created=clock.now(),
            )
        )
        s.add(tables.SnapshotChunk(snapshot_id=SNAP, chunk=7, sha256="ab" * 32))  # zeros now
        s.add(
            tables.StoredSnapshot(
                id=SNAP2,
                volume_id=VOL,
                size_gib=1,
                state="deleting",
                progress=100,
                stored_bytes=0,
                reason="",
                source_snapshot_id="",
                created=clock.now(),
            )
        )
    sc.store.put("ab" * 32, b"stale")
    (sc.store.path / "manifests" / f"{SNAP}.json").write_bytes(b'{"snapshot_id": "snap-01')
    assert sc.snapshots.report()[SNAP].state == "pending"
    restarted = sc.restarted()
    restarted.snapshots.repair()
    found = _settled(restarted, SNAP)
    assert found.state == "completed" and found.progress == 100
    assert SNAP2 not in restarted.snapshots.report()
    assert "ab" * 32 not in _chunks(sc)
    assert _digest(_restore(restarted, VOL2, SNAP)) == _digest(sc.driver.open_path(VOL))


def test_a_snapshot_of_a_missing_volume_is_an_error_with_its_reason(sc: SC) -> None:
    sc.snapshots.create(storage.SnapshotSpec(snapshot_id=SNAP, volume_id=VOL))
    found = _settled(sc, SNAP)
    assert found.state == "error" and VOL in found.reason


def test_deleting_a_pending_snapshot_stops_its_worker(sc: SC) -> None:
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _fill(sc, VOL, 256 * MIB)
    sc.snapshots.create(storage.SnapshotSpec(snapshot_id=SNAP, volume_id=VOL))
    sc.snapshots.delete(storage.SnapshotRef(snapshot_id=SNAP))
    deadline = time.monotonic() + 60
    while sc.snapshots._workers:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sc.snapshots.report() == {}
    assert _chunks(sc) == set()
    with sc.db.session() as s:
        assert s.query(tables.SnapshotChunk).count() == 0


def test_progress_goes_from_0_to_100(sc: SC) -> None:
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _fill(sc, VOL, 512 * MIB)
    seen: list[int] = []
    put = sc.store.put

    def watching(digest: str, data: bytes) -> None:
        seen.append(sc.snapshots.report()[SNAP].progress)
        put(digest, data)

    sc.store.put = watching  # type: ignore[method-assign]
    found = _snapshot(sc, SNAP)
    assert seen[0] == 0 and seen == sorted(seen) and 0 < seen[-1] < 100
    assert found.progress == 100


class _WritingDriver:
    """The file driver, with a guest writing to the volume while a point-in-time copy is read."""

    def __init__(self, driver: BlockStore, during: Callable[[], None]) -> None:
        self.driver, self.during = driver, during

    def __getattr__(self, name: str) -> object:
        return getattr(self.driver, name)

    @contextlib.contextmanager
    def point_in_time(self, volume_id: str) -> Iterator[Path]:
        with self.driver.point_in_time(volume_id) as path:
            self.during()
            yield path


@pytest.mark.skipif(not REAL, reason="needs root and qemu")
def test_a_snapshot_of_an_exported_volume_keeps_its_point_in_time_bytes(short_tmp_path: Path) -> None:
    tmp_path = short_tmp_path  # the export's sockets live under it
    sc = _sc("file", tmp_path)
    try:
        sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
        export = sc.driver.export(VOL, "127.0.0.1:8775")
        url = f"nbd+unix:///{export.name}?socket={export.endpoints[0].socket}"

        def qemu_io(command: str) -> None:
            done = subprocess.run(
                ["qemu-io", "-f", "raw", url, "-c", command], capture_output=True, timeout=30
            )
            assert done.returncode == 0, done.stderr

        qemu_io("write -P 0x11 0 16M")
        before = _digest(sc.driver.open_path(VOL))
        writing = _WritingDriver(sc.driver, lambda: qemu_io("write -P 0x22 4M 8M"))
        sc.snapshots = Snapshots(sc.db, writing, lambda: sc.store)  # type: ignore[arg-type]
        sc.volumes = Volumes(sc.db, sc.driver, sc.snapshots, tmp_path / "scratch")
        _snapshot(sc, SNAP)
        assert _digest(sc.driver.open_path(VOL)) != before  # the guest's write landed
        assert _digest(_restore(sc, VOL2, SNAP)) == before
    finally:
        sc.driver.teardown()


def test_the_sc_tree_builds_the_schema_its_models_describe(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'sc.db'}")
    migrate.upgrade(db.engine, "sc")
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diffs = [d for d in compare_metadata(ctx, Base.metadata) if _sc_table(d)]
    assert diffs == []


def _sc_table(diff: object) -> bool:
    item = diff[0] if isinstance(diff, list) else diff
    return "sc_" in repr(item)
