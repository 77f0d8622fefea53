"""The node's image cache: one download per image, verification, LRU eviction."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from mallee.services.node.imagecache import ImageCache, ImageFetchError, ImageSource


def fake_fetch(payloads: dict[str, bytes], delay: float = 0.0):  # type: ignore[no-untyped-def]
    def fetch(source: ImageSource, target: Path) -> None:
        time.sleep(delay)
        data = payloads[source.key]
        if source.sha256 and hashlib.sha256(data).hexdigest() != source.sha256:
            raise ImageFetchError("checksum mismatch")
        target.write_bytes(data)

    return fetch


def test_concurrent_launches_of_one_image_download_it_once(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, 10**9, fake_fetch({"emi-1": b"x" * 1000}, delay=0.2))
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(cache.get(ImageSource("emi-1", "u")))) for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.downloads == 1
    assert len(set(paths)) == 1 and paths[0].read_bytes() == b"x" * 1000


def test_bad_checksum_leaves_nothing_cached(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, 10**9, fake_fetch({"emi-2": b"data"}))
    with pytest.raises(ImageFetchError):
        cache.get(ImageSource("emi-2", "u", sha256="0" * 64))
    assert list(tmp_path.iterdir()) == []


def test_least_recently_used_images_are_evicted_but_not_those_in_use(tmp_path: Path) -> None:
    payloads = {f"emi-{i}": bytes([i]) * 400 for i in range(4)}
    cache = ImageCache(tmp_path, 1000, fake_fetch(payloads))
    for i in range(3):
        cache.get(ImageSource(f"emi-{i}", "u"))
        time.sleep(0.01)
    cache.release("emi-0")
    cache.release("emi-1")
    cache.get(ImageSource("emi-3", "u"))  # 4 x 400 > 1000: evict the oldest idle ones
    remaining = sorted(p.stem for p in tmp_path.glob("*.img"))
    assert "emi-0" not in remaining and "emi-2" in remaining and "emi-3" in remaining


def test_keys_cannot_escape_the_cache(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, 10**9, fake_fetch({}))
    with pytest.raises(ImageFetchError):
        cache.get(ImageSource("../../etc/passwd", "u"))
