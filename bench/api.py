"""API benchmark: requests/s and p99 latency of EC2 DescribeRegions and DescribeInstanceTypes on
Mallee and on moto's server, measured in the same run, with the ratios between them.

Both servers run on loopback for the whole run: Mallee as `python -m mallee.supervisor up` (five
processes, the public endpoint on the base port) and moto as `python -m moto.server`. Each
operation is signed once per server with botocore's SigV4 (a header signature stays valid for
minutes) and replayed by `wrk` through bench/_load.lua; without wrk a Python asyncio keep-alive
client does the same, less accurately. Every response must be a 2xx: any error makes the run exit 1.

By default each request asks both servers for the same items, so they do equal work: DescribeRegions
names the server's own region and DescribeInstanceTypes names the instance types both catalogues
hold (moto knows 1,395 types and 38 regions, Mallee 18 types and one region). `--workload bare` sends
the requests with no parameters instead.

    .venv/bin/python bench/api.py [--seconds 8] [--connections 16] [--rounds 1] [--json]

With --rounds N every measurement is repeated N times, interleaved between the servers, and the
rounds are combined (overall req/s, median p99): worth it on a noisy virtual machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from configparser import ConfigParser
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode, urlsplit

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "_load.lua"
EC2_API_VERSION = "2016-11-15"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
LOOPBACK = "127.0.0.1"
MALLEE_PORTS = 5  # the supervisor uses base .. base+4
STARTUP_TIMEOUT = 90.0
STOP_GRACE = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Target:
    """A running server under test and how to sign requests for it."""

    name: str
    endpoint: str
    region: str
    access_key: str
    secret_key: str
    root_pid: int


@dataclass(frozen=True)
class SignedRequest:
    """One HTTP request, signed once and replayed as is."""

    url: str
    headers: dict[str, str]
    body: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or LOOPBACK

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    def wire_bytes(self) -> bytes:
        body = self.body.encode()
        lines = [f"POST {self.path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode() + body


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
class LoadResult:
    """What one load-generator run measured (latencies in milliseconds)."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    loadgen_cpu_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors + self.timeouts


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
# Processes: everything started here is stopped here, by pid.


class ProcessSet:
    """Child processes started in their own sessions, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(cmd),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_DIR,
                start_new_session=True,
            )
        self._started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self._started):
            _stop_tree(proc)
        self._started.clear()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, read from /proc."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _process_group(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM `proc` (a supervisor stops its own children), then SIGKILL whatever of its tree is left."""
    descendants = process_tree(proc.pid)[1:]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in descendants:
        if _process_group(pid) == proc.pid:  # still alive and still ours
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process tree so far."""
    total = 0
    for pid in process_tree(root_pid):
        try:
            fields_after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields_after_name[11]) + int(fields_after_name[12])  # utime, stime
    return total / CLK_TCK


# ---------------------------------------------------------------------------------------------
# Starting the servers


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, avoid: set[int] | None = None) -> int:
    """A base port such that base .. base+count-1 are all free on loopback."""
    avoid = avoid or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            base = int(sock.getsockname()[1])
        ports = range(base, base + count)
        if base + count < 65536 and not avoid & set(ports) and all(_port_free(p) for p in ports):
            return base
    raise RuntimeError("no block of free ports found")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _ec2_client(target: Target) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=target.endpoint,
        region_name=target.region,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    """Poll `ready` until it is true; fail if the process exits or STARTUP_TIMEOUT passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before {what}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {STARTUP_TIMEOUT:.0f}s:\n{_tail(log_path)}")
        time.sleep(0.2)


def _answers_describe_regions(target: Target) -> bool:
    try:
        _ec2_client(target).describe_regions()
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_mallee_profile(aws_dir: Path) -> tuple[str, str, str, str]:
    """endpoint_url, region, access key and secret key of the `mallee` profile the supervisor wrote."""
    config, creds = ConfigParser(), ConfigParser()
    config.read(aws_dir / "config")
    creds.read(aws_dir / "credentials")
    profile, keys = config["profile mallee"], creds["mallee"]
    return (
        profile["endpoint_url"],
        profile["region"],
        keys["aws_access_key_id"],
        keys["aws_secret_access_key"],
    )


def start_mallee(procs: ProcessSet, workdir: Path, avoid: set[int]) -> Target:
    """`python -m mallee.supervisor up` on a fresh data dir; ready when /healthz and EC2 answer."""
    base = free_port_block(MALLEE_PORTS, avoid)
    aws_dir = workdir / "mallee-aws"
    env = dict(os.environ)
    env.update(
        MALLEE_DATA_DIR=str(workdir / "mallee-data"),
        MALLEE_PORT_BASE=str(base),
        AWS_CONFIG_FILE=str(aws_dir / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(aws_dir / "credentials"),
    )
    log_path = workdir / "mallee.log"
    proc = procs.start([sys.executable, "-m", "mallee.supervisor", "up"], env, log_path)
    health = f"http://{LOOPBACK}:{base}/healthz"
    # The supervisor writes the aws profile before it starts the services, so once /healthz answers
    # the profile is complete.
    _wait_until(lambda: _http_ok(health), proc, f"200 from {health}", log_path)
    endpoint, region, access_key, secret_key = _read_mallee_profile(aws_dir)
    target = Target("mallee", endpoint, region, access_key, secret_key, proc.pid)
    _wait_until(
        lambda: _answers_describe_regions(target), proc, "DescribeRegions answer from mallee", log_path
    )
    return target


def start_moto(procs: ProcessSet, workdir: Path, avoid: set[int]) -> Target:
    """moto's server on one free port; ready when DescribeRegions answers."""
    port = free_port_block(1, avoid)
    log_path = workdir / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    proc = procs.start(cmd, dict(os.environ), log_path)
    target = Target("moto", f"http://{LOOPBACK}:{port}", "us-east-1", "bench", "bench", proc.pid)
    _wait_until(lambda: _answers_describe_regions(target), proc, "DescribeRegions answer from moto", log_path)
    return target


# ---------------------------------------------------------------------------------------------
# Requests


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


def list_instance_types(target: Target) -> set[str]:
    paginator = _ec2_client(target).get_paginator("describe_instance_types")
    return {t["InstanceType"] for page in paginator.paginate() for t in page["InstanceTypes"]}


def build_operations(workload: str, targets: Sequence[Target]) -> list[Operation]:
    """The two operations; for the 'matched' workload, parameterised so all targets return the same items."""
    if workload == "bare":
        return [
            Operation("DescribeRegions", "regionName", lambda t: {"Action": "DescribeRegions"}),
            Operation("DescribeInstanceTypes", "instanceType", lambda t: {"Action": "DescribeInstanceTypes"}),
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
    ]


# ---------------------------------------------------------------------------------------------
# Load generators


@dataclass(frozen=True)
class LoadSettings:
    seconds: float
    warmup: float
    connections: int
    threads: int


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk\s+(\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(request: SignedRequest, seconds: float, settings: LoadSettings, workdir: Path) -> LoadResult:
    """One wrk run replaying `request`; parsed from the BENCH_RESULT line _load.lua prints."""
    request_file = workdir / "request.txt"
    header_lines = "".join(f"{name}: {value}\n" for name, value in request.headers.items())
    request_file.write_text(f"POST\n{request.path}\n{header_lines}\n{request.body}")
    whole_seconds = max(1, round(seconds))  # wrk takes whole seconds only
    cmd = [
        "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{whole_seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        request.url,
    ]
    env = {**os.environ, "BENCH_REQUEST_FILE": str(request_file)}
    cpu_before = _children_cpu()
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=whole_seconds + 30, check=False
    )
    cpu_used = _children_cpu() - cpu_before
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        non2xx=raw["non2xx"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
        timeouts=raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        loadgen_cpu_seconds=cpu_used,
    )


@dataclass
class _PyStats:
    latencies: list[float] = field(default_factory=list)
    non2xx: int = 0
    socket_errors: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; (status, whether the connection stays open)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    version, status = status_line.split(" ", 2)[:2]
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        await _read_chunked(reader)
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    keep_alive = headers.get("connection") != "close" and version == "HTTP/1.1"
    return int(status), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


async def _py_connection(request: SignedRequest, deadline: float, stats: _PyStats) -> None:
    payload = request.wire_bytes()
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection(request.host, request.port)
            started = time.perf_counter()
            try:
                writer.write(payload)
                status, keep_alive = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                stats.socket_errors += 1
                writer.close()
                writer = None
                continue
            stats.latencies.append(time.perf_counter() - started)
            stats.non2xx += not 200 <= status < 300
            if not keep_alive:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)]


async def _py_load(request: SignedRequest, seconds: float, connections: int) -> tuple[_PyStats, float]:
    stats = _PyStats()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_py_connection(request, deadline, stats) for _ in range(connections)))
    return stats, time.perf_counter() - started


def run_python(request: SignedRequest, seconds: float, settings: LoadSettings, workdir: Path) -> LoadResult:
    """The fallback load generator: `connections` keep-alive connections in one asyncio loop."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    stats, elapsed = _new_event_loop_run(_py_load(request, seconds, settings.connections))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    latencies = sorted(stats.latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        non2xx=stats.non2xx,
        socket_errors=stats.socket_errors,
        timeouts=0,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        loadgen_cpu_seconds=usage.ru_utime + usage.ru_stime - cpu_before,
    )


def _new_event_loop_run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


LoadGenerator = Callable[[SignedRequest, float, LoadSettings, Path], LoadResult]


def choose_client(name: str) -> tuple[str, LoadGenerator]:
    """wrk if asked for or found; else the Python client, saying why."""
    has_wrk = shutil.which("wrk") is not None
    if name == "wrk" and not has_wrk:
        raise SystemExit(
            "wrk not found: install it with `apt-get install -y wrk` (Debian), or use --client python"
        )
    if name == "python" or not has_wrk:
        if name == "auto":
            print(
                "note: wrk not found (`apt-get install -y wrk`); using the slower Python client, "
                "whose own CPU use competes with the servers",
                file=sys.stderr,
            )
        return "python", run_python
    return "wrk", run_wrk


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
    load = LoadResult(
        requests=sum(x.requests for x in loads),
        seconds=sum(x.seconds for x in loads),
        non2xx=sum(x.non2xx for x in loads),
        socket_errors=sum(x.socket_errors for x in loads),
        timeouts=sum(x.timeouts for x in loads),
        p50_ms=statistics.median(x.p50_ms for x in loads),
        p99_ms=statistics.median(x.p99_ms for x in loads),
        max_ms=max(x.max_ms for x in loads),
        loadgen_cpu_seconds=sum(x.loadgen_cpu_seconds for x in loads),
    )
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


def ratios(results: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Per operation: Mallee/moto throughput and moto/Mallee p99 (above 1 means Mallee is better);
    None where a side measured nothing."""
    out = []
    for op in dict.fromkeys(m.operation for m in results):
        by_target = {m.target: m.load for m in results if m.operation == op}
        mallee, moto = by_target["mallee"], by_target["moto"]
        out.append(
            {
                "operation": op,
                "throughput": round(mallee.rps / moto.rps, 2) if moto.rps else None,
                "p99": round(moto.p99_ms / mallee.p99_ms, 2) if mallee.p99_ms and moto.requests else None,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Facts and report


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def versions(client_name: str) -> dict[str, str]:
    return {
        "mallee": f"{_dist_version('mallee')} (git {_git_revision()})",
        "moto": _dist_version("moto"),
        "botocore": botocore.__version__,
        "loadgen": f"wrk {_wrk_version()}" if client_name == "wrk" else "python asyncio client",
    }


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"x{value:.2f}"


def _fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def print_report(report: dict[str, Any], results: Sequence[Measurement]) -> None:
    machine, vers, settings = report["machine"], report["versions"], report["settings"]
    print(
        f"machine:  nproc {machine['nproc']} ({machine['cpu_model']}), {machine['platform']}, "
        f"Python {machine['python']}, load average {machine['loadavg_1min']} (1 min)"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    print(
        f"load:     {settings['client']}, {settings['connections']} connections, "
        f"{settings['threads']} threads, {settings['warmup']} s warm-up + {settings['seconds']} s "
        f"per measurement, {settings['rounds']} round(s), workload '{settings['workload']}'"
    )
    print()
    header = (
        f"{'operation':<22} {'target':<7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>6} {'items':>5} {'bytes':>7} {'srv CPU':>8} {'gen CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    for m in results:
        load = m.load
        print(
            f"{m.operation:<22} {m.target:<7} {_fmt_rps(load.rps):>8} "
            f"{load.p50_ms:>8.2f} {load.p99_ms:>8.2f} "
            f"{load.max_ms:>8.1f} {load.errors:>6} {m.items:>5} {m.response_bytes:>7} "
            f"{m.server_cpu_pct:>7.0f}% {m.loadgen_cpu_pct:>7.0f}%"
        )
    print()
    for ratio in report["ratios"]:
        by_target = {m.target: m.load for m in results if m.operation == ratio["operation"]}
        mallee, moto = by_target["mallee"], by_target["moto"]
        print(
            f"{ratio['operation']:<22} mallee {_fmt_rps(mallee.rps)} req/s p99 {mallee.p99_ms:.1f} ms | "
            f"moto {_fmt_rps(moto.rps)} req/s p99 {moto.p99_ms:.1f} ms | "
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


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mallee-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run(
    args: argparse.Namespace, workdir: Path, procs: ProcessSet
) -> tuple[dict[str, Any], list[Measurement]]:
    machine = machine_facts()  # before our own servers add to the load average
    client = choose_client(args.client)
    settings = LoadSettings(args.seconds, args.warmup, args.connections, args.threads)
    print("starting mallee and moto ...", file=sys.stderr)
    mallee = start_mallee(procs, workdir, avoid=set())
    mallee_base = urlsplit(mallee.endpoint).port or 0
    moto = start_moto(procs, workdir, avoid=set(range(mallee_base, mallee_base + MALLEE_PORTS)))
    targets = (mallee, moto)
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
        "ratios": ratios(results),
        "rounds": [m.row() for m in rounds] if args.rounds > 1 else [],
    }
    return report, results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGINT, _raise_on_signal)  # even where a shell started us with SIGINT ignored
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
