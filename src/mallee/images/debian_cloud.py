"""`mallee image build debian`: a small Debian 12 system with the distribution's stock `cloud-init`,
as Debian's own cloud images are, for guests that configure themselves from the metadata service.

Made by `mmdebstrap` from the host's apt sources into a directory, which `mkfs.ext4 -d` turns into
the root file system (no loop device or mount). The kernel is Debian's cloud flavour and the initrd
the one `initramfs-tools` made inside the tree; both are copied out so the image registers like the
tiny one (kernel, ramdisk, machine) and boots with `root=/dev/vda`. cloud-init is configured for the
Ec2 data source only (Mallee's metadata service is EC2's) and otherwise left as Debian ships it: the
default user is `debian`, SSH host keys are made on first boot, the root file system grows to the
instance's disk. Cached by what goes into it (packages, configuration, this builder), so a repeated
build costs milliseconds; a first one takes about a minute with a nearby mirror.

The output directory holds `vmlinuz`, `initrd.img`, `rootfs.img` (ext4, a little larger than its
contents; give instances a qcow2 overlay on it) and `manifest.json` (with the installed packages'
versions).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mallee.images import image_cache
from mallee.images.image_cache import MANIFEST
from mallee.images.rootfs import LABEL

NAME = "debian"
SUITE = "bookworm"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "e2fsprogs",
    "cloud-init",
    "openssh-server",
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
    "procps",
    "netbase",
    "locales",
)
LOCALE = "en_US.UTF-8"
DEFAULT_USER = "debian"  # Debian's cloud.cfg: the user the instance's key pair is installed for
FILES = ("vmlinuz", "initrd.img", "rootfs.img")
MIN_MEMORY_MIB = 512  # systemd and cloud-init's Python; fits m1.medium
# Documentation, manual pages and translations are not installed: a third of the tree otherwise.
_EXCLUDED_PATHS = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
_KEPT_PATHS = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
CLOUD_CFG = """\
# Written by Mallee's image builder. Mallee's metadata service is EC2's (169.254.169.254): look
# for nothing else. strict_id: false because, unless the cloud presents EC2-style SMBIOS, the
# platform is not recognisable as EC2 and cloud-init would otherwise warn at every boot.
datasource_list: [ Ec2 ]
datasource:
  Ec2:
    strict_id: false
"""
FSTAB = f"LABEL={LABEL} / ext4 defaults,errors=remount-ro 0 1\n"
_FORMAT = 1


class BuildError(RuntimeError):
    """mmdebstrap or mkfs.ext4 failed, or the tree holds no kernel."""


@dataclass(frozen=True)
class DebianImage:
    directory: Path
    kernel: Path
    ramdisk: Path
    rootfs: Path
    manifest: Path
    kernel_release: str
    packages: dict[str, str]  # every installed package -> version
    cached: bool  # True when no build ran in this call


def build_debian(out_dir: Path | None = None, cache_dir: Path | None = None) -> DebianImage:
    """Build (or find in the cache) the Debian cloud image; hard-link or copy it into `out_dir` if
    given. Safe for concurrent callers. Raises BuildError."""
    cache_root = cache_dir or image_cache.default_cache_dir()
    directory, cached = image_cache.built(cache_root, NAME, cache_key(), _build)
    if out_dir is not None:
        image_cache.export(directory, out_dir, (*FILES, MANIFEST))
        directory = out_dir
    return load_image(directory, cached)


def cache_key() -> str:
    """What the image is made of: the package list, the configuration written into it and this
    builder's source. (Package versions are whatever the mirror had at the first build; the
    manifest records them.)"""
    digest = hashlib.sha256(json.dumps([SUITE, PACKAGES, CLOUD_CFG, FSTAB, _FORMAT]).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def load_image(directory: Path, cached: bool = True) -> DebianImage:
    manifest = json.loads((directory / MANIFEST).read_text())
    return DebianImage(
        directory=directory,
        kernel=directory / "vmlinuz",
        ramdisk=directory / "initrd.img",
        rootfs=directory / "rootfs.img",
        manifest=directory / MANIFEST,
        kernel_release=manifest["kernel_release"],
        packages=manifest["packages"],
        cached=cached,
    )


def _build(output: Path, work: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed (./setup installs it)")
    tree = work / "root"
    _run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=apt",
            f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt=path-exclude={path}" for path in _EXCLUDED_PATHS),
            *(f"--dpkgopt=path-include={path}" for path in _KEPT_PATHS),
            f"--customize-hook={_customize_script()}",
            SUITE,
            str(tree),
        ],
        "mmdebstrap",
    )
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("the tree has no /boot/vmlinuz-*")
    release = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[-1], output / "vmlinuz")
    shutil.copyfile(tree / "boot" / f"initrd.img-{release}", output / "initrd.img")
    _make_rootfs(tree, output / "rootfs.img")
    manifest: dict[str, Any] = {
        "name": NAME,
        "format": _FORMAT,
        "suite": SUITE,
        "kernel_release": release,
        "root_cmdline": "console=ttyS0 root=/dev/vda",
        "default_user": DEFAULT_USER,
        "min_memory_mib": MIN_MEMORY_MIB,
        "packages": _installed(tree),
        "files": {name: image_cache.describe(output / name) for name in FILES},
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _customize_script() -> str:
    """Shell run by mmdebstrap on the finished tree ($1): Mallee's cloud-init settings, fstab and
    locale; no SSH host keys, hostname or machine id of the build (each instance makes its own)."""
    return "\n".join(
        [
            "set -e",
            f"cat > \"$1/etc/cloud/cloud.cfg.d/90_mallee.cfg\" <<'EOF'\n{CLOUD_CFG}EOF",
            f"printf '%s' '{FSTAB}' > \"$1/etc/fstab\"",
            'rm -f "$1"/etc/ssh/ssh_host_*',
            # cloud-init sets LANG=en_US.UTF-8 (its Debian default) with update-locale, which refuses
            # a locale that was never generated; Debian's locale-gen makes only what locale.gen lists.
            # Set here, the first boot finds it set and generates nothing (~10 s under TCG).
            f"sed -i 's/^# *{LOCALE} /{LOCALE} /' \"$1/etc/locale.gen\"",
            'chroot "$1" locale-gen',
            f'chroot "$1" update-locale LANG={LOCALE}',
            'echo localhost > "$1/etc/hostname"',
            ': > "$1/etc/machine-id"',
        ]
    )


def _make_rootfs(tree: Path, image: Path) -> None:
    """ext4 from the tree, with room for a quarter more: cloud-init grows it to the instance's disk."""
    used = int(
        subprocess.run(["du", "-sxm", str(tree)], capture_output=True, text=True, check=True).stdout.split()[
            0
        ]
    )
    size_mib = used + used // 4 + 64
    command = ["mkfs.ext4", "-q", "-F", "-L", LABEL, "-d", str(tree), str(image), f"{size_mib}M"]
    _run(command, "mkfs.ext4")


def _installed(tree: Path) -> dict[str, str]:
    listing = subprocess.run(
        ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in listing.splitlines() if line)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed ({result.returncode}):\n{tail}")
