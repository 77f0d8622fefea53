"""The node's image cache: each image is downloaded once, verified, and shared by every instance
that boots from it (instances get copy-on-write overlays, never the cached file itself).

Concurrent launches of one uncached image wait for a single download. Past `limit_bytes`, the least
recently used images not in use are evicted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class ImageFetchError(Exception):
    pass


@dataclass(frozen=True)
class ImageSource:
    key: str  # stable name of the image (its image id), used as the cache file name
    url: str  # where to fetch it (a presigned Walrus URL)
    size: int | None = None
    sha256: str | None = None


Fetcher = Callable[[ImageSource, Path], None]


def http_fetch(source: ImageSource, target: Path) -> None:
    """Stream `source.url` into `target`, checking size and sha256 when given."""
    digest = hashlib.sha256()
    size = 0
    with urllib.request.urlopen(source.url, timeout=60) as response, open(target, "wb") as out:
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if source.size is not None and size != source.size:
        raise ImageFetchError(f"{source.key}: got {size} bytes, expected {source.size}")
    if source.sha256 and digest.hexdigest() != source.sha256:
        raise ImageFetchError(f"{source.key}: checksum mismatch")


class ImageCache:
    def __init__(self, root: Path, limit_bytes: int, fetch: Fetcher = http_fetch) -> None:
        self.root = root
        self.limit = limit_bytes
        self.fetch = fetch
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._in_use: dict[str, int] = {}
        self.downloads = 0  # how many fetches ran (tests check concurrent launches share one)

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def path(self, key: str) -> Path:
        if not key.replace("-", "").isalnum():
            raise ImageFetchError(f"bad image key {key!r}")
        return self.root / f"{key}.img"

    def get(self, source: ImageSource) -> Path:
        """The cached file for `source`, downloading it first if needed. Marks it in use until
        `release` is called."""
        target = self.path(source.key)
        with self._lock(source.key):
            if not target.exists():
                tmp = target.with_suffix(".part")
                try:
                    self.fetch(source, tmp)
                    os.replace(tmp, target)
                    self.downloads += 1
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
            os.utime(target)  # recency for eviction
            with self._guard:
                self._in_use[source.key] = self._in_use.get(source.key, 0) + 1
        self.evict()
        return target

    def release(self, key: str) -> None:
        with self._guard:
            count = self._in_use.get(key, 0) - 1
            if count <= 0:
                self._in_use.pop(key, None)
            else:
                self._in_use[key] = count

    def evict(self) -> list[str]:
        """Remove least recently used images not in use until the cache fits its limit."""
        entries = sorted(self.root.glob("*.img"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in entries)
        removed = []
        for path in entries:
            if total <= self.limit:
                break
            key = path.stem
            with self._guard:
                busy = self._in_use.get(key, 0) > 0
            if busy:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append(key)
            log.info("evicted image %s from the cache", key)
        return removed

    def describe(self) -> dict[str, object]:
        entries = list(self.root.glob("*.img"))
        return {
            "images": len(entries),
            "bytes": sum(p.stat().st_size for p in entries),
            "limit": self.limit,
            "checked": time.time(),
        }


def save_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
