"""The guest kernel: an ELF `vmlinux` unpacked from Debian's bzImage, and the modules it needs in
the order insmod must load them.

QEMU boots an ELF vmlinux through the PVH entry point (Debian sets CONFIG_PVH), skipping the real-mode
setup and in-guest decompression that cost ~3 s per boot under TCG. Debian's kernel package ships no
modules.dep (depmod writes it at install time), so the dependency graph comes from each module's
`.modinfo` `depends=` field instead.
"""

from __future__ import annotations

import lzma
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from mallee.images.elf import ELF_MAGIC, modinfo

# What the tiny guest loads, in this order before dependencies are applied. crc32c_generic comes
# early because ext4/jbd2 only name it as a soft dependency ("softdep=pre: crypto-crc32c") yet fail
# to mount without it; evdev + button deliver the ACPI power button to acpid.
GUEST_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_mmio",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    "virtio_balloon",
    "virtio_console",
    "crc32c_generic",
    "jbd2",
    "mbcache",
    "crc16",
    "ext4",
    "button",
    "evdev",
)

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage (boot protocol >= 2.08 payload fields)."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise ValueError("not a bzImage: no HdrS signature")
    setup_sectors = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + payload_offset
    payload = bzimage[start : start + payload_length]
    if payload.startswith(_XZ_MAGIC):
        # The kernel appends the uncompressed size after the xz stream; the decompressor ignores it.
        vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(_GZIP_MAGIC):
        vmlinux = zlib.decompressobj(wbits=31).decompress(payload)  # 31: gzip header; size ignored
    else:
        raise ValueError(f"unsupported bzImage payload compression (magic {payload[:6]!r})")
    if not vmlinux.startswith(ELF_MAGIC):
        raise ValueError("the bzImage payload is not an ELF kernel")
    return vmlinux


def module_paths(modules_dir: Path) -> dict[str, str]:
    """Map each module name (dashes folded to underscores, as the kernel does) to its path relative
    to `modules_dir` (/lib/modules/<release>)."""
    found: dict[str, str] = {}
    for root, _dirs, files in os.walk(modules_dir / "kernel"):
        for name in files:
            if name.endswith(".ko"):
                relative = os.path.relpath(os.path.join(root, name), modules_dir)
                found[module_name(name)] = relative
    return found


def module_name(path: str) -> str:
    """ "kernel/drivers/char/hw_random/virtio-rng.ko" -> "virtio_rng"."""
    return os.path.basename(path).removesuffix(".ko").replace("-", "_")


def dependency_map(modules_dir: Path, wanted: Iterable[str]) -> dict[str, list[str]]:
    """The modules.dep graph (relative path -> paths of direct dependencies) of `wanted` and
    everything they depend on, read from each module's `.modinfo`."""
    paths = module_paths(modules_dir)
    graph: dict[str, list[str]] = {}
    pending = [_path_of(paths, name) for name in wanted]
    while pending:
        path = pending.pop()
        if path in graph:
            continue
        depends = modinfo((modules_dir / path).read_bytes()).get("depends", [""])[0]
        graph[path] = [_path_of(paths, dep) for dep in depends.split(",") if dep]
        pending.extend(graph[path])
    return graph


def format_modules_dep(graph: dict[str, list[str]]) -> str:
    """Render a graph in modules.dep syntax ("path: dep dep"), sorted for reproducible output."""
    return "".join(f"{path}: {' '.join(deps)}".rstrip() + "\n" for path, deps in sorted(graph.items()))


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """Parse modules.dep text into path -> dependency paths."""
    graph: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if sep:
            graph[path.strip()] = deps.split()
    return graph


def load_order(wanted: Iterable[str], graph: dict[str, list[str]]) -> list[str]:
    """The paths to insmod, each after its dependencies, keeping `wanted`'s order where free.

    `wanted` holds module names ("virtio_net", "virtio-rng"); raises KeyError for one not in `graph`.
    """
    by_name = {module_name(path): path for path in graph}
    order: list[str] = []
    for name in wanted:
        _visit(by_name[module_name(name)], graph, order, set())
    return order


def _visit(path: str, graph: dict[str, list[str]], order: list[str], stack: set[str]) -> None:
    """Depth-first post-order: dependencies land in `order` before the module itself."""
    if path in order:
        return
    if path in stack:
        raise ValueError(f"module dependency cycle through {path}")
    stack.add(path)
    for dep in graph.get(path, []):
        _visit(dep, graph, order, stack)
    stack.discard(path)
    order.append(path)


def _path_of(paths: dict[str, str], name: str) -> str:
    try:
        return paths[module_name(name)]
    except KeyError:
        raise KeyError(f"kernel module {name!r} is not in the kernel package") from None
