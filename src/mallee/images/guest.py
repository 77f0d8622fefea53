"""The tiny guest's file tree, assembled in memory from unpacked Debian packages: busybox with its
applet links, dropbear with the shared libraries it needs, the kernel modules in load order, and the
boot scripts. The same tree becomes the initramfs (cpio) and the root file system image (ext4)."""

from __future__ import annotations

import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mallee.images import cpio, guest_scripts
from mallee.images.elf import ElfFile
from mallee.images.kernel import (
    GUEST_MODULES,
    dependency_map,
    format_modules_dep,
    load_order,
    parse_modules_dep,
)

DROPBEAR_PROGRAMS = ("usr/sbin/dropbear", "usr/bin/dbclient", "usr/bin/dropbearkey")
LIBRARY_DIR = "lib/x86_64-linux-gnu"
_LIBRARY_SUBDIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64")
HOST_ROOT = Path("/")

_DIRECTORIES = {
    "bin": 0o755, "sbin": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "lib64": 0o755,
    "etc/acpi/PWRF": 0o755, "etc/dropbear": 0o700, "etc/init.d": 0o755, "proc": 0o555,
    "sys": 0o555, "dev": 0o755, "run": 0o755, "tmp": 0o1777, "root": 0o700, "var/log": 0o755,
    "newroot": 0o755, "mnt": 0o755, "home": 0o755, "usr/share/udhcpc": 0o755,
}  # fmt: skip


@dataclass(frozen=True)
class GuestSources:
    """Unpacked package trees the guest is made from."""

    kernel: Path  # linux-image-<release> unpacked
    kernel_release: str  # "6.1.0-56-amd64"
    busybox: Path
    dropbear: Path
    libraries: list[Path]  # unpacked library packages, searched before the host's own /lib
    host_root: Path = HOST_ROOT


@dataclass
class GuestTree:
    """The assembled tree plus what went into it, for the manifest."""

    entries: dict[str, cpio.Entry] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)  # insmod order, paths under lib/modules/<release>
    libraries: dict[str, str] = field(default_factory=dict)  # soname -> "package:path" it came from

    def add(self, entry: cpio.Entry) -> None:
        self.entries[entry.path] = entry

    def sorted_entries(self) -> list[cpio.Entry]:
        """Every entry with its missing parent directories, parents first."""
        complete = dict(self.entries)
        for path in self.entries:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                complete.setdefault(parent, cpio.directory(parent))
        return [complete[path] for path in sorted(complete)]


def build_guest_tree(sources: GuestSources) -> GuestTree:
    """Assemble the whole guest file tree."""
    tree = GuestTree()
    for path, perms in _DIRECTORIES.items():
        tree.add(cpio.directory(path, perms))
    # The kernel opens /dev/console for /init before devtmpfs is mounted.
    tree.add(cpio.char_device("dev/console", 5, 1))
    _add_busybox(tree, sources.busybox)
    _add_dropbear(tree, sources)
    _add_modules(tree, sources.kernel / "lib/modules" / sources.kernel_release, sources.kernel_release)
    _add_configuration(tree)
    return tree


def _add_busybox(tree: GuestTree, root: Path) -> None:
    busybox = root / "bin/busybox"
    tree.add(cpio.regular("bin/busybox", busybox.read_bytes(), 0o755))
    # busybox-static is a static binary, so listing its applets runs it safely on any x86-64 host.
    listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        if applet != "bin/busybox":
            tree.add(cpio.symlink(applet, "/bin/busybox"))


def _add_dropbear(tree: GuestTree, sources: GuestSources) -> None:
    roots = [(root.name, root) for root in sources.libraries] + [("host", sources.host_root)]
    search = [(origin, root, sub) for origin, root in roots for sub in _LIBRARY_SUBDIRS]
    pending: list[ElfFile] = []
    for program in DROPBEAR_PROGRAMS:
        data = (sources.dropbear / program).read_bytes()
        tree.add(cpio.regular(program, data, 0o755))
        pending.append(ElfFile(data))
    interpreter = pending[0].interpreter()
    while pending:
        for soname in pending.pop().needed():
            if soname in tree.libraries:
                continue
            origin, found = _find_library(soname, search)
            data = found.read_bytes()
            tree.libraries[soname] = origin
            tree.add(cpio.regular(f"{LIBRARY_DIR}/{soname}", data, 0o755))
            pending.append(ElfFile(data))
    if interpreter:
        loader = Path(interpreter).name
        if loader not in tree.libraries:
            origin, found = _find_library(loader, search)
            tree.libraries[loader] = origin
            tree.add(cpio.regular(f"{LIBRARY_DIR}/{loader}", found.read_bytes(), 0o755))
        tree.add(cpio.symlink(interpreter.lstrip("/"), f"/{LIBRARY_DIR}/{loader}"))


def _find_library(soname: str, search: list[tuple[str, Path, str]]) -> tuple[str, Path]:
    """Where `soname` comes from ("libc6:lib/x86_64-linux-gnu/libc.so.6" or "host:...") and its real
    file, from the first directory that has it (symlinks followed)."""
    for origin, root, subdir in search:
        candidate = root / subdir / soname
        if candidate.exists():
            return f"{origin}:{subdir}/{soname}", candidate.resolve()
    raise FileNotFoundError(f"shared library {soname} not found in the packages or the host's /lib")


def _add_modules(tree: GuestTree, modules_dir: Path, release: str) -> None:
    # Write modules.dep, then order from the parsed text, so the guest's file and the order agree.
    modules_dep = format_modules_dep(dependency_map(modules_dir, GUEST_MODULES))
    graph = parse_modules_dep(modules_dep)
    tree.modules = load_order(GUEST_MODULES, graph)
    prefix = f"lib/modules/{release}"
    for path in graph:
        tree.add(cpio.regular(f"{prefix}/{path}", (modules_dir / path).read_bytes()))
    tree.add(cpio.regular(f"{prefix}/modules.dep", modules_dep.encode()))
    tree.add(cpio.regular("etc/modules-load", "".join(f"{path}\n" for path in tree.modules).encode()))


def _add_configuration(tree: GuestTree) -> None:
    scripts = {
        "init": guest_scripts.INIT,
        "etc/init.d/rcS": guest_scripts.RCS,
        "usr/share/udhcpc/default.script": guest_scripts.UDHCPC_SCRIPT,
        "etc/acpi/PWRF/00000080": guest_scripts.ACPI_POWER_BUTTON,
    }
    for path, text in scripts.items():
        tree.add(cpio.regular(path, text.encode(), 0o755))
    files = {
        "etc/inittab": guest_scripts.INITTAB,
        "etc/passwd": guest_scripts.PASSWD,
        "etc/group": guest_scripts.GROUP,
        "etc/shells": guest_scripts.SHELLS,
        "etc/hosts": guest_scripts.HOSTS,
        "etc/hostname": guest_scripts.HOSTNAME + "\n",
        "etc/profile": guest_scripts.PROFILE,
    }
    for path, text in files.items():
        tree.add(cpio.regular(path, text.encode()))


def is_device(entry: cpio.Entry) -> bool:
    """Device nodes exist only in the cpio archive (making them on disk would need mknod)."""
    return stat.S_ISCHR(entry.mode) or stat.S_ISBLK(entry.mode)
