"""Choosing the libvirt domain type: quick hints from fake host paths, and real probes on this host."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mallee.drivers.hypervisor.probe import HostPaths, _judge, choose_accelerator, quick_hint, time_kvm_loop

VMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae vmx lm\n"


def fake_host(
    tmp_path: Path, *, kvm: bool = True, pvm: bool = False, cpuinfo: str = VMX_CPUINFO
) -> HostPaths:
    paths = HostPaths(tmp_path / "kvm", tmp_path / "module", tmp_path / "cpuinfo")
    (tmp_path / "module").mkdir()
    if kvm:
        paths.dev_kvm.write_text("")
    if pvm:
        (tmp_path / "module" / "kvm_pvm").mkdir()
    paths.cpuinfo.write_text(cpuinfo)
    return paths


def test_no_dev_kvm_means_qemu(tmp_path: Path) -> None:
    assert "does not exist" in (quick_hint(fake_host(tmp_path, kvm=False)) or "")


def test_paravirtual_kvm_means_qemu(tmp_path: Path) -> None:
    assert "kvm_pvm" in (quick_hint(fake_host(tmp_path, pvm=True)) or "")


def test_cpu_without_vmx_or_svm_means_qemu(tmp_path: Path) -> None:
    hint = quick_hint(fake_host(tmp_path, cpuinfo="flags\t\t: fpu vme de pse tsc msr pae lm\n"))

    assert hint is not None and "vmx/svm" in hint


def test_hardware_virtualisation_gives_no_hint(tmp_path: Path) -> None:
    assert quick_hint(fake_host(tmp_path)) is None


def test_hint_answers_at_once(tmp_path: Path) -> None:
    choice = choose_accelerator(paths=fake_host(tmp_path, pvm=True))

    assert choice.domain_type == "qemu"
    assert choice.seconds < 0.1


def test_a_device_that_is_not_kvm_makes_the_probe_fail_safe(tmp_path: Path) -> None:
    choice = choose_accelerator(paths=fake_host(tmp_path))  # /dev/kvm is a regular file here

    assert choice.domain_type == "qemu"
    assert "probe failed" in choice.reason


def test_reports_are_judged_by_loop_time() -> None:
    assert _judge(b"RD 0.002 5\n", 0.5, 0.01).domain_type == "kvm"
    assert _judge(b"RD 0.300 5\n", 0.5, 0.31).domain_type == "qemu"
    assert "reason 8" in _judge(b"RD 0.001 8\n", 0.5, 0.01).reason
    assert "did not halt" in _judge(b"RT", 0.5, 0.5).reason
    assert "probe failed" in _judge(b"E OSError: nope\n", 0.5, 0.01).reason


def test_this_host_chooses_qemu_quickly_with_a_reason() -> None:
    start = time.monotonic()
    choice = choose_accelerator()

    assert choice.domain_type == "qemu"
    assert choice.reason
    assert time.monotonic() - start < 3


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm")
@pytest.mark.skipif(not Path("/sys/module/kvm_pvm").exists(), reason="checks a paravirtual KVM host")
def test_the_timed_loop_catches_paravirtual_kvm_within_its_budget() -> None:
    start = time.monotonic()
    choice = time_kvm_loop(budget=0.5, timeout=2.0)

    assert choice.domain_type == "qemu"
    assert time.monotonic() - start < 1.5
