"""API benchmark: requests/s and p99 latency of EC2 DescribeRegions, DescribeInstanceTypes and
DescribeInstances, STS AssumeRole and instance-metadata GETs on Mallee and on moto's server, measured
in the same run, with the ratios between them.

Both servers run on loopback for the whole run: Mallee as `python -m mallee.supervisor up` (five
processes, the public endpoint on the base port) and moto as `python -m moto.server`. Each
operation is signed once per server with botocore's SigV4 (a header signature stays valid for
minutes) and replayed by `wrk` through bench/_load.lua; without wrk a Python asyncio keep-alive
client does the same, less accurately. Every response must be a 2xx: any error makes the run exit 1.

By default each request asks both servers for the same items, so they do equal work: DescribeRegions
names the server's own region, DescribeInstanceTypes names the instance types both catalogues
hold (moto knows 1,395 types and 38 regions, Mallee 18 types and one region), and DescribeInstances
lists the INSTANCES instances the benchmark launched on each (Mallee's node runs its fake hypervisor,
so its control plane — the reconciler, the CC's polls, their rpc — is busy as with real VMs).
`--workload bare` sends the requests with no parameters instead.

The identity rows (_api_identity.py): AssumeRole by an IAM user of a role whose trust policy names
it, and IMDSv2 GETs of an instance's id and its role's credentials — on Mallee through the node's
metadata proxy (from the instance's own address) and through the CLC's metadata rpc alone.

    .venv/bin/python bench/api.py [--seconds 8] [--connections 16] [--rounds 1] [--json]
                                  [--only ec2|identity] [--baseline REV]

--baseline REV also runs Mallee as it was at git revision REV (its `src` extracted beside this
tree) and prints this tree's figures as ratios of REV's: the cost of a change, in one run.

With --rounds N every measurement is repeated N times, interleaved between the servers, and the
rounds are combined (overall req/s, median p99): worth it on a noisy virtual machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore
import botocore.exceptions
from _api_common import (
    LAUNCH_TIMEOUT,
    Case,
    Measurement,
    combine_rounds,
    invalid_reason,
    measure,
    query_answer,
    ratios,
    register_image,
    run_instances,
    sign_query,
    wait_running,
)
from _api_identity import Identity, identity_cases, prepare_mallee, prepare_moto
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
    source_of,
    start_mallee,
    start_moto,
    workspace,
)
from _loadgen import LoadSettings, SignedRequest, choose_client, loadgen_version

EC2_API_VERSION = "2016-11-15"
INSTANCES = 20  # launched on each server before DescribeInstances is measured


# ---------------------------------------------------------------------------------------------
# EC2 operations


@dataclass(frozen=True)
class Operation:
    """An EC2 read operation: its name, its query parameters for a target, and how to check an answer."""

    name: str
    item_tag: str  # one per item in the XML answer: what to count
    params: Callable[[Target], dict[str, str]]

    def case(self, target: Target) -> Case:
        request = partial(sign, target, self.params(target))
        return Case(self.name, target, target.name, request, partial(check_once, operation=self))


def _ec2_client(target: Target) -> Any:
    return boto_client("ec2", target)


def _answers_describe_regions(target: Target) -> bool:
    try:
        _ec2_client(target).describe_regions()
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


def sign(target: Target, params: dict[str, str]) -> SignedRequest:
    """An EC2 query-protocol POST for `params`, SigV4-signed for `target` with botocore."""
    return sign_query(target, "ec2", {**params, "Version": EC2_API_VERSION})


def check_once(request: SignedRequest, operation: Operation) -> tuple[int, int]:
    """Send the signed request once; it must answer 200 with the operation's XML. (items, bytes)."""
    return query_answer(request, f"{operation.name}Response", operation.item_tag)


def launch_instances(target: Target, count: int) -> None:
    """`count` t1.micro instances on `target`: on Mallee from a small registered image, on moto from
    one of its own images; returns once every one is listed as running (moto: at once)."""
    ec2 = _ec2_client(target)
    if target.name == "moto":
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    else:
        image_id = register_image(target, "bench-images")
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    params = {"ImageId": image_id, "InstanceType": "t1.micro", "MinCount": count, "MaxCount": count}
    wait_running(ec2, run_instances(ec2, deadline, **params), deadline, target.name)


def list_instance_types(target: Target) -> set[str]:
    paginator = _ec2_client(target).get_paginator("describe_instance_types")
    return {t["InstanceType"] for page in paginator.paginate() for t in page["InstanceTypes"]}


def build_operations(workload: str, targets: Sequence[Target]) -> list[Operation]:
    """The three operations; for the 'matched' workload, parameterised so all targets return the
    same items."""
    if workload == "bare":
        return [
            Operation("DescribeRegions", "regionName", lambda t: {"Action": "DescribeRegions"}),
            Operation("DescribeInstanceTypes", "instanceType", lambda t: {"Action": "DescribeInstanceTypes"}),
            Operation("DescribeInstances", "instanceId", lambda t: {"Action": "DescribeInstances"}),
        ]
    common = sorted(set.intersection(*(list_instance_types(t) for t in targets)))
    if not common:
        raise RuntimeError("the servers share no instance type to ask for")
    type_params = {f"InstanceType.{i}": name for i, name in enumerate(common, 1)}
    return [
        Operation(
            "DescribeRegions", "regionName", lambda t: {"Action": "DescribeRegions", "RegionName.1": t.region}
        ),
        Operation(
            "DescribeInstanceTypes",
            "instanceType",
            lambda t: {"Action": "DescribeInstanceTypes", **type_params},
        ),
        Operation("DescribeInstances", "instanceId", lambda t: {"Action": "DescribeInstances"}),
    ]


# ---------------------------------------------------------------------------------------------
# Report


def versions(client_name: str) -> dict[str, str]:
    return {
        "mallee": mallee_version(),
        "moto": dist_version("moto"),
        "botocore": botocore.__version__,
        "loadgen": loadgen_version(client_name),
    }


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"x{value:.2f}"


def _fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def print_report(report: dict[str, Any], results: Sequence[Measurement]) -> None:
    settings = report["settings"]
    print_facts(report["machine"], report["versions"])
    print(
        f"load:     {settings['client']}, {settings['connections']} connections, "
        f"{settings['threads']} threads, {settings['warmup']} s warm-up + {settings['seconds']} s "
        f"per measurement, {settings['rounds']} round(s), workload '{settings['workload']}'"
    )
    if any(m.operation.startswith("IMDS") for m in results):
        print(
            "IMDS:     the Python client on every server (Mallee's proxy knows a guest by the address "
            "it connects from, which wrk cannot choose); 'rpc': the CLC's metadata rpc alone"
        )
    for note in report["notes"]:
        print(f"note:     {note}")
    print()
    width = max([16, *(len(m.target) for m in results)])
    header = (
        f"{'operation':<22} {'target':<{width}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>6} {'items':>5} {'bytes':>7} {'srv CPU':>8} {'gen CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    for m in results:
        load = m.load
        print(
            f"{m.operation:<22} {m.target:<{width}} {_fmt_rps(load.rps):>8} "
            f"{load.p50_ms:>8.2f} {load.p99_ms:>8.2f} "
            f"{load.max_ms:>8.1f} {load.errors:>6} {m.items:>5} {m.response_bytes:>7} "
            f"{m.server_cpu_pct:>7.0f}% {m.loadgen_cpu_pct:>7.0f}%"
        )
    print()
    for ratio in report["ratios"]:
        ours, theirs = ratio["target"], ratio["against"]
        by_target = {m.target: m.load for m in results if m.operation == ratio["operation"]}
        mine, them = by_target[ours], by_target[theirs]
        print(
            f"{ratio['operation']:<22} {ours} {_fmt_rps(mine.rps)} req/s p99 {mine.p99_ms:.1f} ms | "
            f"{theirs} {_fmt_rps(them.rps)} req/s p99 {them.p99_ms:.1f} ms | "
            f"throughput {_fmt_ratio(ratio['throughput'])}, p99 {_fmt_ratio(ratio['p99'])}"
        )


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="measured seconds per operation and server (8; wrk rounds to whole seconds)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds before each measurement (2)"
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (16)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every measurement, interleaved, and combine (1)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or the Python asyncio client",
    )
    parser.add_argument(
        "--workload",
        choices=("matched", "bare"),
        default="matched",
        help="matched: both servers return the same items (default); bare: no parameters",
    )
    parser.add_argument(
        "--only",
        choices=("ec2", "identity"),
        help="measure only the EC2 rows, or only the identity rows (AssumeRole, metadata GETs)",
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="also measure Mallee at git revision REV, and compare"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (server logs) after the run"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("need --rounds >= 1")
    if args.seconds <= 0 or args.connections < 1 or args.threads < 1 or args.threads > args.connections:
        parser.error("need --seconds > 0 and 1 <= --threads <= --connections")
    return args


def run(
    args: argparse.Namespace, workdir: Path, procs: ProcessSet
) -> tuple[dict[str, Any], list[Measurement]]:
    machine = machine_facts()  # before our own servers add to the load average
    client = choose_client(args.client)
    settings = LoadSettings(args.seconds, args.warmup, args.connections, args.threads)
    print("starting mallee and moto ...", file=sys.stderr)
    # Room on the (fake) node for the instances DescribeInstances lists.
    room = {"MALLEE_NODE_CORES": "64", "MALLEE_NODE_MEMORY_MIB": "65536", "MALLEE_NODE_DISK_GIB": "1000"}
    mallee = start_mallee(
        procs, workdir, set(), _answers_describe_regions, "DescribeRegions answer", extra_env=room
    )
    moto = start_moto(
        procs, workdir, mallee_ports(mallee), _answers_describe_regions, "DescribeRegions answer"
    )
    targets: tuple[Target, ...] = (mallee, moto)
    homes = {mallee.name: workdir}  # each Mallee's work directory: its log and data directory
    if args.baseline:
        print(f"starting mallee at {args.baseline} ...", file=sys.stderr)
        source = source_of(args.baseline, workdir / "baseline-src")
        (workdir / "baseline").mkdir()
        baseline = start_mallee(
            procs,
            workdir / "baseline",
            mallee_ports(mallee) | {int(urlsplit(moto.endpoint).port or 0)},
            _answers_describe_regions,
            "DescribeRegions answer",
            extra_env=room,
            name=f"mallee@{args.baseline}",
            source=source,
        )
        targets += (baseline,)
        homes[baseline.name] = workdir / "baseline"
    notes: list[str] = []
    groups: list[list[Case]] = []
    if args.only in (None, "ec2"):
        for target in targets:
            launch_instances(target, INSTANCES)
        operations = build_operations(args.workload, targets)
        groups += [[operation.case(target) for target in targets] for operation in operations]
    if args.only in (None, "identity"):
        print("preparing the identity rows ...", file=sys.stderr)
        prepared = [(t, ident) for t in targets if (ident := _prepare_identity(t, homes, notes))]
        groups += identity_cases(prepared, settings, notes)
    rounds: list[Measurement] = []
    for number in range(1, args.rounds + 1):
        for group in groups:
            for case in group:
                print(f"round {number}/{args.rounds}: {case.operation} on {case.label} ...", file=sys.stderr)
                rounds.append(measure(case, client, settings, workdir))
    results = combine_rounds(rounds)
    pairs = [("mallee", "moto"), ("mallee rpc", "moto")]
    if args.baseline:
        base = f"mallee@{args.baseline}"
        pairs += [("mallee", base), ("mallee rpc", f"{base} rpc")]
    report = {
        "machine": machine,
        "versions": versions(client[0]),
        "settings": {
            **asdict(settings),
            "client": client[0],
            "workload": args.workload,
            "rounds": args.rounds,
            "only": args.only,
        },
        "notes": notes,
        "results": [m.row() for m in results],
        "ratios": ratios(results, pairs[:2]) + ratios(results, pairs[2:]),
        "rounds": [m.row() for m in rounds] if args.rounds > 1 else [],
    }
    return report, results


def _prepare_identity(target: Target, homes: dict[str, Path], notes: list[str]) -> Identity | None:
    """What `target` is given for the identity rows. A baseline revision that cannot take it (an
    older STS, IAM or metadata service) is left out of those rows, with a note."""
    if target.name == "moto":
        return prepare_moto(target)
    if target.name == "mallee":
        return prepare_mallee(target, homes[target.name])
    try:
        return prepare_mallee(target, homes[target.name], optional=True)
    except (
        RuntimeError,
        OSError,
        KeyError,
        ValueError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    ) as exc:
        notes.append(f"{target.name}: identity rows not measured: {exc}")
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_signals()
    procs = ProcessSet()
    with workspace(args.keep) as workdir:
        try:
            report, results = run(args, workdir, procs)
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        except (RuntimeError, botocore.exceptions.ClientError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
        finally:
            procs.stop_all()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, results)
    problems = [problem for m in results if (problem := invalid_reason(m))]
    for problem in problems:
        print(f"ERROR: {problem}: these figures are not valid", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
