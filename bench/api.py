"""API benchmark: requests/s and p99 latency of EC2 DescribeRegions, DescribeInstanceTypes and
DescribeInstances on Mallee and on moto's server, measured in the same run, with the ratios between
them.

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

    .venv/bin/python bench/api.py [--seconds 8] [--connections 16] [--rounds 1] [--json]
                                  [--baseline REV]

--baseline REV also runs Mallee as it was at git revision REV (its `src` extracted beside this
tree) and prints this tree's figures as ratios of REV's: the cost of a change, in one run.

With --rounds N every measurement is repeated N times, interleaved between the servers, and the
rounds are combined (overall req/s, median p99): worth it on a noisy virtual machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import botocore
import botocore.exceptions
from _harness import (
    ProcessSet,
    Target,
    boto_client,
    cpu_seconds,
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
from _loadgen import LoadGenerator, LoadResult, LoadSettings, SignedRequest, choose_client, loadgen_version
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EC2_API_VERSION = "2016-11-15"
INSTANCES = 20  # launched on each server before DescribeInstances is measured
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Operation:
    """An EC2 read operation: its name, its query parameters for a target, and how to check an answer."""

    name: str
    item_tag: str  # one per item in the XML answer: what to count
    params: Callable[[Target], dict[str, str]]

    @property
    def response_tag(self) -> str:
        return f"<{self.name}Response"


@dataclass
class Measurement:
    """One operation on one target: the load result plus what a single answer looked like."""

    operation: str
    target: str
    client: str
    items: int
    response_bytes: int
    load: LoadResult
    server_cpu_pct: float
    loadgen_cpu_pct: float = field(default=0.0)

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("load")
        data.update(asdict(self.load))
        data["rps"] = round(self.load.rps, 1)
        data["errors"] = self.load.errors
        return data


# ---------------------------------------------------------------------------------------------
# Requests


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
    url = target.endpoint.rstrip("/") + "/"
    body = urlencode({**params, "Version": EC2_API_VERSION})
    headers = {"Host": urlsplit(url).netloc, "Content-Type": FORM_CONTENT_TYPE}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(target.access_key, target.secret_key), "ec2", target.region).add_auth(request)
    return SignedRequest(url, {name: str(value) for name, value in request.headers.items()}, body)


def check_once(request: SignedRequest, operation: Operation) -> tuple[int, int]:
    """Send the signed request once; it must answer 200 with the operation's XML. (items, bytes)."""
    data = request.body.encode()
    req = urllib.request.Request(request.url, data=data, headers=request.headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    text = payload.decode(errors="replace")
    if status != 200 or operation.response_tag not in text:
        raise RuntimeError(f"{operation.name} on {request.url} answered {status}: {text[:500]}")
    return text.count(f"<{operation.item_tag}>"), len(payload)


def launch_instances(target: Target, count: int) -> None:
    """`count` t1.micro instances on `target`: on Mallee from a small registered image, on moto from
    one of its own images; returns once every one is listed as running (moto: at once)."""
    ec2 = _ec2_client(target)
    if target.name == "moto":
        image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    else:
        s3 = boto_client("s3", target)
        s3.create_bucket(Bucket="bench-images")
        s3.put_object(Bucket="bench-images", Key="vmlinux", Body=b"\x7fELF" + b"\0" * 4092)
        s3.put_object(Bucket="bench-images", Key="rootfs.img", Body=b"\0" * 65536)
        kernel = ec2.register_image(Name="bench-k", ImageLocation="bench-images/vmlinux")["ImageId"]
        image_id = ec2.register_image(
            Name="bench-m", ImageLocation="bench-images/rootfs.img", KernelId=kernel
        )["ImageId"]
    deadline = time.monotonic() + 60
    while True:  # a new cloud's zone has no capacity until its cluster has heard from its node
        try:
            ec2.run_instances(ImageId=image_id, InstanceType="t1.micro", MinCount=count, MaxCount=count)
            break
        except botocore.exceptions.ClientError as error:
            if "InsufficientInstanceCapacity" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while time.monotonic() < deadline:
        states = [
            i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        ]
        if len(states) == count and set(states) == {"running"}:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{target.name}: {count} instances not running within 60 s")


def list_instance_types(target: Target) -> set[str]:
    paginator = _ec2_client(target).get_paginator("describe_instance_types")
    return {t["InstanceType"] for page in paginator.paginate() for t in page["InstanceTypes"]}


def build_operations(workload: str, targets: Sequence[Target]) -> list[Operation]:
    """The two operations; for the 'matched' workload, parameterised so all targets return the same items."""
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
# Measuring


def measure(
    target: Target,
    operation: Operation,
    client: tuple[str, LoadGenerator],
    settings: LoadSettings,
    workdir: Path,
) -> Measurement:
    request = sign(target, operation.params(target))
    items, response_bytes = check_once(request, operation)
    client_name, generate = client
    if settings.warmup > 0:
        generate(request, settings.warmup, settings, workdir)
    cpu_before = cpu_seconds(target.root_pid)
    load = generate(request, settings.seconds, settings, workdir)
    server_cpu = cpu_seconds(target.root_pid) - cpu_before
    return Measurement(
        operation=operation.name,
        target=target.name,
        client=client_name,
        items=items,
        response_bytes=response_bytes,
        load=load,
        server_cpu_pct=round(100 * server_cpu / load.seconds, 1),
        loadgen_cpu_pct=round(100 * load.loadgen_cpu_seconds / load.seconds, 1),
    )


def combine_rounds(rounds: Sequence[Measurement]) -> list[Measurement]:
    """One measurement per (operation, target): requests and seconds added up (so req/s is the overall
    rate), the median of the rounds' p50 and p99, the largest max, all errors, the mean CPU use."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in rounds:
        groups.setdefault((m.operation, m.target), []).append(m)
    return [_combine(group) for group in groups.values()]


def _combine(group: Sequence[Measurement]) -> Measurement:
    if len(group) == 1:
        return group[0]
    loads = [m.load for m in group]
    load = LoadResult.combined(loads)
    first = group[0]
    return Measurement(
        operation=first.operation,
        target=first.target,
        client=first.client,
        items=first.items,
        response_bytes=first.response_bytes,
        load=load,
        server_cpu_pct=round(statistics.fmean(m.server_cpu_pct for m in group), 1),
        loadgen_cpu_pct=round(statistics.fmean(m.loadgen_cpu_pct for m in group), 1),
    )


def ratios(results: Sequence[Measurement], other: str = "moto") -> list[dict[str, Any]]:
    """Per operation: Mallee/`other` throughput and `other`/Mallee p99 (above 1 means Mallee is
    better); None where a side measured nothing."""
    out = []
    for op in dict.fromkeys(m.operation for m in results):
        by_target = {m.target: m.load for m in results if m.operation == op}
        mallee, them = by_target["mallee"], by_target[other]
        out.append(
            {
                "operation": op,
                "against": other,
                "throughput": round(mallee.rps / them.rps, 2) if them.rps else None,
                "p99": round(them.p99_ms / mallee.p99_ms, 2) if mallee.p99_ms and them.requests else None,
            }
        )
    return out


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
    print()
    header = (
        f"{'operation':<22} {'target':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>6} {'items':>5} {'bytes':>7} {'srv CPU':>8} {'gen CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    for m in results:
        load = m.load
        print(
            f"{m.operation:<22} {m.target:<16} {_fmt_rps(load.rps):>8} "
            f"{load.p50_ms:>8.2f} {load.p99_ms:>8.2f} "
            f"{load.max_ms:>8.1f} {load.errors:>6} {m.items:>5} {m.response_bytes:>7} "
            f"{m.server_cpu_pct:>7.0f}% {m.loadgen_cpu_pct:>7.0f}%"
        )
    print()
    for ratio in report["ratios"]:
        other = ratio["against"]
        by_target = {m.target: m.load for m in results if m.operation == ratio["operation"]}
        mallee, them = by_target["mallee"], by_target[other]
        print(
            f"{ratio['operation']:<22} mallee {_fmt_rps(mallee.rps)} req/s p99 {mallee.p99_ms:.1f} ms | "
            f"{other} {_fmt_rps(them.rps)} req/s p99 {them.p99_ms:.1f} ms | "
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
    for target in targets:
        launch_instances(target, INSTANCES)
    operations = build_operations(args.workload, targets)
    rounds: list[Measurement] = []
    for number in range(1, args.rounds + 1):
        for operation in operations:
            for target in targets:
                print(f"round {number}/{args.rounds}: {operation.name} on {target.name} ...", file=sys.stderr)
                rounds.append(measure(target, operation, client, settings, workdir))
    results = combine_rounds(rounds)
    report = {
        "machine": machine,
        "versions": versions(client[0]),
        "settings": {
            **asdict(settings),
            "client": client[0],
            "workload": args.workload,
            "rounds": args.rounds,
        },
        "results": [m.row() for m in results],
        "ratios": ratios(results) + (ratios(results, f"mallee@{args.baseline}") if args.baseline else []),
        "rounds": [m.row() for m in rounds] if args.rounds > 1 else [],
    }
    return report, results


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
        except RuntimeError as exc:
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


def invalid_reason(m: Measurement) -> str | None:
    """Why a measurement cannot be trusted (error answers, or nothing measured), else None."""
    load = m.load
    if load.errors:
        return (
            f"{m.operation} on {m.target}: {load.non2xx} non-2xx, {load.socket_errors} socket errors, "
            f"{load.timeouts} timeouts"
        )
    if load.requests == 0:
        return f"{m.operation} on {m.target}: no request completed in {load.seconds:.1f} s"
    return None


if __name__ == "__main__":
    sys.exit(main())
