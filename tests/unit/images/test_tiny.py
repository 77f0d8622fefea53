"""The tiny guest image builder: cpio writer, module ordering, kernel extraction, manifest, cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mallee.images import cpio, debs, tiny
from mallee.images.elf import ElfFile
from mallee.images.kernel import extract_vmlinux, format_modules_dep, load_order, parse_modules_dep

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs Debian's apt-get and dpkg-deb")

MODULES_DEP_SAMPLE = """\
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/net/net_failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
"""


def test_cpio_round_trip_keeps_every_kind_of_entry() -> None:
    entries = [
        cpio.directory("etc"),
        cpio.regular("etc/passwd", b"root:*:0:0:root:/root:/bin/sh\n"),
        cpio.regular("init", b"#!/bin/sh\n", 0o755),
        cpio.regular("empty", b""),
        cpio.symlink("sbin/init", "/bin/busybox"),
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("tmp", 0o1777),
    ]
    out = io.BytesIO()
    cpio.write_archive(entries, out)

    assert list(cpio.read_archive(out.getvalue())) == entries
    assert len(out.getvalue()) % 4 == 0


def test_gzipped_archive_is_reproducible(tmp_path: Path) -> None:
    entries = [cpio.directory("bin"), cpio.regular("bin/x", b"x" * 1001, 0o755)]
    cpio.write_gzipped(entries, tmp_path / "a.img")
    cpio.write_gzipped(entries, tmp_path / "b.img")

    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()
    assert list(cpio.read_archive(gzip.decompress((tmp_path / "a.img").read_bytes()))) == entries


def test_read_archive_rejects_other_formats() -> None:
    with pytest.raises(ValueError, match="magic"):
        list(cpio.read_archive(b"070707" + b"0" * 200))


def test_load_order_puts_dependencies_first_and_keeps_the_wanted_order() -> None:
    graph = parse_modules_dep(MODULES_DEP_SAMPLE)

    order = load_order(["virtio_net", "virtio-rng", "ext4"], graph)

    assert [path.rsplit("/", 1)[1] for path in order] == [
        "virtio_ring.ko",
        "virtio.ko",
        "failover.ko",
        "net_failover.ko",
        "virtio_net.ko",
        "virtio-rng.ko",
        "jbd2.ko",
        "mbcache.ko",
        "crc16.ko",
        "ext4.ko",
    ]


def test_load_order_of_an_unknown_module_raises() -> None:
    with pytest.raises(KeyError):
        load_order(["zfs"], parse_modules_dep(MODULES_DEP_SAMPLE))


def test_load_order_detects_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        load_order(["a"], {"a.ko": ["b.ko"], "b.ko": ["a.ko"]})


def test_modules_dep_format_parses_back() -> None:
    graph = {"kernel/b.ko": ["kernel/a.ko"], "kernel/a.ko": []}

    assert parse_modules_dep(format_modules_dep(graph)) == graph


def test_extract_vmlinux_rejects_a_non_bzimage() -> None:
    with pytest.raises(ValueError, match="bzImage"):
        extract_vmlinux(b"\0" * 4096)


def test_remembered_versions_follow_the_apt_lists_fingerprint(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("a")
    before = debs.lists_fingerprint(lists, [])
    debs.remember_versions(tmp_path / "v.json", before, ["p"], {"p": "1.0"})
    (lists / "Packages").write_text("ab")
    after = debs.lists_fingerprint(lists, [])

    assert debs.remembered_versions(tmp_path / "v.json", before, ["p"]) == {"p": "1.0"}
    assert after != before
    assert debs.remembered_versions(tmp_path / "v.json", after, ["p"]) is None


def test_concurrent_builds_of_one_key_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[Path] = []

    def fake_build(output: Path, work: Path, versions: dict[str, str], cache_root: Path) -> None:
        builds.append(output)
        time.sleep(0.3)
        manifest = {"kernel_release": "r", "cmdline": "c", "packages": versions, "files": {}}
        (output / tiny.MANIFEST).write_text(json.dumps(manifest))

    monkeypatch.setattr(tiny, "resolve_versions", lambda cache_root: {"busybox-static": "1"})
    monkeypatch.setattr(tiny, "_build", fake_build)
    results: list[tiny.TinyImage] = []
    threads = [
        threading.Thread(target=lambda: results.append(tiny.build_tiny(cache_dir=tmp_path))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(builds) == 1
    assert results[0].directory == results[1].directory
    assert results[0].directory.name.startswith("tiny-") and (results[0].directory / tiny.MANIFEST).exists()
    assert sorted(image.cached for image in results) == [False, True]
    assert not list(tmp_path.glob("tiny-build-*"))  # the scratch directory is gone


@pytest.fixture(scope="module")
def image() -> tiny.TinyImage:
    return tiny.build_tiny()


@needs_apt
def test_vmlinux_is_the_elf_inside_the_bzimage_with_a_pvh_entry(image: tiny.TinyImage) -> None:
    vmlinux = extract_vmlinux(image.bzimage.read_bytes())

    assert vmlinux.startswith(b"\x7fELF")
    assert hashlib.sha256(vmlinux).hexdigest() == image.sha256["vmlinux"]
    assert b"Xen\0" in (ElfFile(vmlinux).section(".notes") or b"")  # XEN_ELFNOTE_PHYS32_ENTRY: PVH


@needs_apt
def test_manifest_names_packages_digests_and_the_command_line(image: tiny.TinyImage) -> None:
    manifest: dict[str, Any] = json.loads(image.manifest.read_text())

    assert {
        "busybox-static",
        "dropbear-bin",
        "linux-image-amd64",
        f"linux-image-{image.kernel_release}",
    } <= set(manifest["packages"])
    assert manifest["cmdline"] == "console=ttyS0 quiet"
    assert set(manifest["files"]) == {"vmlinux", "bzImage", "initrd.img", "rootfs.img"}
    initrd_digest = hashlib.sha256(image.initrd.read_bytes()).hexdigest()
    assert manifest["files"]["initrd.img"]["sha256"] == initrd_digest == image.sha256["initrd.img"]


@needs_apt
def test_second_build_is_a_fast_cache_hit_with_identical_digests(image: tiny.TinyImage) -> None:
    start = time.monotonic()
    again = tiny.build_tiny()
    elapsed = time.monotonic() - start

    assert elapsed < 0.5
    assert again.cached
    assert again.sha256 == image.sha256
    assert again.directory == image.directory


@needs_apt
def test_export_to_an_output_directory_is_idempotent(image: tiny.TinyImage, tmp_path: Path) -> None:
    first = tiny.build_tiny(out_dir=tmp_path / "out")
    second = tiny.build_tiny(out_dir=tmp_path / "out")

    assert first.directory == second.directory == tmp_path / "out"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "bzImage",
        "initrd.img",
        "manifest.json",
        "rootfs.img",
        "vmlinux",
    ]
    assert second.sha256 == image.sha256


@needs_apt
def test_initramfs_holds_init_busybox_dropbear_and_ordered_modules(image: tiny.TinyImage) -> None:
    entries = {entry.path: entry for entry in cpio.read_archive(gzip.decompress(image.initrd.read_bytes()))}

    assert entries["init"].mode & 0o111
    assert entries["sbin/init"].data == b"/bin/busybox"
    assert entries["dev/console"].rdev == (5, 1) and stat.S_ISCHR(entries["dev/console"].mode)
    assert entries["etc/passwd"].data.startswith(b"root:*:")
    assert b"MALLEE-READY instance-id=" in entries["etc/init.d/rcS"].data
    for soname in ElfFile(entries["usr/sbin/dropbear"].data).needed():
        assert f"lib/x86_64-linux-gnu/{soname}" in entries
    order = entries["etc/modules-load"].data.decode().split()
    assert order.index("kernel/fs/jbd2/jbd2.ko") < order.index("kernel/fs/ext4/ext4.ko")
    assert all(f"lib/modules/{image.kernel_release}/{path}" in entries for path in order)
