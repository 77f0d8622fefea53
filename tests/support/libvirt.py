"""libvirt for tests: the daemons up for a test session (stopping afterwards only what the session
started), and virsh helpers. The preparation itself is the product's (drivers/hypervisor/host.py)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from mallee.drivers.hypervisor.host import (  # noqa: F401 - re-exported for tests
    DAEMONS,
    QEMU_LOG_DIR,
    URI,
    ensure_running,
    restore_kvm,
    running_pid,
    stop,
    unavailable_reason,
)


@contextlib.contextmanager
def libvirt_running(timeout: float = 20.0) -> Iterator[list[int]]:
    """Run the block with libvirtd and virtlogd up; stop afterwards only what was started here."""
    started = ensure_running(timeout)
    try:
        yield started
    finally:
        stop(started)
        restore_kvm()


def virsh(*args: str) -> str:
    """Run virsh against the system URI and return its output (raises on failure)."""
    result = subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout


def defined_domains() -> list[str]:
    """Names of every domain libvirt knows, running or not (`virsh list --all --name`)."""
    return [line for line in virsh("list", "--all", "--name").splitlines() if line.strip()]
