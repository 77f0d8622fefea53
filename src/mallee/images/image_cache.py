"""The cache the built guest images share (`~/.cache/mallee/images`): one directory per image and
key, built once under a lock file and renamed into place when complete, so concurrent callers and
killed builds never leave a half image where a reader looks. Files in it are shared (hard links
where possible): treat them as read-only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mallee.core.interprocess import exclusive

MANIFEST = "manifest.json"
_STALE_SCRATCH_SECONDS = 3600


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mallee" / "images"


def built(cache_root: Path, name: str, key: str, build: Callable[[Path, Path], None]) -> tuple[Path, bool]:
    """The directory of image `name` at `key`, and whether it was already there.

    Otherwise `build(output, scratch)` fills `output` (its last file the manifest), inside a scratch
    directory that is removed afterwards; `output` is then renamed into place (atomic). Another
    process building the same key waits on the lock and then finds the result.
    """
    cache_root.mkdir(parents=True, exist_ok=True)
    final = cache_root / f"{name}-{key}"
    if (final / MANIFEST).exists():
        return final, True
    with exclusive(cache_root / f"{name}-{key}.lock"):
        if (final / MANIFEST).exists():
            return final, True
        _remove_stale_scratch(cache_root, name)
        with tempfile.TemporaryDirectory(prefix=f"{name}-build-", dir=cache_root) as scratch:
            work = Path(scratch)
            output = work / "output"
            output.mkdir()
            build(output, work)
            for path in output.iterdir():
                path.chmod(0o444)  # shared through hard links: discourage writes
            output.rename(final)
    return final, False


def _remove_stale_scratch(cache_root: Path, name: str) -> None:
    """Scratch directories (hundreds of MB) left by builds that were killed. Another key's build may
    be running, so only those untouched for an hour go."""
    for scratch in cache_root.glob(f"{name}-build-*"):
        if time.time() - scratch.stat().st_mtime > _STALE_SCRATCH_SECONDS:
            shutil.rmtree(scratch, ignore_errors=True)


def describe(path: Path) -> dict[str, Any]:
    """A file's entry in a manifest: its SHA-256 and size."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def export(directory: Path, out_dir: Path, names: Iterable[str]) -> None:
    """Place `names` from a cached image in `out_dir` (hard links when on the same file system, else
    copies), each replaced atomically so a concurrent reader never sees half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        source, target = directory / name, out_dir / name
        if target.exists() and os.path.samefile(source, target):
            continue
        temporary = out_dir / f".{name}.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        temporary.replace(target)
