"""The node's image cache: each image is downloaded once, verified, and shared by every instance
that boots from it (instances get copy-on-write overlays, never the cached file itself).

Concurrent launches of one uncached image wait for a single download. Past `limit_bytes`, the least
recently used images not in use are evicted.

A source of format "bundle" is an image bundle (euca-bundle-image, `mallee image bundle`): `bundle` is
its manifest as the CLC read it at registration and `parts` are the parts' URLs. The node fetches
every part, checks each part's SHA-1 and the tar stream's digest, decrypts with the cloud's private
key and caches the unbundled file, so instances of a bundled image cost what those of a plain one
do. The key is the cloud's `cloud-pk.pem`: in the all-in-one the node reads it from the data
directory; a node on another host needs its own copy of that file (as Eucalyptus NCs held the
cloud's keys), given as `cloud_key`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mallee.images import bundle
from mallee.rpc.node import ImageSource

__all__ = ["ImageCache", "ImageFetchError", "ImageSource", "disk_format", "fetch_bundle", "http_fetch"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class ImageFetchError(Exception):
    pass


Fetcher = Callable[[ImageSource, Path], None]
UrlReader = Callable[[str], bytes]
QCOW2_MAGIC = b"QFI\xfb"


def read_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
    return data


def disk_format(source: ImageSource, path: Path) -> str:
    """The format of the cached file: as registered, or for an unbundled image, by its magic."""
    if source.format in ("raw", "qcow2"):
        return source.format
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


def fetch_bundle(source: ImageSource, target: Path, cloud_key_pem: bytes, read: UrlReader = read_url) -> None:
    """Unbundle the bundle `source` describes into `target`: parts checked against the manifest's
    SHA-1s, the whole against its digest, and the result against `source.size` when given. The
    manifest was read when the image was registered and comes with the launch (`source.bundle`)."""
    manifest = source.bundle
    if manifest is None:
        raise ImageFetchError(f"{source.key}: the launch carries no manifest for this bundle")
    urls = _part_urls(source, [name for name, _digest in manifest.parts])
    size = 0
    try:
        with open(target, "wb") as out:
            chunks = bundle.unbundle_parts(
                manifest.encrypted_key,
                manifest.encrypted_iv,
                manifest.digest,
                manifest.parts,
                lambda name: read(urls[name]),
                cloud_key_pem,
            )
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except bundle.BundleError as exc:
        raise ImageFetchError(f"{source.key}: {exc}") from exc
    if source.size is not None and size != source.size:
        raise ImageFetchError(f"{source.key}: unbundled {size} bytes, the manifest says {source.size}")


def _part_urls(source: ImageSource, names: list[str]) -> dict[str, str]:
    """Part file name -> URL: by the name the URL's path ends with, else by position."""
    by_name = {
        urllib.parse.unquote(urllib.parse.urlsplit(u).path.rpartition("/")[2]): u for u in source.parts
    }
    if all(name in by_name for name in names):
        return {name: by_name[name] for name in names}
    if len(source.parts) == len(names):
        return dict(zip(names, source.parts, strict=True))
    raise ImageFetchError(
        f"{source.key}: the launch gives {len(source.parts)} part URLs for {len(names)} parts"
    )


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
    def __init__(
        self,
        root: Path,
        limit_bytes: int,
        fetch: Fetcher = http_fetch,
        cloud_key: Path | None = None,
        read: UrlReader = read_url,
    ) -> None:
        self.root = root
        self.limit = limit_bytes
        self.fetch = fetch
        self.cloud_key = cloud_key  # the cloud's private key (cloud-pk.pem), for bundles
        self.read = read
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
                    if source.format == "bundle":
                        self._fetch_bundle(source, tmp)
                    else:
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

    def _fetch_bundle(self, source: ImageSource, target: Path) -> None:
        if self.cloud_key is None or not self.cloud_key.exists():
            raise ImageFetchError(
                f"{source.key} is a bundle, and this node has no copy of the cloud's private key "
                f"({self.cloud_key or 'cloud-pk.pem'}) to decrypt it"
            )
        fetch_bundle(source, target, self.cloud_key.read_bytes(), self.read)

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
