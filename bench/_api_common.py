"""What bench/api.py's EC2 rows and its identity rows (_api_identity.py) share: a request signed and
sent once to check it, a measured case and its results, the ratios between servers, and a small image
to launch instances from."""

from __future__ import annotations

import http.client
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import botocore.exceptions
from _harness import Target, boto_client, cpu_seconds
from _loadgen import LoadGenerator, LoadResult, LoadSettings, SignedRequest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
LAUNCH_TIMEOUT = 60.0

Check = Callable[[SignedRequest], tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Requests


def sign_query(target: Target, service: str, params: dict[str, str]) -> SignedRequest:
    """A query-protocol POST of `params` (Action and Version among them) to `target`, SigV4-signed
    for `service` with botocore. A header signature stays valid for minutes, so it can be replayed."""
    url = target.endpoint.rstrip("/") + "/"
    body = urlencode(params)
    headers = {"Host": urlsplit(url).netloc, "Content-Type": FORM_CONTENT_TYPE}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(target.access_key, target.secret_key), service, target.region).add_auth(request)
    return SignedRequest(url, {name: str(value) for name, value in request.headers.items()}, body)


def send_once(request: SignedRequest) -> tuple[int, bytes]:
    """Send `request` once, from its source address if it names one: (status, body)."""
    source = (request.source, 0) if request.source else None
    conn = http.client.HTTPConnection(request.host, request.port, timeout=10, source_address=source)
    try:
        body = request.body.encode() if request.body or request.method != "GET" else None
        conn.request(request.method, request.path, body=body, headers=request.headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def query_answer(request: SignedRequest, response_tag: str, item_tag: str) -> tuple[int, int]:
    """Send a query-protocol request once; it must answer 200 with `<response_tag`: (items, bytes),
    items being the number of `<item_tag>` elements. (moto answers an unsigned POST with a 200 S3
    ListBuckets document, so the status alone proves nothing.)"""
    status, payload = send_once(request)
    text = payload.decode(errors="replace")
    if status != 200 or f"<{response_tag}" not in text:
        raise RuntimeError(f"{response_tag} expected from {request.url}, got {status}: {text[:500]}")
    return text.count(f"<{item_tag}>"), len(payload)


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Case:
    """One row to measure: an operation on a target, its request (made afresh for each run of the
    load generator), how to check one answer ((items, bytes), or RuntimeError), and the load
    generator when the row needs a particular one."""

    operation: str
    target: Target
    label: str  # the target column: the server's name, or what of it the row measures
    request: Callable[[], SignedRequest]
    check: Check
    client: tuple[str, LoadGenerator] | None = None  # None: the run's


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


def measure(
    case: Case, client: tuple[str, LoadGenerator], settings: LoadSettings, workdir: Path
) -> Measurement:
    """Check one answer, warm up, then measure; the server's CPU is its whole process tree's."""
    client_name, generate = case.client or client
    items, response_bytes = case.check(case.request())
    if settings.warmup > 0:
        generate(case.request(), settings.warmup, settings, workdir)
    request = case.request()
    cpu_before = cpu_seconds(case.target.root_pid)
    load = generate(request, settings.seconds, settings, workdir)
    server_cpu = cpu_seconds(case.target.root_pid) - cpu_before
    return Measurement(
        operation=case.operation,
        target=case.label,
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
    load = LoadResult.combined([m.load for m in group])
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


def ratios(results: Sequence[Measurement], pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per operation and per (ours, theirs) pair of targets both measured: ours/theirs throughput and
    theirs/ours p99 (above 1 means ours is better); None where a side measured nothing."""
    out = []
    for op in dict.fromkeys(m.operation for m in results):
        by_target = {m.target: m.load for m in results if m.operation == op}
        for ours, theirs in pairs:
            if ours not in by_target or theirs not in by_target:
                continue
            mine, them = by_target[ours], by_target[theirs]
            out.append(
                {
                    "operation": op,
                    "target": ours,
                    "against": theirs,
                    "throughput": round(mine.rps / them.rps, 2) if them.rps else None,
                    "p99": round(them.p99_ms / mine.p99_ms, 2) if mine.p99_ms and them.requests else None,
                }
            )
    return out


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


# ---------------------------------------------------------------------------------------------
# Instances


def register_image(target: Target, bucket: str) -> str:
    """A small kernel and machine image registered on Mallee from `bucket` (made here): its id."""
    s3, ec2 = boto_client("s3", target), boto_client("ec2", target)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while True:  # Walrus may still be starting when the public endpoint already answers EC2
        try:
            s3.create_bucket(Bucket=bucket)
            break
        except botocore.exceptions.ClientError as error:
            if "ServiceUnavailable" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    s3.put_object(Bucket=bucket, Key="vmlinux", Body=b"\x7fELF" + b"\0" * 4092)
    s3.put_object(Bucket=bucket, Key="rootfs.img", Body=b"\0" * 65536)
    kernel = ec2.register_image(Name="bench-k", ImageLocation=f"{bucket}/vmlinux")["ImageId"]
    image: str = ec2.register_image(Name="bench-m", ImageLocation=f"{bucket}/rootfs.img", KernelId=kernel)[
        "ImageId"
    ]
    return image


def run_instances(ec2: Any, deadline: float, **params: Any) -> list[str]:
    """RunInstances, asked again while the zone has no capacity yet (a new cloud's zone has none
    until its cluster has heard from its node): the new instances' ids."""
    while True:
        try:
            return [i["InstanceId"] for i in ec2.run_instances(**params)["Instances"]]
        except botocore.exceptions.ClientError as error:
            if "InsufficientInstanceCapacity" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_running(ec2: Any, instance_ids: Sequence[str], deadline: float, what: str) -> list[dict[str, Any]]:
    """The instances once DescribeInstances shows every one of them running (by `deadline`)."""
    while time.monotonic() < deadline:
        reservations = ec2.describe_instances(InstanceIds=list(instance_ids))["Reservations"]
        instances = [i for r in reservations for i in r["Instances"]]
        if len(instances) == len(instance_ids) and {i["State"]["Name"] for i in instances} == {"running"}:
            return instances
        time.sleep(0.2)
    raise RuntimeError(f"{what}: {len(instance_ids)} instance(s) not running in time")
