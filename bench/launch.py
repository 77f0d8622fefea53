"""Launch benchmark: the figures the compute issue asks for, measured in one run, with ratios.

1. Seconds from RunInstances to SSH login through Mallee (its own `mallee up` on libvirt and VPC
   networking; the tiny image published with `mallee image publish`, a key pair, run-instances m1.small,
   DescribeInstances until running, then `ssh root@<public ip> true` every 0.25 s) versus the same
   image booted straight through libvirt by the benchmark (same driver, domain XML, shape, overlay,
   DHCP and metadata in a VPC of its own; see `_launch_direct.py`). Goal: ratio <= 1.10.
2. A cached launch of a 1 GiB image versus a 32 MiB one whose root filesystems differ only in
   trailing zeros, each launched once first to fill the node's image cache. Goal: ratio <= 1.05.
3. Memory: each instance's QEMU RSS (the pid from /run/libvirt/qemu/<domain>.pid) and the node
   controller's RSS with 0 and with 2 instances running.
4. Seconds from the VM's start (its console log opened by QEMU) to `running` in DescribeInstances,
   polled every 0.05 s, over every Mallee launch of 1. and 2. Goal: under 0.5 s (the node pushes the
   change to its CC and the CC to the CLC; polling every 2 s is only the safety net).

Runs as root (it starts libvirt daemons if they are not running, creates bridges, dnsmasq and
nftables tables of its own) and removes everything it created, also on errors and Ctrl-C.

    .venv/bin/python bench/launch.py [--runs 3] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from _harness import ProcessSet, dist_version, interrupt_on_signals, machine_facts, mallee_version, workspace
from _launch_cloud import INSTANCE_TYPE, Cloud
from _launch_direct import DirectBoot, Shape
from _launch_host import (
    Daemons,
    Images,
    Timeline,
    free_subnets,
    libvirt_daemons,
    prepare_images,
    public_key,
    qemu_rss_mib,
    rss_mib,
    service_pid,
    wait_for_login,
)
from _launch_report import Results, print_report, to_json

BOOT_TIMEOUT = 90.0  # seconds per wait (running, guest ready, SSH)
KEY_NAME = "bench"
T = TypeVar("T")
Measure = Callable[[list[str]], None]
ATTEMPTS = 3  # a launch broken by someone else restarting libvirt's daemons is run again


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _tool_version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0].strip() if out else "unknown"


def _versions(images: Images) -> dict[str, str]:
    return {
        "mallee": mallee_version(),
        "libvirt-python": dist_version("libvirt-python"),
        "qemu": _tool_version(["qemu-system-x86_64", "--version"]).removeprefix("QEMU emulator version "),
        "guest kernel": images.kernel_release,
    }


class Bench:
    """The measurements, in order, on one cloud and one direct-boot VPC."""

    def __init__(
        self, args: argparse.Namespace, cloud: Cloud, direct: DirectBoot, results: Results, daemons: Daemons
    ) -> None:
        self.args, self.cloud, self.direct, self.results = args, cloud, direct, results
        self.daemons = daemons
        self.key = Path()
        self.amis: dict[str, str] = {}

    def _timed(self, label: str) -> _Stopwatch:
        return _Stopwatch(self.results.setup_seconds, label)

    def setup(self, images: Images) -> None:
        with self._timed("mallee up"):
            self.cloud.start()
        self.key = self.cloud.create_key(KEY_NAME)
        with self._timed("publish 3 images"):
            for name, directory in (("tiny", images.tiny), ("root-32m", images.root_small),
                                    ("root-1g", images.root_big)):  # fmt: skip
                self.amis[name] = self.cloud.publish(directory, name)
        _progress(f"published {self.amis}")
        vcpus, memory, disk = self.cloud.instance_shape()
        self.results.settings.update(vcpus=vcpus, memory_mib=memory, disk_gib=disk)
        self.direct.shape = Shape(vcpus, memory, disk)
        self.direct.start(public_key(self.key))
        self.results.settings["accelerator"] = self.direct.hypervisor.capabilities["accelerator"]

    def warm(self) -> None:
        """Fill the node's image cache: each image launched once, together (not timed)."""
        with self._timed("warm-up (3 uncached launches at once + 1 direct boot)"):
            self._attempt(
                "warm-up", partial(self._boot_and_login, list(self.amis.values()), 2 * BOOT_TIMEOUT)
            )
            self._attempt("warm-up direct", partial(self.direct.boot, self.key, BOOT_TIMEOUT))

    def _boot_and_login(self, amis: list[str], timeout: float, measure: Measure | None = None) -> None:
        """Launch one instance of each ami, wait for SSH logins, call `measure(ids)`, terminate."""
        ids = [self.cloud.run(ami, KEY_NAME)[0] for ami in amis]
        try:
            for ip in self.cloud.wait_running(ids, timeout).values():
                wait_for_login(ip, self.key, Timeline(), timeout)
            if measure is not None:
                measure(ids)
        finally:
            self.cloud.terminate(ids)

    def _attempt(self, what: str, step: Callable[[], T]) -> T:
        """Run a step; a failure is noted in the results and the step run again (twice)."""
        for attempt in range(1, ATTEMPTS + 1):
            self.daemons.ensure()
            try:
                return step()
            except Exception as error:
                if attempt == ATTEMPTS:
                    raise
                self.results.failures.append(f"{what}: {error}".splitlines()[0][:300])
                _progress(f"{what} failed, running it again: {error}")
        raise AssertionError("unreachable")

    def launch_vs_direct(self) -> None:
        tiny = self.amis["tiny"]
        for run in range(self.args.runs):
            order = ("mallee", "direct") if run % 2 == 0 else ("direct", "mallee")
            for path in order:
                if path == "mallee":
                    launch = partial(self.cloud.timed_launch, tiny, "tiny", self.key, BOOT_TIMEOUT)
                else:
                    launch = partial(self.direct.boot, self.key, BOOT_TIMEOUT)
                result = self._attempt(f"run {run + 1} {path}", launch)
                self.results.launch.append(result)
                _progress(f"run {run + 1} {path}: {result.seconds:.2f} s to SSH login")

    def image_sizes(self) -> None:
        for run in range(self.args.runs):
            order = ("root-32m", "root-1g") if run % 2 == 0 else ("root-1g", "root-32m")
            for name in order:
                launch = partial(self.cloud.timed_launch, self.amis[name], name, self.key, BOOT_TIMEOUT)
                result = self._attempt(f"run {run + 1} {name}", launch)
                self.results.size.append(result)
                _progress(f"run {run + 1} {name}: {result.seconds:.2f} s to SSH login")

    def memory(self) -> None:
        """The node controller's RSS with 0 and 2 instances, and each instance's QEMU RSS."""
        nc = service_pid(self.cloud.log, "nc")
        before = rss_mib(nc) if nc else None
        found: dict[str, Any] = {}

        def measure(ids: list[str]) -> None:
            time.sleep(1.0)  # let the node controller's next report pass
            found.update(after=rss_mib(nc) if nc else None, qemu=[qemu_rss_mib(i) for i in ids])

        tiny = self.amis["tiny"]
        self._attempt("memory", partial(self._boot_and_login, [tiny, tiny], BOOT_TIMEOUT, measure))
        after = found["after"]
        direct = [r.qemu_rss_mib for r in self.results.launch if r.path == "direct" and r.qemu_rss_mib]
        self.results.memory = {
            "nc_pid": nc,
            "nc_rss_0_mib": before,
            "nc_rss_2_mib": after,
            "nc_rss_per_instance_mib": round((after - before) / 2, 1) if before and after else None,
            "qemu_rss_mib": [q for q in found["qemu"] if q is not None],
            "direct_qemu_rss_mib": round(statistics.median(direct), 1) if direct else None,
        }


class _Stopwatch:
    def __init__(self, into: dict[str, float], label: str) -> None:
        self.into, self.label = into, label
        self.started = 0.0

    def __enter__(self) -> None:
        _progress(f"{self.label} ...")
        self.started = time.monotonic()

    def __exit__(self, *_exc: object) -> None:
        self.into[self.label] = round(time.monotonic() - self.started, 1)


def run(args: argparse.Namespace) -> Results:
    machine = machine_facts()
    settings: dict[str, Any] = {"runs": args.runs, "instance_type": INSTANCE_TYPE, "ssh_every_s": 0.25}
    with workspace(args.keep) as workdir:
        workdir.chmod(0o711)  # the qemu user must reach the node's files below it
        (workdir / "direct").mkdir(mode=0o711)
        _progress("building the tiny image and its 32 MiB / 1 GiB variants")
        images = prepare_images(workdir, workdir / "direct")
        results = Results(machine, _versions(images), settings)
        cloud_net, direct_net = free_subnets(2)
        procs = ProcessSet()
        with libvirt_daemons() as daemons:
            cloud = Cloud(procs, workdir, cloud_net)
            direct = DirectBoot(workdir / "direct", direct_net, images, Shape(1, 256, 5))
            bench = Bench(args, cloud, direct, results, daemons)
            try:
                bench.setup(images)
                bench.warm()
                _progress("1. RunInstances -> SSH vs direct boot")
                bench.launch_vs_direct()
                _progress("2. cached 32 MiB vs 1 GiB image")
                bench.image_sizes()
                _progress("3. memory with 2 instances")
                bench.memory()
            finally:
                direct.stop()
                cloud.stop()
        results.load_after = round(os.getloadavg()[0], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed launches per path and image (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, node files)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("ERROR: needs root (libvirt's system daemons, bridges, dnsmasq, nftables)", file=sys.stderr)
        return 1
    interrupt_on_signals()
    started = time.monotonic()
    results = run(args)
    results.setup_seconds["total"] = round(time.monotonic() - started, 1)
    if args.json:
        print(to_json(results))
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
