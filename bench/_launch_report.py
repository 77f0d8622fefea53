"""`launch.py`'s results: min/median of each figure, the ratios and goals, the per-step timeline,
and the report (a table, or one JSON document with `--json`)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from _harness import print_facts
from _launch_host import LaunchResult

LAUNCH_GOAL = 1.10  # Mallee's RunInstances → SSH login ÷ the direct libvirt boot
SIZE_GOAL = 1.05  # a cached 1 GiB image's launch ÷ a cached 32 MiB one's
RUNNING_GOAL = 0.5  # seconds from the VM's start (QEMU's console log opened) to `running` in the API

# The steps of a launch, in the order they happen (a path shows the ones it has).
STEPS = {
    "nc_received": "node controller has the launch (launch.json)",
    "api_returned": "RunInstances answered",
    "disk_ready": "qcow2 overlay created",
    "network_ready": "interface applied (DHCP, anti-spoofing, NAT)",
    "spawned": "libvirt define+start returned",
    "domain_started": "console log opened (QEMU running)",
    "root_mounted": "kernel+initramfs up, root on /dev/vda",
    "dhcp_lease": "DHCP lease handed out",
    "running": "DescribeInstances says running",
    "guest_ready": "MALLEE-READY (metadata, sshd started)",
    "ssh_port": "port 22 accepts",
    "ssh_login": "ssh root@ip true succeeded",
}


@dataclass
class Results:
    machine: dict[str, Any]
    versions: dict[str, str]
    settings: dict[str, Any]
    launch: list[LaunchResult] = field(default_factory=list)  # tiny: "mallee" and "direct" runs
    size: list[LaunchResult] = field(default_factory=list)  # "root-32m" and "root-1g" via Mallee
    memory: dict[str, Any] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # launches that failed and were run again
    load_after: float = 0.0


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2)}


def _select(results: Sequence[LaunchResult], path: str, image: str) -> list[LaunchResult]:
    return [r for r in results if r.path == path and r.image == image]


def _ratio(top: dict[str, float] | None, bottom: dict[str, float] | None) -> dict[str, float] | None:
    if not top or not bottom:
        return None
    return {k: round(top[k] / bottom[k], 3) for k in ("min", "median")}


def figures(results: Results) -> dict[str, Any]:
    """Stats and ratios of the two timed comparisons."""
    mallee = _stats([r.seconds for r in _select(results.launch, "mallee", "tiny")])
    direct = _stats([r.seconds for r in _select(results.launch, "direct", "tiny")])
    small = _stats([r.seconds for r in _select(results.size, "mallee", "root-32m")])
    big = _stats([r.seconds for r in _select(results.size, "mallee", "root-1g")])
    launch_ratio, size_ratio = _ratio(mallee, direct), _ratio(big, small)
    started = _stats(
        [
            r.events["running"] - r.events["domain_started"]
            for r in [*results.launch, *results.size]
            if r.path == "mallee" and "running" in r.events and "domain_started" in r.events
        ]
    )
    return {
        "start_to_running": {"seconds": started, "goal": RUNNING_GOAL,
                             "met": None if started is None else started["median"] < RUNNING_GOAL},
        "launch": {"mallee": mallee, "direct": direct, "ratio": launch_ratio, "goal": LAUNCH_GOAL,
                   "met": _met(launch_ratio, LAUNCH_GOAL)},
        "size": {"root-32m": small, "root-1g": big, "ratio": size_ratio, "goal": SIZE_GOAL,
                 "met": _met(size_ratio, SIZE_GOAL)},
    }  # fmt: skip


def _met(ratio: dict[str, float] | None, goal: float) -> bool | None:
    return None if ratio is None else ratio["median"] <= goal


def step_medians(results: Sequence[LaunchResult]) -> dict[str, float]:
    """Median time of each step over the given launches (steps some launches lack are left out)."""
    names = [name for name in STEPS if all(name in r.events for r in results)] if results else []
    return {name: round(statistics.median(r.events[name] for r in results), 2) for name in names}


def to_json(results: Results) -> str:
    document = {
        "machine": results.machine,
        "versions": results.versions,
        "settings": results.settings,
        "load_average_after": results.load_after,
        "setup_seconds": results.setup_seconds,
        "figures": figures(results),
        "steps": _all_steps(results),
        "memory": results.memory,
        "failures": results.failures,
        "launch_runs": [asdict(r) for r in results.launch],
        "size_runs": [asdict(r) for r in results.size],
    }
    return json.dumps(document, indent=1)


def _all_steps(results: Results) -> dict[str, dict[str, float]]:
    groups = {
        "mallee tiny": _select(results.launch, "mallee", "tiny"),
        "direct tiny": _select(results.launch, "direct", "tiny"),
        "mallee root-32m": _select(results.size, "mallee", "root-32m"),
        "mallee root-1g": _select(results.size, "mallee", "root-1g"),
    }
    return {name: step_medians(runs) for name, runs in groups.items()}


def print_report(results: Results) -> None:
    print_facts(results.machine, results.versions)
    s = results.settings
    print(
        f"load:     load average {results.machine['loadavg_1min']} before, {results.load_after} after"
        f" (1 min); {s['runs']} run(s); {s['instance_type']} = {s['vcpus']} vCPU, {s['memory_mib']} MiB,"
        f" {s['disk_gib']} GiB; accelerator {s['accelerator']}"
    )
    print("setup:    " + ", ".join(f"{k} {v:.1f} s" for k, v in results.setup_seconds.items()))
    fig = figures(results)
    print("\n1. RunInstances -> SSH login, tiny image (cached on the node) vs the same boot via libvirt")
    _print_runs(results.launch, ("mallee", "tiny"), ("direct", "tiny"))
    print("\n2. Cached launch -> SSH login: 1 GiB root vs 32 MiB root (same filesystem, zero-padded)")
    _print_runs(results.size, ("mallee", "root-1g"), ("mallee", "root-32m"))
    print("\nsteps (median seconds from the start of the launch):")
    _print_steps(_all_steps(results))
    _print_memory(results.memory)
    for failure in results.failures:
        print(f"\nNOTE: a launch failed and was run again: {failure}")
    print()
    _print_verdict("RunInstances->SSH / direct boot", fig["launch"], "mallee", "direct")
    _print_verdict("1 GiB / 32 MiB cached launch", fig["size"], "root-1g", "root-32m")
    started = fig["start_to_running"]
    if started["seconds"] is None:
        print(f"{'VM start -> running (API)':<34} not measured")
    else:
        verdict = "met" if started["met"] else "MISSED"
        print(
            f"{'VM start -> running (API)':<34} median {started['seconds']['median']:.2f} s"
            f" (min {started['seconds']['min']:.2f} s)   goal < {started['goal']:.2f} s  {verdict}"
        )


def _print_runs(results: Sequence[LaunchResult], top: tuple[str, str], bottom: tuple[str, str]) -> None:
    tops, bottoms = _select(results, *top), _select(results, *bottom)
    left, right = f"{top[0]} {top[1]}", f"{bottom[0]} {bottom[1]}"
    print(f"   run  {left:>16} {right:>16}   ratio")
    for n, (a, b) in enumerate(zip(tops, bottoms, strict=False), 1):
        print(f"   {n:>3}  {a.seconds:>14.2f} s {b.seconds:>14.2f} s  {a.seconds / b.seconds:>6.3f}")
    for stat in ("min", "median"):
        a_stat = _stats([r.seconds for r in tops])
        b_stat = _stats([r.seconds for r in bottoms])
        if a_stat and b_stat:
            ratio = a_stat[stat] / b_stat[stat]
            print(f"   {stat:>6} {a_stat[stat]:>13.2f} s {b_stat[stat]:>14.2f} s  {ratio:>6.3f}")


def _print_steps(steps: dict[str, dict[str, float]]) -> None:
    groups = list(steps)
    print(f"   {'step':<16}" + "".join(f"{g:>17}" for g in groups) + "   what")
    for name, meaning in STEPS.items():
        cells = [steps[g].get(name) for g in groups]
        if any(c is not None for c in cells):
            row = "".join(f"{'-' if c is None else f'{c:.2f}':>17}" for c in cells)
            print(f"   {name:<16}{row}   {meaning}")


def _print_memory(memory: dict[str, Any]) -> None:
    if not memory:
        return
    print("\n3. Memory")
    qemu = ", ".join(f"{v:.1f}" for v in memory.get("qemu_rss_mib", []))
    print(f"   QEMU RSS per m1.small instance (Mallee, 2 running, after SSH login): {qemu} MiB")
    direct = memory.get("direct_qemu_rss_mib")
    if direct:
        print(f"   QEMU RSS of the direct boot after SSH login (median): {direct:.1f} MiB")
    print(
        f"   node controller RSS: {memory.get('nc_rss_0_mib')} MiB with 0 instances,"
        f" {memory.get('nc_rss_2_mib')} MiB with 2 -> {memory.get('nc_rss_per_instance_mib')} MiB"
        " per instance"
    )


def _print_verdict(label: str, figure: dict[str, Any], top: str, bottom: str) -> None:
    ratio = figure["ratio"]
    if ratio is None:
        print(f"{label:<34} not measured")
        return
    verdict = "met" if figure["met"] else "MISSED"
    print(
        f"{label:<34} median {figure[top]['median']:.2f} s / {figure[bottom]['median']:.2f} s ="
        f" {ratio['median']:.3f} (min/min {ratio['min']:.3f})   goal <= {figure['goal']:.2f}  {verdict}"
    )
