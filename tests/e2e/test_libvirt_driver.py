"""The hypervisor contract against libvirt, booting the real tiny image under qemu:///system; plus the
figures the driver is judged by (define+start, boot to MALLEE-READY with and without virtio-rng, qemu
RSS with a 32 MiB TCG cache), printed for `pytest -s`."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mallee.drivers.hypervisor.domain_xml import DomainOptions
from mallee.drivers.hypervisor.libvirt import LibvirtHypervisor
from mallee.images.tiny import ROOT_CMDLINE, TinyImage, build_tiny
from support import libvirt as support
from unit.drivers import test_hypervisor_contract as contract

_reason = support.unavailable_reason() or (None if shutil.which("qemu-img") else "qemu-img is missing")
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

# The shared contract's tests, collected here with this module's `hv` fixture.
globals().update({name: test for name, test in vars(contract).items() if name.startswith("test_")})


@pytest.fixture(scope="module")
def daemons() -> Iterator[list[int]]:
    with support.libvirt_running() as started:
        yield started


@pytest.fixture(scope="module")
def node_images(daemons: list[int]) -> Iterator[Path]:
    """The tiny image copied where the qemu user can read it (the build cache lives under /root, which
    libvirt-qemu cannot traverse); instances get qcow2 overlays of this copy, never the copy itself."""
    image: TinyImage = build_tiny()
    directory = Path(tempfile.mkdtemp(prefix="mallee-libvirt-e2e-"))
    directory.chmod(0o711)
    try:
        for source in (image.vmlinux, image.initrd, image.rootfs):
            shutil.copyfile(source, directory / source.name)
            (directory / source.name).chmod(0o444)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _overlay(base: Path) -> Any:
    def make(path: Path) -> Path:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(path)], check=True
        )
        return path

    return make


def _env(images: Path, workdir: Path, options: DomainOptions | None = None) -> contract.HypervisorEnv:
    options = options or DomainOptions(domain_type="qemu")
    return contract.HypervisorEnv(
        new_driver=lambda: LibvirtHypervisor(options=options, instances_dir=workdir),
        unreachable_driver=lambda: LibvirtHypervisor("qemu+unix:///system?socket=/nonexistent", "qemu"),
        make_disk=_overlay(images / "rootfs.img"),
        defined=support.defined_domains,
        make_guest_ignore_power_button=lambda driver, instance_id: None,  # still booting: no acpid yet
        workdir=workdir,
        kernel=images / "vmlinux",
        ramdisk=images / "initrd.img",
        cmdline=ROOT_CMDLINE,
    )


@pytest.fixture
def hv(node_images: Path) -> Iterator[contract.HypervisorEnv]:
    workdir = Path(tempfile.mkdtemp(prefix="mallee-hv-", dir=node_images))
    workdir.chmod(0o711)
    env = _env(node_images, workdir)
    try:
        yield env
    finally:
        _forget(env, workdir)
    assert not set(env.created) & set(support.defined_domains())


def _forget(env: contract.HypervisorEnv, workdir: Path) -> None:
    """Destroy the test's instances, then remove its files and the logs libvirt kept about them."""
    env.cleanup()
    shutil.rmtree(workdir, ignore_errors=True)
    for instance_id in env.created:
        (support.QEMU_LOG_DIR / f"{instance_id}.log").unlink(missing_ok=True)


def _rss_mib(instance_id: str) -> float:
    """Resident memory of the qemu process running `instance_id`."""
    pid = Path(f"/run/libvirt/qemu/{instance_id}.pid").read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _boot_figures(node_images: Path, rng: bool, runs: int) -> list[tuple[float, float, float]]:
    """(define+start s, boot to READY s, qemu RSS MiB at READY) for `runs` boots one after another."""
    figures = []
    for _ in range(runs):
        workdir = Path(tempfile.mkdtemp(prefix="mallee-hv-", dir=node_images))
        workdir.chmod(0o711)
        env = _env(node_images, workdir, DomainOptions(domain_type="qemu", rng=rng, tb_cache_mib=32))
        try:
            spec = env.spec()
            driver = env.driver
            assert isinstance(driver, LibvirtHypervisor)
            started = time.monotonic()
            driver.spawn(spec)
            define_start = time.monotonic() - started
            ready = define_start + env.wait_console(spec.instance_id)
            figures.append((define_start, ready, _rss_mib(spec.instance_id)))
        finally:
            _forget(env, workdir)
    return figures


def test_boot_figures_with_and_without_virtio_rng(node_images: Path) -> None:
    runs = 3
    report = {}
    for rng in (True, False):
        figures = _boot_figures(node_images, rng, runs)
        columns = list(zip(*figures, strict=True))
        report[rng] = [(min(column), statistics.median(column)) for column in columns]
    for rng, ((ds_min, ds_med), (rd_min, rd_med), (rss_min, rss_med)) in report.items():
        print(
            f"\nvirtio-rng {'on ' if rng else 'off'}: define+start {ds_min:.2f}/{ds_med:.2f} s,"
            f" boot to MALLEE-READY {rd_min:.2f}/{rd_med:.2f} s, qemu RSS {rss_min:.0f}/{rss_med:.0f} MiB"
            f" (min/median of {runs}, tb-cache 32 MiB)"
        )
    assert report[True][1][1] < 60
