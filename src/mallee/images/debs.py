"""Debian packages for guest images: which versions apt would fetch, fetching them, unpacking them.

Every `apt-cache` call re-reads the package lists (~0.5 s here, as Docker-style images disable
pkgcache.bin), too slow for a warm build; so resolved versions are remembered against a fingerprint
of the lists and apt's configuration, and reused until `apt-get update` or a config change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

APT_LISTS = Path("/var/lib/apt/lists")
APT_CONFIG = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"), Path("/etc/apt/preferences.d"))


class PackageError(RuntimeError):
    """apt could not resolve, download or unpack a package."""


def lists_fingerprint(lists: Path = APT_LISTS, config: Iterable[Path] = APT_CONFIG) -> str:
    """A hash of the name, size and mtime of every apt list and config file: equal fingerprints mean
    apt would pick the same candidate versions."""
    digest = hashlib.sha256()
    for root in [lists, *config]:
        for path in sorted(_files_under(root)):
            info = path.stat()
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def candidates(packages: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """name -> (candidate version, names of its Depends) as `apt-get download` would fetch them.

    Runs `apt-get update` once when the lists do not know a package (a fresh container has none).
    """
    names = list(packages)
    try:
        return _show(names)
    except PackageError:
        _run(["apt-get", "update", "-qq"], "apt-get update")
        return _show(names)


def download(versions: dict[str, str], dest: Path) -> dict[str, Path]:
    """Fetch each name=version .deb into `dest` (skipping those already there); name -> file."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = [
        f"{name}={version}" for name, version in versions.items() if not _find_deb(dest, name, version)
    ]
    if missing:
        try:
            _run(["apt-get", "download", "-q", *missing], "apt-get download", cwd=dest)
        except PackageError:
            # Stale lists name files the mirror has dropped: refresh them once and retry.
            _run(["apt-get", "update", "-qq"], "apt-get update")
            _run(["apt-get", "download", "-q", *missing], "apt-get download", cwd=dest)
    found = {name: _find_deb(dest, name, version) for name, version in versions.items()}
    lost = sorted(name for name, path in found.items() if path is None)
    if lost:
        raise PackageError(f"apt-get download did not produce {', '.join(lost)}")
    return {name: path for name, path in found.items() if path is not None}


def unpack(deb: Path, dest: Path) -> Path:
    """`dpkg-deb -x` one package into `dest` (no root needed, nothing is configured)."""
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")
    return dest


def remembered_versions(store: Path, fingerprint: str, roots: list[str]) -> dict[str, str] | None:
    """Versions resolved earlier for these root packages under the same apt fingerprint, if any."""
    try:
        record = json.loads(store.read_text())
    except (OSError, ValueError):
        return None
    entry = record.get(_resolution_key(fingerprint, roots))
    return dict(entry) if isinstance(entry, dict) else None


def remember_versions(store: Path, fingerprint: str, roots: list[str], versions: dict[str, str]) -> None:
    """Record a resolution (replacing the file atomically; older fingerprints are dropped)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    temporary = store.with_name(f"{store.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({_resolution_key(fingerprint, roots): versions}, indent=1))
    temporary.replace(store)


def _resolution_key(fingerprint: str, roots: list[str]) -> str:
    return hashlib.sha256(f"{fingerprint}\0{','.join(roots)}".encode()).hexdigest()


def _show(names: list[str]) -> dict[str, tuple[str, list[str]]]:
    output = _run(["apt-cache", "show", "--no-all-versions", *names], "apt-cache show")
    result: dict[str, tuple[str, list[str]]] = {}
    for stanza in output.split("\n\n"):
        fields = _fields(stanza)
        if "Package" in fields and "Version" in fields:
            result[fields["Package"]] = (fields["Version"], _depends_names(fields.get("Depends", "")))
    absent = [name for name in names if name not in result]
    if absent:
        raise PackageError(f"apt knows no candidate for {', '.join(absent)}")
    return result


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line and not line[0].isspace():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _depends_names(depends: str) -> list[str]:
    """ "libc6 (>= 2.34), libz1 | zlib1g" -> ["libc6", "libz1"] (first choice of each alternative)."""
    names = []
    for clause in depends.split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(first.split()[0].split(":")[0])
    return names


def _find_deb(dest: Path, name: str, version: str) -> Path | None:
    # apt-get download escapes the epoch colon in file names: 1:1.35.0 -> 1%3a1.35.0
    matches = sorted(dest.glob(f"{name}_{version.replace(':', '%3a')}_*.deb"))
    return matches[0] if matches else None


def _files_under(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    return [path for path in root.iterdir() if path.is_file() and path.name != "lock"]


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or "E: " in result.stderr:
        raise PackageError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout
