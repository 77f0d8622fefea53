"""`mallee image build tiny`: a CirrOS-like guest (kernel, initramfs, ext4 root) made only from
Debian packages, cached by package versions so a repeated build costs milliseconds.

The output directory holds `vmlinux` (ELF, boots via PVH: the fast path), `bzImage` (for loaders
that need one), `initrd.img` (runs the guest from RAM, or mounts the disk given as `root=/dev/vda`),
`rootfs.img` (64 MiB ext4; give instances a qcow2 overlay on it, never the file itself) and
`manifest.json`. Files in the cache are shared (hard links where possible): treat them as read-only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mallee.images import cpio, debs, guest_scripts, image_cache, rootfs
from mallee.images.guest import GuestSources, build_guest_tree, is_device
from mallee.images.image_cache import MANIFEST
from mallee.images.kernel import extract_vmlinux

KERNEL_META = "linux-image-amd64"
ROOT_PACKAGES = [KERNEL_META, "busybox-static", "dropbear-bin"]
CMDLINE = "console=ttyS0 quiet"
ROOT_CMDLINE = f"{CMDLINE} root=/dev/vda"
MIN_MEMORY_MIB = 96  # 80 MiB panics, 64 MiB hangs (shared/notes/vm-host-facts.md)
FILES = ("vmlinux", "bzImage", "initrd.img", "rootfs.img")
_FORMAT = 1


@dataclass(frozen=True)
class TinyImage:
    """A built tiny image: where its files are and what it was made from."""

    directory: Path
    vmlinux: Path
    bzimage: Path
    initrd: Path
    rootfs: Path
    manifest: Path
    kernel_release: str
    cmdline: str  # suggested kernel command line (append ROOT_CMDLINE's root= for the disk variant)
    packages: dict[str, str]  # Debian package -> version
    sha256: dict[str, str]  # file name -> digest
    cached: bool  # True when no build ran in this call


def build_tiny(out_dir: Path | None = None, cache_dir: Path | None = None) -> TinyImage:
    """Build (or find in the cache) the tiny image; copy or hard-link it into `out_dir` if given.

    Idempotent, and safe for concurrent callers: one builds under a lock file, the others wait and
    then find its result. Raises debs.PackageError when apt cannot supply a package.
    """
    cache_root = cache_dir or image_cache.default_cache_dir()
    cache_root.mkdir(parents=True, exist_ok=True)
    versions = resolve_versions(cache_root)
    directory, cached = image_cache.built(
        cache_root,
        "tiny",
        cache_key(versions),
        lambda output, work: _build(output, work, versions, cache_root),
    )
    image = load_image(directory, cached)
    if out_dir is None:
        return image
    image_cache.export(directory, out_dir, (*FILES, MANIFEST))
    return load_image(out_dir, cached)


def resolve_versions(cache_root: Path) -> dict[str, str]:
    """Package -> version for everything the image is made from, as apt would fetch them now."""
    fingerprint = debs.lists_fingerprint()
    store = cache_root / "apt-versions.json"
    remembered = debs.remembered_versions(store, fingerprint, ROOT_PACKAGES)
    if remembered:
        return remembered
    found = debs.candidates(ROOT_PACKAGES)
    kernel = next(name for name in found[KERNEL_META][1] if name.startswith("linux-image-"))
    # dropbear's libraries and theirs (libtomcrypt1 -> libgmp10): the tree copies only what DT_NEEDED names.
    libraries = found["dropbear-bin"][1]
    found |= debs.candidates([kernel, *libraries])
    indirect = sorted({dep for library in libraries for dep in found[library][1]} - set(found))
    if indirect:
        found |= debs.candidates(indirect)
    versions = {name: version for name, (version, _depends) in sorted(found.items())}
    debs.remember_versions(store, fingerprint, ROOT_PACKAGES, versions)
    return versions


def cache_key(versions: dict[str, str]) -> str:
    """Package versions plus this package's own source (scripts, module list): change either, rebuild."""
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def load_image(directory: Path, cached: bool = True) -> TinyImage:
    """A TinyImage for a directory holding a complete build (reads only the manifest)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    return TinyImage(
        directory=directory,
        vmlinux=directory / "vmlinux",
        bzimage=directory / "bzImage",
        initrd=directory / "initrd.img",
        rootfs=directory / "rootfs.img",
        manifest=directory / MANIFEST,
        kernel_release=manifest["kernel_release"],
        cmdline=manifest["cmdline"],
        packages=manifest["packages"],
        sha256={name: info["sha256"] for name, info in manifest["files"].items()},
        cached=cached,
    )


def _build(output: Path, work: Path, versions: dict[str, str], cache_root: Path) -> None:
    """Write the image's files and manifest into `output`, working in `work`."""
    kernel = next(name for name in versions if name.startswith("linux-image-") and name != KERNEL_META)
    wanted = {name: version for name, version in versions.items() if name != KERNEL_META}
    packages = debs.download(wanted, cache_root / "debs")
    unpacked = {name: debs.unpack(deb, work / "packages" / name) for name, deb in packages.items()}
    release = kernel.removeprefix("linux-image-")
    sources = GuestSources(
        kernel=unpacked[kernel],
        kernel_release=release,
        busybox=unpacked["busybox-static"],
        dropbear=unpacked["dropbear-bin"],
        libraries=[path for name, path in unpacked.items() if name not in (kernel, *ROOT_PACKAGES)],
    )
    manifest = _write_outputs(output, work, sources, versions)
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _write_outputs(
    output: Path, work: Path, sources: GuestSources, versions: dict[str, str]
) -> dict[str, Any]:
    """Write the four image files into `output` and return the manifest describing them."""
    bzimage = sources.kernel / "boot" / f"vmlinuz-{sources.kernel_release}"
    shutil.copyfile(bzimage, output / "bzImage")
    (output / "vmlinux").write_bytes(extract_vmlinux(bzimage.read_bytes()))
    tree = build_guest_tree(sources)
    entries = tree.sorted_entries()
    cpio.write_gzipped(entries, output / "initrd.img")
    rootfs.make_ext4(
        [entry for entry in entries if not is_device(entry)], output / "rootfs.img", work / "rootfs"
    )
    return {
        "name": "tiny",
        "format": _FORMAT,
        "kernel_release": sources.kernel_release,
        "cmdline": CMDLINE,
        "root_cmdline": ROOT_CMDLINE,
        "min_memory_mib": MIN_MEMORY_MIB,
        "ready_line": f"{guest_scripts.READY_PREFIX}<instance-id>",
        "packages": versions,
        "files": {name: image_cache.describe(output / name) for name in FILES},
        "modules": tree.modules,
        "libraries": tree.libraries,
    }
