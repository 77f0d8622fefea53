"""S3 benchmark: Walrus's throughput for large and small objects, each figure measured against a
baseline in the same run, with the ratio and whether the target is met.

Targets: a large GET through the public endpoint at >= 0.8x the loopback limit, a large PUT at
>= 0.6x the read+MD5+write limit, 4 KiB PUT and GET at >= 10x moto's ops/s, and (with --big)
Walrus under 150 MiB RSS during a 5 GiB PUT and GET.

Large objects go through a raw-socket client (bench/_s3client.py: requests signed once with
UNSIGNED-PAYLOAD, bodies sent with sendfile and received into one reused buffer), to Mallee's public
endpoint, to Walrus's own port (what the front door's hand-off costs), and to a tiny limit server
(bench/_s3limits.py: sendfile or read+send for GET; recv, MD5, write, fsync for PUT). Small objects
are replayed by wrk (bench/_load.lua) against Mallee (its endpoint, and Walrus's own port for
information) and moto's server at 16 connections.

    .venv/bin/python bench/s3.py [--size 256] [--repeat 3] [--seconds 5] [--big] [--json]
                                 [--rounds 1] [--baseline REV]

--baseline REV also runs Mallee as it was at git revision REV (its `src` extracted beside this tree,
bench/_s3baseline.py) and measures the same four figures on it: large PUT and GET through its
endpoint, 4 KiB PUT and GET ops/s through its endpoint. The two Mallees are measured in turn (one
under load at a time; which goes first alternates between rounds and operations), and a table
prints each figure for the tree, for REV, and tree / REV: to show a change does not slow the hot
path, run `bench/s3.py --baseline <rev before the change>`. The targets are judged on the tree only.
One 5 s measurement of a small-object figure moves by up to ~25% here: for a decision add
`--rounds 3` (every small measurement three times, the targets interleaved, the rounds combined).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import botocore
from _harness import (
    LOOPBACK,
    WALRUS_OFFSET,
    ProcessSet,
    Target,
    boto_client,
    cpu_seconds,
    dist_version,
    free_port_block,
    interrupt_on_signals,
    machine_facts,
    mallee_ports,
    mallee_version,
    service_pids,
    start_mallee,
    start_moto,
    wait_until,
    workspace,
)
from _loadgen import LoadGenerator, LoadSettings, SignedRequest, choose_client, loadgen_version
from _s3baseline import (
    ROUTE,
    SSE_BASELINE_ROUTE,
    TREE_ROUTE,
    TREE_TARGET,
    alternate,
    describe,
    figures,
    start_baseline,
)
from _s3client import MIB, Transfer, get_discard, new_buffer, presign_s3, put_file, sign_s3
from _s3limits import COPY_PATH, make_file, md5_rate
from _s3report import SSE_ROUTE, SSE_TARGET, LargeResult, SmallResult, Verdict, print_report, verdicts

BUCKET = "bench"
SSE_BUCKET = "bench-sse"  # default encryption SSE-S3: the tree's encrypted figures (SSE_ROUTE/TARGET)
SMALL_SIZE = 4096
SMALL_GET_KEY = "small-get"
SMALL_PUT_PREFIX = "small-put-"
SMALL_PUT_KEYS = 2048
BIG_SIZE = 5 * 1024**3
BIG_FREE_NEEDED = 12 * 1024**3


# ---------------------------------------------------------------------------------------------
# Memory


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS over the process's life) in MiB."""
    return {name: round(_status_kib(pid, name) / 1024, 1) for name in ("VmRSS", "VmHWM")}


def walrus_pids(log_path: Path) -> list[int]:
    pids = service_pids(log_path, "walrus")
    if not pids:
        raise RuntimeError(f"no 'started walrus worker N (pid N)' line in {log_path}")
    return pids


class RssSampler:
    """Samples the VmRSS of processes every 20 ms in a thread while in use: `peak_mib` is the
    largest of any one of them (the target is per process), `peak_total_mib` of their sum."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_mib = 0.0
        self.peak_total_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        each = [_status_kib(pid, "VmRSS") / 1024 for pid in self.pids]
        self.peak_mib = max(self.peak_mib, *each)
        self.peak_total_mib = max(self.peak_total_mib, sum(each))

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------
# Large objects


@dataclass
class Route:
    """Where large transfers go: signs a request for a key, and whose CPU to count."""

    name: str
    sign: Callable[[str, str], SignedRequest]  # (method, key) -> request
    cpu_pid: int


def _timed(route: Route, action: Callable[[], Transfer]) -> tuple[Transfer, float]:
    cpu_before = cpu_seconds(route.cpu_pid)
    transfer = action()
    used = cpu_seconds(route.cpu_pid) - cpu_before
    return transfer, round(100 * used / transfer.seconds, 1) if transfer.seconds else 0.0


def put_large(route: Route, key: str, path: Path, size: int, md5: str) -> tuple[Transfer, float]:
    request = route.sign("PUT", key)
    transfer, cpu = _timed(route, lambda: put_file(request, path, size))
    if transfer.status != 200 or transfer.nbytes != size or transfer.etag != md5:
        raise RuntimeError(
            f"PUT {key} via {route.name}: {transfer.status}, ETag {transfer.etag!r} (want {md5!r}), "
            f"{transfer.answer[:500]!r}"
        )
    return transfer, cpu


def get_large(route: Route, key: str, size: int, buffer: memoryview) -> tuple[Transfer, float]:
    request = route.sign("GET", key)
    transfer, cpu = _timed(route, lambda: get_discard(request, buffer))
    if transfer.status != 200 or transfer.nbytes != size:
        raise RuntimeError(
            f"GET {key} via {route.name}: {transfer.status}, {transfer.nbytes} of {size} bytes "
            f"{transfer.answer[:500]!r}"
        )
    return transfer, cpu


def measure_large(
    routes: Sequence[Route], limits: Sequence[Route], path: Path, size: int, md5: str, repeat: int
) -> list[LargeResult]:
    """`repeat` rounds, interleaved: PUT on every route and the first limit server route, then GET
    on every route and every limit server route (sendfile, and read+send). Each round starts its
    GETs with the next route, so that no route always runs just after the PUTs (whose deleted
    blobs and fsynced files the disk is still busy with). With a baseline route, it and the tree's
    endpoint swap places in the PUTs every other round."""
    put_routes, get_routes = (*routes, limits[0]), (*routes, *limits)
    results = {("PUT", r.name): LargeResult("PUT", r.name) for r in put_routes}
    results.update({("GET", r.name): LargeResult("GET", r.name) for r in get_routes})
    buffer = new_buffer()
    for number in range(1, repeat + 1):
        print(f"large objects: round {number}/{repeat} ...", file=sys.stderr)
        for route in alternate(put_routes, number - 1, (TREE_ROUTE, ROUTE)):
            transfer, cpu = put_large(route, "large", path, size, md5)
            results["PUT", route.name].add(transfer, cpu)
        start = (number - 1) % len(get_routes)
        for route in (*get_routes[start:], *get_routes[:start]):
            transfer, cpu = get_large(route, "large", size, buffer)
            results["GET", route.name].add(transfer, cpu)
    return list(results.values())


def measure_big(
    route: Route, walrus_pids: list[int], workdir: Path, delete: Callable[[str], None]
) -> dict[str, Any]:
    """A 5 GiB PUT and GET through `route`, sampling Walrus's RSS; skipped without 12 GiB free."""
    free = shutil.disk_usage(workdir).free
    if free < BIG_FREE_NEEDED:
        message = f"skipped: {free / 1024**3:.1f} GiB free in {workdir}, need {BIG_FREE_NEEDED // 1024**3}"
        print(f"--big {message}", file=sys.stderr)
        return {"skipped": message}
    path = workdir / "big.bin"
    print("--big: writing a 5 GiB file ...", file=sys.stderr)
    md5 = make_file(path, BIG_SIZE)
    try:
        print("--big: 5 GiB PUT and GET ...", file=sys.stderr)
        with RssSampler(walrus_pids) as put_rss:
            put, _ = put_large(route, "big", path, BIG_SIZE, md5)
        with RssSampler(walrus_pids) as get_rss:
            got, _ = get_large(route, "big", BIG_SIZE, new_buffer())
    finally:
        path.unlink(missing_ok=True)
        delete("big")
    return {
        "put_mib_per_s": round(put.mb_per_s, 1),
        "get_mib_per_s": round(got.mb_per_s, 1),
        "put_peak_rss_mib": round(put_rss.peak_mib, 1),
        "get_peak_rss_mib": round(get_rss.peak_mib, 1),
        "put_peak_total_rss_mib": round(put_rss.peak_total_mib, 1),
        "get_peak_total_rss_mib": round(get_rss.peak_total_mib, 1),
    }


# ---------------------------------------------------------------------------------------------
# Small objects


def small_requests(target: Target, keys: int) -> dict[str, SignedRequest]:
    """PutObject of a 4 KiB body to `keys` distinct keys in turn (presigned URLs: moto's server
    fails concurrent PUTs to one key), and GetObject of one fixed 4 KiB object (header-signed);
    in the SSE-S3 bucket for the SSE target."""
    bucket = SSE_BUCKET if target.name == SSE_TARGET else BUCKET
    body = ("0123456789abcdef" * (SMALL_SIZE // 16))[:SMALL_SIZE]
    urls = [presign_s3(target, "PUT", f"/{bucket}/{SMALL_PUT_PREFIX}{i:05d}") for i in range(keys)]
    base = target.endpoint.rstrip("/")
    paths = tuple(url[len(base) :] for url in urls)
    put = SignedRequest(urls[0], {"Host": f"{LOOPBACK}:{target.port}"}, body, "PUT", paths)
    return {"PutObject": put, "GetObject": sign_s3(target, "GET", f"/{bucket}/{SMALL_GET_KEY}")}


def check_once(request: SignedRequest) -> None:
    """The signed request must answer 200 before it is replayed (and a GET the whole 4 KiB)."""
    data = request.body.encode() if request.method == "PUT" else None
    req = urllib.request.Request(request.url, data=data, headers=request.headers, method=request.method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    if status != 200 or (request.method == "GET" and len(payload) != SMALL_SIZE):
        raise RuntimeError(f"{request.method} {request.url} answered {status}: {payload[:500]!r}")


def measure_small(
    targets: Sequence[Target],
    client: tuple[str, LoadGenerator],
    settings: LoadSettings,
    workdir: Path,
    pair: tuple[str, str] = (TREE_TARGET, ""),
    rounds: int = 1,
) -> tuple[list[SmallResult], list[SmallResult]]:
    """Each operation on each target in turn, `rounds` times; the two targets named in `pair` (the
    tree's and the baseline's Mallee) swap places from one operation and round to the next. Returns
    the rounds combined (in the order of `targets`), and every round's result."""
    results = []
    requests = {t.name: small_requests(t, SMALL_PUT_KEYS) for t in targets}
    for number in range(rounds):
        for turn, operation in enumerate(("PutObject", "GetObject"), number):
            for target in alternate(targets, turn, pair):
                where = f"round {number + 1}/{rounds}: " if rounds > 1 else ""
                print(f"small objects: {where}{operation} on {target.name} ...", file=sys.stderr)
                results.append(_measure_small(target, operation, requests, client, settings, workdir))
    order = [t.name for t in targets]
    groups: dict[tuple[str, str], list[SmallResult]] = {}
    for r in sorted(results, key=lambda r: (r.operation != "PutObject", order.index(r.target))):
        groups.setdefault((r.operation, r.target), []).append(r)
    return [SmallResult.combine(group) for group in groups.values()], results


def _measure_small(
    target: Target,
    operation: str,
    requests: dict[str, dict[str, SignedRequest]],
    client: tuple[str, LoadGenerator],
    settings: LoadSettings,
    workdir: Path,
) -> SmallResult:
    request = requests[target.name][operation]
    check_once(request)
    generate = client[1]
    if settings.warmup > 0:
        generate(request, settings.warmup, settings, workdir)
    cpu_before = cpu_seconds(target.root_pid)
    load = generate(request, settings.seconds, settings, workdir)
    cpu = round(100 * (cpu_seconds(target.root_pid) - cpu_before) / load.seconds, 1)
    return SmallResult(operation, target.name, load, cpu)


# ---------------------------------------------------------------------------------------------
# Servers


def _answers_s3(target: Target) -> bool:
    try:
        _s3(target).list_buckets()
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


def _s3(target: Target) -> Any:
    return boto_client("s3", target, s3={"addressing_style": "path"})


def prepare_bucket(target: Target, bucket: str = BUCKET, encrypted: bool = False) -> None:
    """The bench bucket (`encrypted`: with SSE-S3 default encryption) and the 4 KiB object the
    small GETs read, made with boto3."""
    client = _s3(target)
    if target.region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": target.region})
    if encrypted:
        rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    client.put_object(Bucket=bucket, Key=SMALL_GET_KEY, Body=b"s" * SMALL_SIZE)


def start_limit_server(procs: ProcessSet, workdir: Path, path: Path, avoid: set[int]) -> list[Route]:
    """The limit server; routes `limit` (GET: sendfile; PUT: read+MD5+write) and `limit-copy`
    (GET: read into a buffer and send)."""
    port = free_port_block(1, avoid)
    log_path = workdir / "limits.log"
    script = Path(__file__).resolve().parent / "_s3limits.py"
    cmd = [sys.executable, str(script), str(port), str(path), str(workdir)]
    proc = procs.start(cmd, dict(os.environ), log_path)
    wait_until(lambda: _port_open(port), proc, f"a listener on port {port}", log_path)
    url = f"http://{LOOPBACK}:{port}"
    return [
        Route("limit", lambda method, key: SignedRequest(f"{url}/{key}", {}, "", method), proc.pid),
        Route(
            "limit-copy", lambda method, key: SignedRequest(f"{url}/{COPY_PATH}", {}, "", method), proc.pid
        ),
    ]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="large object size in MiB (256)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="large transfers of each kind; the median counts (3)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds per small-object run (5)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each small run (1)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="small-object rounds, the targets interleaved, combined (1)"
    )
    parser.add_argument("--connections", type=int, default=16, help="small-object connections (16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--client", choices=("auto", "wrk", "python"), default="auto", help="small-object load"
    )
    parser.add_argument("--big", action="store_true", help="also a 5 GiB PUT and GET, sampling Walrus's RSS")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--check", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    parser.add_argument(
        "--baseline", metavar="REV", help="also measure Mallee at git revision REV, and compare"
    )
    args = parser.parse_args(argv)
    if args.size < 1 or args.repeat < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("need --size >= 1, --repeat >= 1, --rounds >= 1, --seconds > 0")
    if not 1 <= args.threads <= args.connections:
        parser.error("need 1 <= --threads <= --connections")
    return args


@dataclass
class Servers:
    mallee: Target
    walrus: Target  # Mallee's Walrus on its own port, past the front door (informational)
    moto: Target
    walrus_pids: list[int]
    routes: list[Route]
    limits: list[Route]
    baseline: Target | None = None  # Mallee at --baseline REV


def start_servers(
    procs: ProcessSet, workdir: Path, object_path: Path, compared: dict[str, Any] | None = None
) -> Servers:
    print("starting mallee, moto and the limit server ...", file=sys.stderr)
    # Unencrypted unless a bucket says so: the plain figures stay comparable with earlier runs and
    # with the baseline, and SSE_BUCKET gives the encrypted ones in the same run.
    plain = {"MALLEE_WALRUS_DEFAULT_ENCRYPTION": "false"}
    mallee = start_mallee(procs, workdir, set(), _answers_s3, "ListBuckets answer", extra_env=plain)
    moto = start_moto(procs, workdir, mallee_ports(mallee), _answers_s3, "ListBuckets answer")
    limits = start_limit_server(procs, workdir, object_path, mallee_ports(mallee) | {moto.port})
    walrus = f"http://{LOOPBACK}:{mallee.port + WALRUS_OFFSET}"
    routes = [
        Route("endpoint", lambda m, k: sign_s3(mallee, m, f"/{BUCKET}/{k}"), mallee.root_pid),
        Route("walrus", lambda m, k: sign_s3(mallee, m, f"/{BUCKET}/{k}", walrus), mallee.root_pid),
        Route(SSE_ROUTE, lambda m, k: sign_s3(mallee, m, f"/{SSE_BUCKET}/{k}"), mallee.root_pid),
    ]
    for target in (mallee, moto):
        prepare_bucket(target)
    prepare_bucket(mallee, SSE_BUCKET, encrypted=True)
    direct = replace(mallee, name="walrus", endpoint=walrus)
    servers = Servers(mallee, direct, moto, walrus_pids(workdir / "mallee.log"), routes, limits)
    if compared is not None:
        avoid = mallee_ports(mallee) | {moto.port}  # the limit server's port is bound: not free
        base = start_baseline(procs, workdir, compared, avoid, _answers_s3, "ListBuckets answer", plain)
        prepare_bucket(base)
        route = Route(ROUTE, lambda m, k: sign_s3(base, m, f"/{BUCKET}/{k}"), base.root_pid)
        servers.routes.insert(1, route)
        try:  # the encrypted figures too, when the revision has encryption
            prepare_bucket(base, SSE_BUCKET, encrypted=True)
        except botocore.exceptions.ClientError:
            print(f"{base.name} has no bucket encryption: no SSE-S3 comparison", file=sys.stderr)
        else:
            sse = Route(
                SSE_BASELINE_ROUTE, lambda m, k: sign_s3(base, m, f"/{SSE_BUCKET}/{k}"), base.root_pid
            )
            servers.routes.insert(3, sse)
        servers.baseline = base
    return servers


def _limits(large: Sequence[LargeResult]) -> dict[str, float]:
    """The loopback limit is the better of sendfile and read+send (sendfile is not always faster)."""
    by = {(r.operation, r.route): r.median for r in large}
    return {
        "loopback_mib_per_s": max(by["GET", "limit"], by["GET", "limit-copy"]),
        "loopback_sendfile_mib_per_s": by["GET", "limit"],
        "loopback_copy_mib_per_s": by["GET", "limit-copy"],
        "store_mib_per_s": by["PUT", "limit"],
    }


Outcome = tuple[dict[str, Any], list[LargeResult], list[SmallResult], list[Verdict]]


def run(args: argparse.Namespace, workdir: Path, procs: ProcessSet) -> Outcome:
    machine = machine_facts()  # before our own servers add to the load average
    compared = describe(args.baseline) if args.baseline else None  # fails early on a bad REV
    client = choose_client(args.client)
    settings = LoadSettings(args.seconds, args.warmup, args.connections, args.threads)
    size = args.size * MIB
    object_path = workdir / "object.bin"
    md5 = make_file(object_path, size)
    servers = start_servers(procs, workdir, object_path, compared)
    mem_start = [memory(pid) for pid in servers.walrus_pids]
    with RssSampler(servers.walrus_pids) as sampler:
        large = measure_large(servers.routes, servers.limits, object_path, size, md5, args.repeat)
    sse = replace(servers.mallee, name=SSE_TARGET)
    targets: tuple[Target, ...] = (servers.mallee, sse, servers.walrus, servers.moto)
    pair = (TREE_TARGET, "")
    if servers.baseline is not None:
        targets = (servers.mallee, servers.baseline, sse, servers.walrus, servers.moto)
        pair = (TREE_TARGET, servers.baseline.name)
    small, small_rounds = measure_small(targets, client, settings, workdir, pair, args.rounds)
    delete = lambda key: _s3(servers.mallee).delete_object(Bucket=BUCKET, Key=key)  # noqa: E731
    big = measure_big(servers.routes[0], servers.walrus_pids, workdir, delete) if args.big else None
    report: dict[str, Any] = {
        "machine": machine,
        "versions": {
            "mallee": mallee_version(),
            "moto": dist_version("moto"),
            "botocore": botocore.__version__,
            "loadgen": loadgen_version(client[0]),
        },
        "settings": {**asdict(settings), "client": client[0], "size_mib": args.size, "repeat": args.repeat},
        "limits": {**_limits(large), "md5_mib_per_s": round(md5_rate(), 1)},
        "memory": {
            "walrus_pids": servers.walrus_pids,
            "start": mem_start,
            "end": [memory(pid) for pid in servers.walrus_pids],
            "large_peak_rss_mib": round(sampler.peak_mib, 1),
            "large_peak_total_rss_mib": round(sampler.peak_total_mib, 1),
        },
        "large": [r.row() for r in large],
        "small": [r.row() for r in small],
        "big": big,
    }
    if args.rounds > 1:  # (absent otherwise, as before --rounds)
        report["settings"]["rounds"] = args.rounds
        report["small_rounds"] = [r.row() for r in small_rounds]
    if compared is not None:
        report["versions"]["baseline"] = f"{compared['name']} (git {compared['commit'][:7]})"
        report["baseline"] = compared
        compared["figures"] = figures(report, SSE_ROUTE)
    found = verdicts(report, large, small)
    report["verdicts"] = [{**asdict(v), "result": v.result} for v in found]
    return report, large, small, found


def invalid_reasons(small: Sequence[SmallResult]) -> list[str]:
    problems = []
    for r in small:
        if r.load.errors:
            problems.append(
                f"{r.operation} on {r.target}: {r.load.non2xx} non-2xx, {r.load.socket_errors} socket "
                f"errors, {r.load.timeouts} timeouts"
            )
        elif r.load.requests == 0:
            problems.append(f"{r.operation} on {r.target}: no request completed")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_signals()
    procs = ProcessSet()
    with workspace(args.keep) as workdir:
        try:
            report, large, small, found = run(args, workdir, procs)
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        except (RuntimeError, OSError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
        finally:
            procs.stop_all()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, large, small, found)
    problems = invalid_reasons(small)
    for problem in problems:
        print(f"ERROR: {problem}: these figures are not valid", file=sys.stderr)
    if problems:
        return 1
    return 3 if args.check and any(v.met is False for v in found) else 0


if __name__ == "__main__":
    sys.exit(main())
