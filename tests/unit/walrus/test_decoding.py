"""Sending an encrypted file: decoded on the loop, or made and written on a thread through the
door's write_body; the same bytes either way, whole and ranged; which one when; an error in
decoding reaches the sender."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mallee.core.context import FileBody
from mallee.services.walrus import decoding
from mallee.services.walrus.encryption import crypt, positioned

KEY = bytes(range(32))
SIZES = [1000, 5 * 1024 * 1024, 9 * 1024 * 1024 + 17]


def stored(tmp_path: Path, size: int) -> tuple[bytes, Path]:
    clear = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 100 + crypt(KEY, 0, clear))  # the blob starts 100 bytes in
    return clear, path


def body(path: Path, start: int, length: int) -> FileBody:
    """Bytes start..start+length of the clear stream, which begins 100 bytes into the file."""
    return FileBody(path, 100 + start, length, decode=lambda at: positioned(KEY, at - 100))


def on_the_loop(file: FileBody) -> bytes:
    with file.open() as f:
        return b"".join(decoding.decoded(file, f))


class Door:
    """write_body as the door offers it: fill(write) on a thread of its own; records what came."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.threads: set[str] = set()

    async def write_body(self, fill: Callable[[Callable[[memoryview], None]], None], length: int) -> bool:
        def write(data: memoryview) -> None:
            self.threads.add(threading.current_thread().name)
            self.got += data

        await asyncio.to_thread(fill, write)
        assert len(self.got) == length
        return True


def on_a_thread(file: FileBody, door: Door | None) -> bool:
    async def send() -> bool:
        with file.open() as f:
            return await decoding.send_on_a_thread(file, f, door.write_body if door else None)

    return asyncio.run(send())


@pytest.mark.parametrize("size", SIZES)
def test_the_clear_bytes_come_out_whole_and_in_order_either_way(tmp_path: Path, size: int) -> None:
    clear, path = stored(tmp_path, size)
    # A range in the middle too, not on a chunk or window boundary.
    for start, length in [(0, size), (size // 3 + 5, size // 2)]:
        assert on_the_loop(body(path, start, length)) == clear[start : start + length]
        door = Door()
        if on_a_thread(body(path, start, length), door):
            assert bytes(door.got) == clear[start : start + length]
            assert threading.current_thread().name not in door.threads
        else:
            assert length < decoding.THREADED_FROM
    assert decoding._threads == 0


def test_only_large_files_go_to_a_thread_and_only_when_one_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear, path = stored(tmp_path, decoding.THREADED_FROM)
    assert on_a_thread(body(path, 0, len(clear)), Door())
    assert not on_a_thread(body(path, 0, len(clear) - 1), Door())
    assert not on_a_thread(body(path, 0, len(clear)), None)  # a server without the offer
    monkeypatch.setattr(decoding, "_threads", decoding.MAX_THREADS)
    assert not on_a_thread(body(path, 0, len(clear)), Door())


def test_a_decoding_error_reaches_the_sender(tmp_path: Path) -> None:
    clear, path = stored(tmp_path, 8 * 1024 * 1024)

    class Failing:
        def __init__(self, at: int) -> None:
            self.inner, self.seen = positioned(KEY, at - 100), 0

        def update(self, data: bytes | memoryview) -> bytes:
            return self.inner.update(data)

        def update_into(self, data: bytes | memoryview, out: bytearray | memoryview) -> int:
            self.seen += len(data)
            if self.seen > 2 * decoding.THREAD_CHUNK:
                raise OSError("the disk said no")
            return self.inner.update_into(data, out)

    file = FileBody(path, 100, len(clear), decode=Failing)
    with pytest.raises(OSError, match="the disk said no"):
        on_a_thread(file, Door())
    assert decoding._threads == 0
