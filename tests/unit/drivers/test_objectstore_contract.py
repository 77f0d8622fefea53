"""The object-store contract, run against every driver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mallee.core.context import FileBody
from mallee.drivers.objectstore.base import BlobNotFound, ObjectStore
from mallee.drivers.objectstore.filesystem import FilesystemObjectStore

DRIVERS: dict[str, Callable[[Path], ObjectStore]] = {"filesystem": FilesystemObjectStore}


@pytest.fixture(params=sorted(DRIVERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return DRIVERS[request.param](tmp_path)


def _read_all(store: ObjectStore, locator: str, offset: int, length: int) -> bytes:
    found = store.read(locator, offset, length)
    if isinstance(found, FileBody):
        with open(found.path, "rb") as f:
            f.seek(found.offset)
            return f.read(found.length)
    return b"".join(found)


def test_committed_blob_reads_back_whole_and_in_ranges(store: ObjectStore) -> None:
    w = store.writer()
    w.write(b"hello ")
    w.write(b"world")
    blob = w.commit()
    assert blob.size == 11
    assert _read_all(store, blob.locator, 0, 11) == b"hello world"
    assert _read_all(store, blob.locator, 6, 5) == b"world"


def test_every_blob_gets_its_own_locator(store: ObjectStore) -> None:
    locators = set()
    for _ in range(5):
        w = store.writer()
        w.write(b"same bytes")
        locators.add(w.commit().locator)
    assert len(locators) == 5


def test_aborted_write_leaves_nothing(store: ObjectStore) -> None:
    w = store.writer()
    w.write(b"partial")
    w.abort()
    w.abort()
    assert store.cleanup_incomplete() == 0


def test_crashed_writer_is_cleaned_up_and_never_readable(store: ObjectStore) -> None:
    w = store.writer()
    w.write(b"never committed")  # the process "dies" here: no commit, no abort
    assert store.cleanup_incomplete() >= 1


def test_delete_is_idempotent_and_reads_of_missing_blobs_raise(store: ObjectStore) -> None:
    w = store.writer()
    w.write(b"x")
    blob = w.commit()
    store.delete(blob.locator)
    store.delete(blob.locator)
    assert not store.exists(blob.locator)
    with pytest.raises(BlobNotFound):
        store.read(blob.locator, 0, 1)


@pytest.mark.parametrize("locator", ["../../etc/passwd", "/etc/passwd", "ab/../../x", "", "zz/short"])
def test_foreign_locators_never_escape_the_store(store: ObjectStore, locator: str) -> None:
    with pytest.raises(BlobNotFound):
        store.read(locator, 0, 1)
    assert not store.exists(locator)
    store.delete(locator)
