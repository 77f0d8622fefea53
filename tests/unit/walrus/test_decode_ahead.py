"""Sending an encrypted file: decoded on the loop or a thread ahead of it, the same bytes either way;
a send that fails stops the thread; a decoding error reaches the sender."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from pathlib import Path

import pytest

from mallee.core.context import FileBody
from mallee.services.walrus import decode_ahead
from mallee.services.walrus.encryption import crypt

KEY = bytes(range(32))


def stored(tmp_path: Path, size: int) -> tuple[bytes, Path]:
    clear = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 100 + crypt(KEY, 0, clear))  # the blob starts 100 bytes in
    return clear, path


async def collect(file: FileBody, stop_after: int | None = None) -> bytes:
    out = bytearray()
    with file.open() as f:
        async with contextlib.aclosing(decode_ahead.decoded(file, f)) as chunks:
            async for chunk in chunks:
                out += chunk
                if stop_after is not None and len(out) >= stop_after:
                    break
    return bytes(out)


def decoding_threads() -> int:
    return sum(t.name == "walrus-decode" for t in threading.enumerate())


@pytest.mark.parametrize("size", [1000, 5 * 1024 * 1024, 9 * 1024 * 1024 + 17])
def test_the_clear_bytes_come_out_whole_and_in_order(tmp_path: Path, size: int) -> None:
    clear, path = stored(tmp_path, size)
    file = FileBody(path, 100, size, decode=lambda at, data: crypt(KEY, at - 100, data))
    assert asyncio.run(collect(file)) == clear
    # A range in the middle, not on a chunk or window boundary.
    start, length = size // 3 + 5, size // 2
    ranged = FileBody(path, 100 + start, length, decode=lambda at, data: crypt(KEY, at - 100, data))
    assert asyncio.run(collect(ranged)) == clear[start : start + length]


def test_large_files_are_decoded_on_a_thread_and_small_ones_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def decode(at: int, data: bytes | memoryview) -> bytes:
        seen.append(threading.current_thread().name)
        return crypt(KEY, at - 100, data)

    clear, path = stored(tmp_path, 5 * 1024 * 1024)
    assert asyncio.run(collect(FileBody(path, 100, len(clear), decode=decode))) == clear
    assert set(seen) == {"walrus-decode"}
    seen.clear()
    assert asyncio.run(collect(FileBody(path, 100, 1000, decode=decode))) == clear[:1000]
    assert set(seen) == {threading.current_thread().name}
    # With every thread taken, a large one is decoded on the loop too.
    seen.clear()
    monkeypatch.setattr(decode_ahead, "_threads", decode_ahead.MAX_THREADS)
    assert asyncio.run(collect(FileBody(path, 100, len(clear), decode=decode))) == clear
    assert set(seen) == {threading.current_thread().name}


def test_a_send_that_stops_early_stops_the_thread(tmp_path: Path) -> None:
    decoded: list[int] = []

    def decode(at: int, data: bytes | memoryview) -> bytes:
        decoded.append(at)
        return crypt(KEY, at - 100, data)

    clear, path = stored(tmp_path, 32 * 1024 * 1024)
    got = asyncio.run(collect(FileBody(path, 100, len(clear), decode=decode), stop_after=1))
    assert got == clear[: len(got)]
    deadline = time.monotonic() + 5
    while decoding_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert decoding_threads() == 0
    # It never ran more than AHEAD chunks ahead of what was taken (one chunk).
    assert len(decoded) <= 1 + decode_ahead.AHEAD + 1
    assert decode_ahead._threads == 0


def test_a_decoding_error_reaches_the_sender(tmp_path: Path) -> None:
    def decode(at: int, data: bytes | memoryview) -> bytes:
        if at > 100 + 2 * decode_ahead.THREAD_CHUNK:
            raise OSError("the disk said no")
        return functools.partial(crypt, KEY)(at - 100, data)

    clear, path = stored(tmp_path, 8 * 1024 * 1024)
    with pytest.raises(OSError, match="the disk said no"):
        asyncio.run(collect(FileBody(path, 100, len(clear), decode=decode)))
    assert decode_ahead._threads == 0
