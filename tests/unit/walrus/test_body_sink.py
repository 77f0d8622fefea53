"""BodySink: small bodies stay in memory for the object's row, larger ones (and every body when
keeping is off) go to a blob in the object store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mallee.core.context import FileBody
from mallee.drivers.objectstore.filesystem import FilesystemObjectStore
from mallee.services.walrus.bodies import BodySink


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path)


def files(store: FilesystemObjectStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("pieces", [[], [b""], [b"ab", b"cd"], [b"x" * 10]])
def test_a_body_up_to_the_limit_is_kept(store: FilesystemObjectStore, pieces: list[bytes]) -> None:
    sink = BodySink(store, keep_up_to=10)
    for piece in pieces:
        sink.write(piece)
    stored = sink.commit()
    assert (stored.inline, stored.locator, stored.size) == (b"".join(pieces), None, len(b"".join(pieces)))
    assert files(store) == []


def test_a_larger_body_spills_to_one_blob_with_every_byte(store: FilesystemObjectStore) -> None:
    sink = BodySink(store, keep_up_to=10)
    for piece in (b"0123", b"4567", b"89ab", b"cdef"):
        sink.write(piece)
    stored = sink.commit()
    assert stored.inline is None and stored.locator is not None and stored.size == 16
    body = store.read(stored.locator, 0, 16)
    assert isinstance(body, FileBody) and body.path.read_bytes() == b"0123456789abcdef"
    stored.discard(store)
    assert files(store) == []


def test_without_keeping_even_an_empty_body_is_a_blob(store: FilesystemObjectStore) -> None:
    stored = BodySink(store).commit()
    assert stored.inline is None and stored.locator is not None and stored.size == 0
    assert store.exists(stored.locator)


def test_abort_leaves_nothing(store: FilesystemObjectStore) -> None:
    sink = BodySink(store, keep_up_to=4)
    sink.write(b"more than four")
    sink.abort()
    assert files(store) == []
