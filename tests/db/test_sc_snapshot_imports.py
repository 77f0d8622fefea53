"""Snapshots the Storage Controller imports from a URL (services/storage/snapshots.py `import_`,
imports.py), with the SC of test_sc_snapshots.py and images served by a local HTTP server: a raw or a
qcow2 image becomes a completed snapshot with the image's bytes, sharing chunks the store has; a
missing image or a bad one is an error with its reason; repair imports a pending one again."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from db import test_sc_snapshots as base
from db.test_sc_snapshots import SC, SNAP, SNAP2, VOL, VOL2, _restore, _settled, _snapshot, _write
from mallee.core import clock
from mallee.drivers.blockstore.base import GIB
from mallee.rpc import storage
from mallee.rpc.storage import IMPORTED_VOLUME
from mallee.rpc.transport import RpcError
from mallee.services.storage import tables
from mallee.services.storage.chunks import CHUNK_SIZE

sc = base.sc  # the same SC fixture (fake driver, and the file driver as root with qemu)
MIB = 1024 * 1024
SNAP3 = "snap-00000000000000ee1"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _image(path: Path) -> bytes:
    """10 MiB: a random chunk, a zero chunk, then 2 MiB of which the middle is zeros (a short chunk)."""
    data = random.randbytes(CHUNK_SIZE) + bytes(CHUNK_SIZE) + random.randbytes(MIB // 2)
    data += bytes(MIB) + random.randbytes(MIB // 2)
    path.write_bytes(data)
    return data


def _import(sc: SC, snapshot_id: str, url: str, disk_format: str = "raw") -> storage.StoredSnapshot:
    sc.snapshots.import_(storage.ImportSnapshot(snapshot_id=snapshot_id, url=url, disk_format=disk_format))
    return _settled(sc, snapshot_id)


def _restored_bytes(sc: SC, snapshot_id: str, length: int) -> tuple[bytes, str]:
    """The first `length` bytes of a volume restored from the snapshot, and the digest of the rest."""
    with open(_restore(sc, VOL2, snapshot_id), "rb") as f:
        head = f.read(length)
        rest = hashlib.sha256()
        while block := f.read(64 * MIB):
            rest.update(block)
    return head, rest.hexdigest()


ZEROS_AFTER_10_MIB = hashlib.sha256(bytes(GIB - 10 * MIB)).hexdigest()


def _no_temporary_files(sc: SC) -> bool:
    work = sc.state_dir / "tmp"
    return not work.exists() or not any(p.name.startswith(".import.") for p in work.iterdir())


def test_a_raw_image_is_imported_and_shares_the_chunks_the_store_has(
    sc: SC, served: tuple[Path, str]
) -> None:
    root, url = served
    data = _image(root / "disk.img")
    sc.volumes.create(storage.VolumeSpec(volume_id=VOL, size_gib=1))
    _write(sc, VOL, 0, data[:CHUNK_SIZE])  # the image's first chunk, already stored
    assert _snapshot(sc, SNAP).stored_bytes == CHUNK_SIZE
    found = _import(sc, SNAP2, f"{url}/disk.img?X-Amz-Signature=abc")
    assert found.state == "completed", found.reason
    assert (found.size_gib, found.progress) == (1, 100)
    assert found.stored_bytes == CHUNK_SIZE  # only the last chunk (zero-padded) was new
    manifest = json.loads(sc.store.get_manifest(SNAP2))
    assert manifest["volume_id"] == IMPORTED_VOLUME and sorted(manifest["chunks"]) == ["0", "2"]
    with sc.db.session() as s:
        row = s.get(tables.StoredSnapshot, SNAP2)
        assert row is not None and (row.volume_id, row.disk_format) == (IMPORTED_VOLUME, "raw")
    assert _no_temporary_files(sc)
    # Idempotent: the same import again changes nothing; another URL under that id is refused.
    sc.snapshots.import_(storage.ImportSnapshot(snapshot_id=SNAP2, url=f"{url}/disk.img?X-Amz-Signature=abc"))
    assert sc.snapshots.report()[SNAP2] == found
    with pytest.raises(RpcError) as refused:
        sc.snapshots.import_(storage.ImportSnapshot(snapshot_id=SNAP2, url=f"{url}/other.img"))
    assert refused.value.status == 409
    with pytest.raises(RpcError) as refused:  # nor is a snapshot of a volume under an imported one's id
        sc.snapshots.create(storage.SnapshotSpec(snapshot_id=SNAP2, volume_id=IMPORTED_VOLUME))
    assert refused.value.status == 409
    assert _restored_bytes(sc, SNAP2, len(data)) == (data, ZEROS_AFTER_10_MIB)


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_a_qcow2_image_is_imported_as_its_bytes(sc: SC, served: tuple[Path, str], tmp_path: Path) -> None:
    root, url = served
    data = _image(tmp_path / "disk.raw")
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(tmp_path / "disk.raw"),
            str(root / "d.qcow2"),
        ],
        check=True,
    )
    found = _import(sc, SNAP, f"{url}/d.qcow2", "qcow2")
    assert found.state == "completed", found.reason
    assert (found.size_gib, found.stored_bytes) == (1, 2 * CHUNK_SIZE)
    assert _no_temporary_files(sc)
    assert _restored_bytes(sc, SNAP, len(data)) == (data, ZEROS_AFTER_10_MIB)


def test_a_missing_or_bad_image_is_an_error_with_its_reason(sc: SC, served: tuple[Path, str]) -> None:
    root, url = served
    found = _import(sc, SNAP, f"{url}/missing.img?X-Amz-Signature=secret")
    assert found.state == "error" and "HTTP 404" in found.reason and "missing.img" in found.reason
    assert "secret" not in found.reason
    if shutil.which("qemu-img"):
        _image(root / "disk.raw")
        bad = _import(sc, SNAP2, f"{url}/disk.raw", "qcow2")
        assert bad.state == "error" and "qcow2" in bad.reason, bad.reason
    (root / "empty.img").write_bytes(b"")
    empty = _import(sc, SNAP3, f"{url}/empty.img")
    assert empty.state == "error" and "empty" in empty.reason
    assert _no_temporary_files(sc)
    assert not any(sc.store.path.glob("manifests/*.json"))


@pytest.mark.parametrize(
    ("url", "disk_format", "named"),
    [
        ("http://127.0.0.1:1/d.img", "vmdk", "disk_format"),
        ("file:///etc/passwd", "raw", "url"),
        ("/var/lib/disk.img", "raw", "url"),
    ],
)
def test_a_bad_disk_format_or_url_is_refused(sc: SC, url: str, disk_format: str, named: str) -> None:
    with pytest.raises(RpcError) as refused:
        sc.snapshots.import_(storage.ImportSnapshot(snapshot_id=SNAP, url=url, disk_format=disk_format))
    assert (refused.value.status, refused.value.code) == (400, "InvalidParameter")
    assert named in str(refused.value)
    assert sc.snapshots.report() == {}


def test_repair_imports_a_pending_import_again(sc: SC, served: tuple[Path, str]) -> None:
    """As after SIGKILL mid-import: a pending row, a stale chunk row, a temporary directory left."""
    root, url = served
    data = _image(root / "disk.img")
    with sc.db.session() as s:
        s.add(
            tables.StoredSnapshot(
                id=SNAP,
                volume_id=IMPORTED_VOLUME,
                size_gib=1,
                state="pending",
                progress=30,
                stored_bytes=0,
                reason="",
                source_snapshot_id="",
                source_url=f"{url}/disk.img",
                disk_format="raw",
                created=clock.now(),
            )
        )
        s.add(tables.SnapshotChunk(snapshot_id=SNAP, chunk=1, sha256="ab" * 32))  # zeros in the image
    sc.store.put("ab" * 32, b"stale")
    left = sc.state_dir / "tmp" / f".import.{SNAP}.k3j2h1"
    left.mkdir(parents=True)
    (left / "image").write_bytes(b"half")
    restarted = sc.restarted()
    restarted.snapshots.repair()
    found = _settled(restarted, SNAP)
    assert found.state == "completed" and found.progress == 100, found.reason
    assert not left.exists()
    assert not sc.store.has("ab" * 32)
    assert _restored_bytes(restarted, SNAP, len(data)) == (data, ZEROS_AFTER_10_MIB)
