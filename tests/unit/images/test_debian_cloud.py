"""The Debian cloud-init image builder's own parts: the hook it gives mmdebstrap, its cache key and
the cache it shares with the tiny image. (The build itself, with mmdebstrap and a mirror, and the
guest booting are tested in tests/e2e/test_cloud_init_guest.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mallee.images import debian_cloud, image_cache


def test_the_hook_configures_cloud_init_and_removes_what_each_instance_makes(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    for directory in ("etc/cloud/cloud.cfg.d", "etc/ssh"):
        (tree / directory).mkdir(parents=True)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config"):
        (tree / "etc/ssh" / name).write_text("x")
    (tree / "etc/hostname").write_text("the-build-host\n")
    (tree / "etc/machine-id").write_text("0123456789abcdef\n")
    (tree / "etc/locale.gen").write_text("# de_DE.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\n")
    bin_dir = tmp_path / "bin"  # a chroot that records what would have run inside the tree
    bin_dir.mkdir()
    (bin_dir / "chroot").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/chrooted\n')
    (bin_dir / "chroot").chmod(0o755)

    # As mmdebstrap runs a --customize-hook: `sh -c HOOK exec TREE`.
    subprocess.run(
        ["sh", "-c", debian_cloud._customize_script(), "exec", str(tree)],
        check=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )

    settings = yaml.safe_load((tree / "etc/cloud/cloud.cfg.d/90_mallee.cfg").read_text())
    assert settings == {"datasource_list": ["Ec2"], "datasource": {"Ec2": {"strict_id": False}}}
    assert (tree / "etc/fstab").read_text() == "LABEL=mallee-root / ext4 defaults,errors=remount-ro 0 1\n"
    assert sorted(p.name for p in (tree / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (tree / "etc/hostname").read_text() == "localhost\n"
    assert (tree / "etc/machine-id").read_text() == ""  # systemd makes one at first boot
    assert (tree / "etc/locale.gen").read_text() == "# de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n"
    assert (
        tmp_path / "chrooted"
    ).read_text() == f"{tree} locale-gen\n{tree} update-locale LANG=en_US.UTF-8\n"


def test_the_cache_key_follows_what_goes_into_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    key = debian_cloud.cache_key()
    assert debian_cloud.cache_key() == key
    monkeypatch.setattr(debian_cloud, "PACKAGES", (*debian_cloud.PACKAGES, "curl"))
    assert debian_cloud.cache_key() != key
    monkeypatch.undo()
    monkeypatch.setattr(debian_cloud, "CLOUD_CFG", debian_cloud.CLOUD_CFG + "# changed\n")
    assert debian_cloud.cache_key() != key


def test_a_cached_image_is_built_once_and_exported_by_hard_links(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(output: Path, work: Path) -> None:
        calls.append(work)
        for name in debian_cloud.FILES:
            (output / name).write_bytes(name.encode())
        manifest = {"kernel_release": "6.1", "packages": {"cloud-init": "22.4"}}
        (output / image_cache.MANIFEST).write_text(json.dumps(manifest))

    first, cached_first = image_cache.built(tmp_path / "cache", "debian", "k1", build)
    again, cached_again = image_cache.built(tmp_path / "cache", "debian", "k1", build)
    image_cache.export(first, tmp_path / "out", (*debian_cloud.FILES, image_cache.MANIFEST))
    image = debian_cloud.load_image(tmp_path / "out")

    assert (len(calls), cached_first, cached_again, again) == (1, False, True, first)
    assert not calls[0].exists()  # the scratch directory went
    assert os.stat(first / "rootfs.img").st_mode & 0o777 == 0o444
    assert os.path.samefile(first / "rootfs.img", image.rootfs)
    assert (image.kernel.read_bytes(), image.kernel_release, image.packages) == (
        b"vmlinuz",
        "6.1",
        {"cloud-init": "22.4"},
    )
