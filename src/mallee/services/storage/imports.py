"""Fetching the disk image of an imported snapshot (rpc/storage.py ImportSnapshot): streamed from its
http(s) URL into a temporary directory (zeros are skipped, so the file is sparse), and a qcow2 image
converted to raw beside it, so that snapshots.py cuts a raw file into chunks as it does a volume.

A qcow2 image is untrusted input: one that names a backing file or an external data file (which
qemu-img would open: any file of the SC's host) is refused, before it is converted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from mallee.drivers.blockstore.base import GIB

DISK_FORMATS = ("raw", "qcow2")
MAX_BYTES = 16 * 1024 * GIB  # the largest volume, as in AWS (16 TiB)
TIMEOUT = 30  # seconds, per read
_READ = 1024 * 1024
_PREFIX = ".import."  # the temporary directories: .import.<snap-id>.<random>


class ImportFailed(Exception):
    """The image could not be had; the message is the snapshot's reason."""


def url_problem(url: str) -> str | None:
    """Why `url` cannot be imported from (None: it can)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"the url {shown(url)!r} is not an http(s) URL"
    return None


def shown(url: str) -> str:
    """The URL without its query (a presigned URL's signature is not for the snapshot's reason)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def work_dirs(work_dir: Path) -> Iterator[tuple[str, Path]]:
    """The temporary directories in `work_dir`, with the snapshot each is for."""
    for path in work_dir.glob(f"{_PREFIX}snap-*"):
        yield path.name[len(_PREFIX) :].partition(".")[0], path


@contextlib.contextmanager
def fetched(
    url: str, disk_format: str, work_dir: Path, snapshot_id: str, check: Callable[[], None]
) -> Iterator[Path]:
    """A raw file with the image's bytes, in a temporary directory of `work_dir` deleted on the way
    out, whatever happens. `check` is called between reads (it raises to stop). Raises ImportFailed."""
    work_dir.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{snapshot_id}.", dir=work_dir))
    try:
        image = temp / "image"
        download(url, image, check)
        if disk_format == "qcow2":
            raw = temp / "raw"
            _convert(image, raw, check)
            image.unlink()
            image = raw
        size = image.stat().st_size
        if size == 0:
            raise ImportFailed(f"the image at {shown(url)} is empty")
        if size > MAX_BYTES:
            raise ImportFailed(f"the image is {size / GIB:.0f} GiB; the largest is {MAX_BYTES // GIB} GiB")
        yield image
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def download(url: str, into: Path, check: Callable[[], None]) -> None:
    """Stream `url` into the file `into`, writing no all-zero block (they are holes)."""
    problem = url_problem(url)
    if problem:
        raise ImportFailed(problem)
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(into, "wb") as out:
            expected = response.headers.get("Content-Length")
            while True:
                check()
                block: bytes = response.read(_READ)
                if not block:
                    break
                size += len(block)
                if size > MAX_BYTES:
                    raise ImportFailed(f"the image at {shown(url)} is larger than {MAX_BYTES // GIB} GiB")
                if block.count(0) == len(block):
                    out.seek(len(block), os.SEEK_CUR)
                else:
                    out.write(block)
            out.truncate(size)
            if expected is not None and expected.isdigit() and int(expected) != size:
                raise ImportFailed(f"got {size} bytes of {shown(url)}, not the {expected} it announced")
    except urllib.error.HTTPError as exc:
        raise ImportFailed(f"could not download {shown(url)}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ImportFailed(f"could not download {shown(url)}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, a truncated body
        raise ImportFailed(f"could not download {shown(url)}: {type(exc).__name__}: {exc}") from None


def _convert(qcow2: Path, raw: Path, check: Callable[[], None]) -> None:
    """qemu-img convert, into a sparse raw file, of a qcow2 image with no backing or data file."""
    info = json.loads(_qemu_img(["info", "--output=json", "-f", "qcow2", str(qcow2)], qcow2, check))
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImportFailed("the qcow2 image has a backing file; import a standalone image")
    if (info.get("format-specific") or {}).get("data", {}).get("data-file"):
        raise ImportFailed("the qcow2 image has an external data file; import a standalone image")
    if int(info.get("virtual-size", 0)) > MAX_BYTES:
        raise ImportFailed(f"the image is larger than {MAX_BYTES // GIB} GiB")
    _qemu_img(["convert", "-q", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)], qcow2, check)


def _qemu_img(args: list[str], image: Path, check: Callable[[], None]) -> str:
    """Run qemu-img, calling `check` every half second (and killing it when that raises)."""
    try:
        process = subprocess.Popen(
            ["qemu-img", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError as exc:
        raise ImportFailed(f"cannot run qemu-img: {exc}") from None
    with process:
        try:
            while True:
                check()
                try:
                    out, err = process.communicate(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:
            process.kill()
            raise
    if process.returncode != 0:
        why = (err.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
        why = why.replace(f"'{image}'", "the image").replace(str(image), "the image")
        raise ImportFailed(f"not a usable qcow2 image: {why}")
    return out
