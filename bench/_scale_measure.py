"""bench/scale.py's measurements: DescribeInstances pages timed on one keep-alive connection (and
moto's whole answer over its instances, the same way), the services' memory and CPU at rest, and
one reconciliation pass of the CLC's production code, run here against the cloud's database and
cluster controller (optionally under cProfile)."""

from __future__ import annotations

import cProfile
import http.client
import io
import pstats
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _api_common import sign_query
from _harness import Target, boto_client, cpu_seconds

PAGE = 200  # MaxResults of the pages measured: moto's answer holds as many instances
EC2_API_VERSION = "2016-11-15"


@dataclass(frozen=True)
class PageCase:
    """One DescribeInstances request to time: its name, parameters, and how many pages to walk
    (following NextToken) before the page timed (-1: the last page)."""

    name: str
    params: dict[str, str]
    walk: int = 0


@dataclass(frozen=True)
class Timing:
    median_ms: float
    runs_ms: list[float]
    items: int
    response_bytes: int


def mallee_cases(zone: str, batch: int) -> list[PageCase]:
    """The pages of the scale target: unfiltered (first and last page), and by state, tag, zone and
    instance type (first page each)."""
    state = {"Filter.1.Name": "instance-state-name", "Filter.1.Value.1": "running"}
    return [
        PageCase("all, first page", {}),
        PageCase("all, last page", {}, walk=-1),
        PageCase("state=running", state),
        PageCase(
            "tag:batch (a middle batch)", {"Filter.1.Name": "tag:batch", "Filter.1.Value.1": str(batch)}
        ),
        PageCase("availability-zone", {"Filter.1.Name": "availability-zone", "Filter.1.Value.1": zone}),
        PageCase(
            "instance-type=t1.micro", {"Filter.1.Name": "instance-type", "Filter.1.Value.1": "t1.micro"}
        ),
    ]


def time_page(target: Target, case: PageCase, repeats: int, page: int | None = PAGE) -> Timing:
    """The median time of `repeats` identical requests (after one untimed), on one connection."""
    params = {"Action": "DescribeInstances", **case.params}
    if page is not None:
        params["MaxResults"] = str(page)
    token = _walk(target, params, case.walk)
    if token:
        params["NextToken"] = token
    request = sign_query(target, "ec2", {**params, "Version": EC2_API_VERSION})
    conn = http.client.HTTPConnection(request.host, request.port, timeout=300)
    runs: list[float] = []
    try:
        body = b""
        for n in range(repeats + 1):
            started = time.perf_counter()
            conn.request("POST", request.path, body=request.body.encode(), headers=request.headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200 or b"DescribeInstancesResponse" not in body:
                raise RuntimeError(f"{case.name} on {target.name}: {response.status} {body[:300]!r}")
            if n:
                runs.append(1000 * elapsed)
    finally:
        conn.close()
    return Timing(statistics.median(runs), runs, body.count(b"<instanceState>"), len(body))


def _walk(target: Target, params: dict[str, str], pages: int) -> str | None:
    """The NextToken after `pages` pages (-1: of the last page)."""
    token: str | None = None
    walked = 0
    while pages < 0 or walked < pages:
        asked = {**params, "Version": EC2_API_VERSION, **({"NextToken": token} if token else {})}
        request = sign_query(target, "ec2", asked)
        conn = http.client.HTTPConnection(request.host, request.port, timeout=300)
        try:
            conn.request("POST", request.path, body=request.body.encode(), headers=request.headers)
            text = conn.getresponse().read().decode(errors="replace")
        finally:
            conn.close()
        found = re.search(r"<nextToken>([^<]+)</nextToken>", text)
        if found is None:
            return token  # this was the last page: time it again with the token that led here
        token, walked = found[1], walked + 1
    return token


def moto_instances(moto: Target, count: int) -> None:
    """`count` instances on moto, from one of its own images."""
    ec2 = boto_client("ec2", moto)
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    left = count
    while left:
        n = min(left, 100)
        ec2.run_instances(ImageId=image_id, InstanceType="t1.micro", MinCount=n, MaxCount=n)
        left -= n


# ---------------------------------------------------------------------------------------------
# The services' memory and CPU


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_at_rest(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU use over `seconds` of doing nothing asked of it, in % of one core."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: 100 * (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


# ---------------------------------------------------------------------------------------------
# One reconciliation pass


@dataclass(frozen=True)
class PassCost:
    wall_ms: float
    cpu_ms: float
    runs_wall_ms: list[float]
    profile: str  # the top of cProfile's listing, when asked for


def reconcile_passes(database: Path, zone: str, cc: Any, passes: int, profile: bool) -> PassCost:
    """`passes` rounds of the CLC's reconciler (services/clc/reconcile.py), as the CLC runs it
    every 2 s, against the cloud's database and its cluster controller, after one untimed round
    (which sends every node its network once, so the timed ones find the nodes up to date). Run
    in this process, beside the CLC's own reconciler: at steady state both find nothing to do."""
    from mallee.db.session import Database
    from mallee.services.clc.reconcile import Reconciler

    db = Database(f"sqlite:///{database}")
    try:
        reconciler = Reconciler(db, {zone: cc})
        reconciler.run()
        walls, cpus = [], []
        for _ in range(passes):
            wall, cpu = time.perf_counter(), time.process_time()
            reconciler.run()
            walls.append(1000 * (time.perf_counter() - wall))
            cpus.append(1000 * (time.process_time() - cpu))
        listing = ""
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(reconciler.run)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            listing = out.getvalue()
    finally:
        db.dispose()
    return PassCost(statistics.median(walls), statistics.median(cpus), walls, listing)
