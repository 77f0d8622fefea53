"""Scale benchmark (issue 17): a cloud with 100 simulated nodes, filled to 1,000 and then 10,000
instances; at each level, what a user and an operator see, beside moto's server measured in the
same run.

The cloud is `mallee up` on its fake drivers plus `mallee serve nc-sim`: 100 node controllers in one
process, each on an address of its own, registered with RegisterNode. Only the hypervisor and the
data plane are simulated; the CLC, the cluster controller's scheduler and polls, the nodes' pushes
and the reconciler are the production code. Instances are launched in batches (one RunInstances
each, tagged with its batch, the instance type alternating), into a VPC subnet large enough.

Figures, at each level:
- RunInstances of 100 -> all `running` (DescribeInstances), on top of the instances already there;
- DescribeInstances pages (MaxResults 200): unfiltered (first and last page, via NextToken) and
  filtered by state, tag, zone and instance type, each the median of --repeats requests on one
  keep-alive connection; baseline: moto's server answering DescribeInstances over 200 instances;
- the CLC's and the CC's memory (RSS) and CPU at rest (doing what they do unasked: polls, the
  reconciler, heartbeats), and both per 1,000 instances (the increase over the empty cloud);
- one reconciliation pass (the CLC's Reconciler, run in the benchmark's process against the cloud's
  database and cluster controller, at steady state);
- the cluster controller SIGKILLed: seconds until the restarted one answers, and until it is back
  to steady state (ready, every node enabled, every instance reported running), the CLC's records
  then checked unchanged.

    .venv/bin/python bench/scale.py [--quick] [--levels 1000,10000] [--nodes 100] [--profile] [--json]

--quick: 20 nodes, levels 100 and 500, for trying it out (a few minutes). --profile: cProfile of a
reconciliation pass and py-spy samples of the CLC answering DescribeInstances, at the last level.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import botocore
import botocore.exceptions
from _harness import (
    ProcessSet,
    Target,
    boto_client,
    dist_version,
    interrupt_on_signals,
    machine_facts,
    mallee_ports,
    mallee_version,
    print_facts,
    start_moto,
    workspace,
)
from _scale_cloud import ScaleCloud, count_states, kill_cc_and_wait, launch, prepare, start
from _scale_measure import (
    PAGE,
    PageCase,
    cpu_at_rest,
    mallee_cases,
    moto_instances,
    reconcile_passes,
    rss_mib,
    time_page,
)
from _scale_profile import available as py_spy_available
from _scale_profile import sample
from _scale_report import Figure, at_most, below_baseline, print_table

from mallee.cli.client import ApiError

MOTO_INSTANCES = 200
TIMED_BATCH = 100
SETTLE = 5.0  # seconds after the timed batch before measuring (its pushes and passes end)


def _answers(target: Target) -> bool:
    try:
        boto_client("ec2", target).describe_instances()
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


class Run:
    """The figures, filled in level by level."""

    def __init__(self, levels: list[int]) -> None:
        self.levels = levels
        self.notes: list[str] = []
        self.profiles: dict[str, str] = {}
        self.run100 = Figure(
            "RunInstances 100 -> all running", "s", target="<= 10 s", meets=at_most(10), digits=2
        )
        self.run100_call = Figure("  of it, the RunInstances call", "s", digits=2)
        self.fill_rate = Figure("launch rate filling up (batches)", "inst/s")
        self.pages: dict[str, Figure] = {}
        self.memory = {s: Figure(f"{s.upper()} RSS", "MiB") for s in ("clc", "cc", "nc-sim")}
        self.memory_per = {s: Figure(f"{s.upper()} RSS per 1,000 instances", "MiB") for s in ("clc", "cc")}
        self.cpu = {s: Figure(f"{s.upper()} CPU at rest", "% core") for s in ("clc", "cc", "nc-sim")}
        self.cpu_per = {
            s: Figure(f"{s.upper()} CPU at rest per 1,000", "% core", digits=2) for s in ("clc", "cc")
        }
        self.reconcile = Figure("reconcile pass, wall", "ms", digits=0)
        self.reconcile_cpu = Figure("reconcile pass, CPU (CLC side)", "ms", digits=0)
        self.cc_answers = Figure("CC SIGKILLed -> answers again", "s", digits=2)
        self.cc_steady = Figure(
            "CC SIGKILLed -> steady state", "s", target="<= 30 s", meets=at_most(30), digits=2
        )
        self.rest0: dict[str, float] = {}
        self.rss0: dict[str, float] = {}

    def page(self, name: str) -> Figure:
        if name not in self.pages:
            self.pages[name] = Figure(
                f"DescribeInstances page: {name}",
                "ms",
                baseline_name=f"moto {MOTO_INSTANCES} inst.",
                target="< moto",
                meets=below_baseline,
                digits=1,
            )
        return self.pages[name]

    def figures(self) -> list[Figure]:
        return [
            self.run100,
            self.run100_call,
            self.fill_rate,
            *self.pages.values(),
            *self.memory.values(),
            *self.memory_per.values(),
            *self.cpu.values(),
            *self.cpu_per.values(),
            self.reconcile,
            self.reconcile_cpu,
            self.cc_answers,
            self.cc_steady,
        ]


def measure_level(
    run: Run, args: argparse.Namespace, cloud: ScaleCloud, moto: Target, pids: dict[str, int]
) -> None:
    level = len(cloud.launched)
    last = level == run.levels[-1]
    progress(f"{level:,} instances: DescribeInstances pages (mallee and moto)")
    moto_ms = time_page(moto, PageCase("moto", {}), args.repeats, page=None)
    if moto_ms.items != MOTO_INSTANCES:
        raise RuntimeError(f"moto answered {moto_ms.items} instances, not {MOTO_INSTANCES}")
    middle_batch = cloud.batches // 2
    for case in mallee_cases(cloud.zone, middle_batch):
        timing = time_page(cloud.target, case, args.repeats)
        figure = run.page(case.name)
        figure.values[level] = timing.median_ms
        figure.baseline[level] = moto_ms.median_ms
        progress(f"  {case.name}: {timing.median_ms:.0f} ms (moto {moto_ms.median_ms:.0f} ms)")
        if timing.items == 0 or timing.items > PAGE:
            run.notes.append(f"{case.name} at {level}: {timing.items} instances on the page")
    progress(f"{level:,} instances: memory and CPU at rest ({args.rest:.0f} s)")
    rest = cpu_at_rest(pids, args.rest)
    for service, pid in pids.items():
        run.memory[service].values[level] = rss_mib(pid)
        run.cpu[service].values[level] = rest[service]
    thousands = level / 1000
    for service in ("clc", "cc"):
        run.memory_per[service].values[level] = (rss_mib(pids[service]) - run.rss0[service]) / thousands
        run.cpu_per[service].values[level] = (rest[service] - run.rest0[service]) / thousands
    progress(f"{level:,} instances: reconciliation passes")
    database = cloud.workdir / "mallee-data" / "clc.db"
    cost = reconcile_passes(database, cloud.zone, cloud.cc_client(), 3, args.profile and last)
    run.reconcile.values[level], run.reconcile_cpu.values[level] = cost.wall_ms, cost.cpu_ms
    if cost.profile:
        run.profiles[f"reconcile pass at {level:,} (cProfile, cumulative)"] = cost.profile
    if args.profile and last and py_spy_available():
        profile_describe(run, cloud, level)
    progress(f"{level:,} instances: cluster controller SIGKILLed")
    answered, steady = kill_cc_and_wait(cloud)
    run.cc_answers.values[level], run.cc_steady.values[level] = answered, steady
    pids["cc"] = cloud.pid("cc")
    states = count_states(cloud)
    if states != {"running": level}:
        raise RuntimeError(f"after the CC's restart the CLC records {states}, not {level} running")
    if args.profile and last:
        if py_spy_available():
            profile_launch(run, cloud, pids)
        else:
            run.notes.append("py-spy is not installed: no profiles of the services")


def profile_describe(run: Run, cloud: ScaleCloud, level: int) -> None:
    """py-spy samples of the CLC while it answers first pages of DescribeInstances."""
    case = mallee_cases(cloud.zone, 0)[0]
    answered: list[float] = []

    def ask() -> None:
        answered.append(time_page(cloud.target, case, 1).median_ms)

    summary = sample({"clc": cloud.pid("clc")}, 10, ask, cloud.workdir)
    title = (
        f"CLC answering DescribeInstances first pages, {level:,} (py-spy; {2 * len(answered)} pages in 10 s)"
    )
    run.profiles[title] = summary["clc"]


def profile_launch(run: Run, cloud: ScaleCloud, pids: dict[str, int]) -> None:
    """py-spy samples of the CLC, the CC and the simulated nodes during one more RunInstances of 100
    (as long as the timed one took to run), after the figures (py-spy's sampling takes CPU)."""
    level = len(cloud.launched)
    seconds = math.ceil(run.run100.values.get(level) or 5)
    profiled = {"clc": cloud.pid("clc"), "cc": cloud.pid("cc"), "nc-sim": pids["nc-sim"]}
    summaries = sample(profiled, seconds, lambda: launch(cloud, TIMED_BATCH), cloud.workdir, repeat=False)
    for name, summary in summaries.items():
        run.profiles[f"{name} during RunInstances of 100 at {level:,} (py-spy, {seconds} s)"] = summary


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fill(run: Run, cloud: ScaleCloud, level: int, batch: int) -> None:
    """Launch batches until `level` - 100 instances run, then the timed batch of 100."""
    started, before = time.monotonic(), len(cloud.launched)
    while len(cloud.launched) < level - TIMED_BATCH:
        count = min(batch, level - TIMED_BATCH - len(cloud.launched))
        called, running, _ = launch(cloud, count)
        progress(
            f"{len(cloud.launched):,} running (+{count}: call {called:.1f} s, running after {running:.1f} s)"
        )
    if len(cloud.launched) > before:
        run.fill_rate.values[level] = (len(cloud.launched) - before) / (time.monotonic() - started)
    called, running, _ = launch(cloud, TIMED_BATCH)
    progress(
        f"{len(cloud.launched):,} running (timed batch of 100: call {called:.2f} s, running {running:.2f} s)"
    )
    run.run100.values[level], run.run100_call.values[level] = running, called
    time.sleep(SETTLE)


def run_all(args: argparse.Namespace, workdir: Path, procs: ProcessSet) -> tuple[dict[str, Any], Run]:
    machine = machine_facts()
    levels = args.levels
    run = Run(levels)
    per_node = math.ceil(levels[-1] * 1.25 / args.nodes) + 2
    progress(f"starting mallee and {args.nodes} simulated nodes (room for {per_node} instances each)")
    cloud = start(procs, workdir, args.nodes, args.boot_delay, per_node, args.source)
    prepare(cloud)
    progress(f"starting moto with {MOTO_INSTANCES} instances")
    moto = start_moto(procs, workdir, mallee_ports(cloud.target), _answers, "DescribeInstances answer")
    moto_instances(moto, MOTO_INSTANCES)
    pids = {"clc": cloud.pid("clc"), "cc": cloud.pid("cc"), "nc-sim": cloud.sim_pid}
    progress("empty cloud: memory and CPU at rest")
    run.rest0 = cpu_at_rest(pids, args.rest)
    run.rss0 = {service: rss_mib(pid) for service, pid in pids.items()}
    for level in levels:
        fill(run, cloud, level, args.batch)
        measure_level(run, args, cloud, moto, pids)
    report = {
        "machine": machine,
        "load_after": round(os.getloadavg()[0], 2),
        "versions": versions(),
        "settings": {
            "levels": levels,
            "nodes": args.nodes,
            "per_node": per_node,
            "batch": args.batch,
            "boot_delay": args.boot_delay,
            "repeats": args.repeats,
            "rest_seconds": args.rest,
            "page": PAGE,
            "source": str(args.source or ""),
        },
        "at_rest_empty": {"cpu": run.rest0, "rss_mib": run.rss0},
        "figures": [f.row() for f in run.figures()],
        "notes": run.notes,
        "profiles": run.profiles,
    }
    return report, run


def versions() -> dict[str, str]:
    return {"mallee": mallee_version(), "moto": dist_version("moto"), "botocore": botocore.__version__}


def print_report(report: dict[str, Any], run: Run) -> None:
    s = report["settings"]
    print_facts(report["machine"], report["versions"])
    print(
        f"cloud:    {s['nodes']} simulated nodes (room for {s['per_node']} instances each, boot delay "
        f"{s['boot_delay']} s) + the cloud's own node (room for 1); one zone; batches of {s['batch']}"
    )
    rest = report["at_rest_empty"]
    print(
        "empty:    "
        + ", ".join(f"{k} RSS {rest['rss_mib'][k]:.0f} MiB CPU {rest['cpu'][k]:.1f}%" for k in rest["cpu"])
        + f"; load average after the run {report['load_after']}"
    )
    print(f"pages:    MaxResults {s['page']}, median of {s['repeats']} requests on one connection")
    for note in report["notes"]:
        print(f"note:     {note}")
    print()
    print_table(run.figures(), run.levels)
    for title, text in report["profiles"].items():
        print(f"\nprofile: {title}\n{text}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 nodes, levels 100 and 500")
    parser.add_argument("--levels", help="instances at each level, ascending (1000,10000)")
    parser.add_argument("--nodes", type=int, help="simulated nodes (100; --quick 20)")
    parser.add_argument(
        "--batch", type=int, help="instances per RunInstances while filling (500; --quick 100)"
    )
    parser.add_argument("--boot-delay", type=float, default=0.25, help="a simulated VM's start (0.25 s)")
    parser.add_argument("--repeats", type=int, default=9, help="requests per DescribeInstances figure (9)")
    parser.add_argument("--rest", type=float, default=10.0, help="seconds of CPU measured at rest (10)")
    parser.add_argument("--profile", action="store_true", help="profile the reconciler and DescribeInstances")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--source", type=Path, help="run `mallee up` from DIR/src (a change's before)", metavar="DIR"
    )
    args = parser.parse_args(argv)
    default_levels = "100,500" if args.quick else "1000,10000"
    args.levels = [int(n) for n in (args.levels or default_levels).split(",")]
    args.nodes = args.nodes or (20 if args.quick else 100)
    args.batch = args.batch or (100 if args.quick else 500)
    if args.levels != sorted(args.levels) or args.levels[0] < TIMED_BATCH:
        parser.error(f"--levels must ascend, each at least {TIMED_BATCH}")
    if args.repeats < 1 or args.nodes < 1 or args.batch < 1:
        parser.error("--repeats, --nodes and --batch must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_signals()
    procs = ProcessSet()
    with workspace(args.keep) as workdir:
        try:
            report, run = run_all(args, workdir, procs)
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        except (
            RuntimeError,
            ApiError,
            botocore.exceptions.ClientError,
            botocore.exceptions.BotoCoreError,
        ) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
        finally:
            procs.stop_all()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
