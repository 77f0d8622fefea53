"""Observability of a running cloud: every service's Prometheus page (`GET /metrics`) and what it
counts, the bucket named "metrics" still S3's for signed calls, `mallee status`, and a quiet log."""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from functional.test_ec2_instances import register_tiny_image, wait_state
from mallee.core.config import PORT_OFFSETS
from support.cloud import BOTO, Cloud, Keys, start_cloud, stop_cloud

SERVICES = ("clc", "walrus", "cc", "sc", "nc")


class Page:
    """One scrape of a metrics page, parsed as Prometheus parses it."""

    def __init__(self, text: str) -> None:
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when there are none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


def scrape(cloud: Cloud, port: int) -> Page:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Page(response.read().decode())


def port(cloud: Cloud, service: str) -> int:
    return cloud.port_base + PORT_OFFSETS[service]


def test_every_service_answers_metrics_on_its_own_port_and_the_endpoint_is_the_clcs(cloud: Cloud) -> None:
    for service in SERVICES:
        page = scrape(cloud, port(cloud, service))
        assert page.value("mallee_service_info", service=service) == 1, service
    assert scrape(cloud, cloud.port_base).value("mallee_service_info", service="clc") == 1


def test_api_requests_are_counted_by_action_and_status(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    ok = {"service": "ec2", "action": "DescribeRegions", "status": "200"}
    refused = {"service": "ec2", "action": "DescribeInstances", "status": "400"}
    before = scrape(cloud, cloud.port_base)
    ec2.describe_regions()
    with pytest.raises(ClientError):
        ec2.describe_instances(InstanceIds=["i-not-an-id"])  # InvalidInstanceID.Malformed
    after = scrape(cloud, cloud.port_base)
    assert (
        after.value("mallee_api_requests_total", **ok) == before.value("mallee_api_requests_total", **ok) + 1
    )
    assert after.value("mallee_api_requests_total", **refused) == (
        before.value("mallee_api_requests_total", **refused) + 1
    )
    latency = {"service": "ec2", "action": "DescribeRegions"}
    assert after.value("mallee_api_request_seconds_count", **latency) == (
        before.value("mallee_api_request_seconds_count", **latency) + 1
    )


def test_walrus_counts_every_workers_requests_and_what_it_stores(cloud: Cloud, account: Keys) -> None:
    """Each PutObject comes on a connection of its own, which the front door hands to the workers in
    turn: any worker's page shows all of them, and the objects and bytes stored."""
    walrus = port(cloud, "walrus")
    bucket = f"obs-{secrets.token_hex(4)}"
    cloud.client("s3", account).create_bucket(Bucket=bucket)
    put = {"service": "s3", "action": "PutObject", "status": "200"}
    before = scrape(cloud, walrus)
    for n in range(6):
        cloud.client("s3", account).put_object(Bucket=bucket, Key=f"k{n}", Body=b"x" * 1000)
    pages = [scrape(cloud, walrus) for _ in range(4)]  # new connections: both workers answer
    for after in pages:
        assert (
            after.value("mallee_api_requests_total", **put)
            == before.value("mallee_api_requests_total", **put) + 6
        )
        assert after.value("mallee_walrus_objects") == before.value("mallee_walrus_objects") + 6
        assert after.value("mallee_walrus_bytes") == before.value("mallee_walrus_bytes") + 6000
        assert after.value("mallee_walrus_buckets") == before.value("mallee_walrus_buckets")


def test_instances_per_state_and_node_capacity(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    before = scrape(cloud, cloud.port_base)
    ours = {"node": f"127.0.0.1:{port(cloud, 'nc')}"}  # (a test may register it again by another name)
    node = scrape(cloud, port(cloud, "cc"))
    assert node.value("mallee_node_up", **ours) == 1
    # What the node offers: MALLEE_NODE_CORES of the test cloud (16) × the default cpu_overcommit (4.0).
    assert node.value("mallee_node_vcpus", kind="total", **ours) == 16 * 4
    assert node.value("mallee_node_memory_bytes", kind="total", **ours) == 16384 * 1024**2
    instance_id = ec2.run_instances(ImageId=ami, InstanceType="m1.small", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    wait_state(ec2, [instance_id], "running")
    running = scrape(cloud, cloud.port_base)
    assert running.value("mallee_instances") == before.value("mallee_instances") + 1  # every state
    assert running.value("mallee_instances", state="running") >= 1
    node = scrape(cloud, port(cloud, "cc"))
    used = node.value("mallee_node_vcpus", kind="used", **ours)
    assert used >= 1 and used + node.value("mallee_node_vcpus", kind="free", **ours) == 16 * 4
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")
    ended = scrape(cloud, cloud.port_base)
    assert (
        ended.value("mallee_instances", state="terminated")
        >= before.value("mallee_instances", state="terminated") + 1
    )


def test_a_bucket_named_metrics_is_still_s3s_for_signed_calls(cloud: Cloud) -> None:
    s3 = cloud.client("s3")  # the administrator's: a bucket name is the cloud's, once
    s3.create_bucket(Bucket="metrics")
    s3.put_object(Bucket="metrics", Key="hello.txt", Body=b"hello")
    assert [o["Key"] for o in s3.list_objects(Bucket="metrics")["Contents"]] == ["hello.txt"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="metrics")["Contents"]] == ["hello.txt"]
    assert s3.get_object(Bucket="metrics", Key="hello.txt")["Body"].read() == b"hello"
    s3.head_bucket(Bucket="metrics")
    # Unsigned, the bare path is the metrics page; with anything more it is the bucket's (private).
    assert scrape(cloud, cloud.port_base).value("mallee_service_info", service="clc") == 1
    for anonymous in ("/metrics/", "/metrics?list-type=2", "/metrics/hello.txt"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(cloud.endpoint + anonymous, timeout=10)
        assert refused.value.code == 403 and b"<Code>AccessDenied</Code>" in refused.value.read()
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "metrics", "Key": "hello.txt"})
    with urllib.request.urlopen(presigned, timeout=10) as response:
        assert response.read() == b"hello"


def test_status_shows_services_instances_nodes_and_requests(cloud: Cloud, account: Keys) -> None:
    cloud.client("ec2", account).describe_regions()
    with pytest.raises(ClientError):  # 404: the bucket does not exist
        cloud.client("s3", account).head_object(Bucket=f"none-{secrets.token_hex(4)}", Key="k")
    result = cloud.run("mallee", "status")
    assert result.returncode == 0, result.stderr
    services, instances, nodes, requests, rpc = result.stdout.strip().split("\n\n")
    header, *rows = services.splitlines()
    assert header.split()[:8] == ["TYPE", "NAME", "ZONE", "HOST", "STATE", "VERSION", "METRICS", "DETAIL"]
    assert {r.split()[0]: r.split()[6] for r in rows} == dict.fromkeys(SERVICES, "up")
    states, counts = (line.split() for line in instances.splitlines())
    assert states[0] == "INSTANCES" and "RUNNING" in states and len(counts) == len(states) - 1
    assert all(n.isdigit() for n in counts)
    header, *node_rows = nodes.splitlines()
    assert header.split()[:3] == ["NODE", "ZONE", "STATE"]
    cells = next(row.split() for row in node_rows if row.startswith(f"127.0.0.1:{port(cloud, 'nc')} "))
    assert cells[1:3] == ["mallee-1a", "up"]
    used, free = (float(n) for n in cells[3].split("/"))
    assert used + free == 16 * 4  # the node's 16 cores × the default cpu_overcommit
    counted = {line.split()[0]: line.split()[1:] for line in requests.splitlines()[1:]}
    assert int(counted["ec2"][0]) >= 1 and int(counted["s3"][0]) >= 1
    assert int(counted["s3"][1]) >= 1  # the HEAD of a bucket that does not exist: a 404
    assert rpc.startswith(("RPC_ERRORS  none", "RPC_FROM"))


# A line of a service's log: "<date> <time> <process> <LEVEL> <logger>: <message>".
LOG_LINE = re.compile(r"^\S+ \S+ (\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): ")


def test_the_log_is_quiet_by_default(cloud: Cloud) -> None:
    """One line per service started, the supervisor's few lines, then only warnings and errors:
    no Alembic, uvicorn or module detail."""
    log = cloud.log()
    started = re.findall(r"started (\w+(?: worker \d+)?) \(pid \d+\)", log)
    assert set(started) >= {"clc", "walrus worker 0", "walrus worker 1", "cc", "sc", "nc"}
    assert "Context impl" not in log and "Will assume" not in log
    assert "Application startup complete" not in log and "Uvicorn running" not in log
    details = [
        line
        for line in log.splitlines()
        if (m := LOG_LINE.match(line)) and m[2] in ("DEBUG", "INFO") and m[3] != "mallee.up"
    ]
    assert details == []


def test_verbose_logs_the_services_detail(tmp_path: Path) -> None:
    cloud = start_cloud(tmp_path, up_args=("--verbose",))
    try:
        log = cloud.log()
        assert "Context impl" in log  # Alembic, in the CLC and Walrus as they migrate
        assert re.search(r" walrus INFO uvicorn.error: Application startup complete", log)
        assert re.search(r"started walrus worker 0 \(pid \d+\)", log)
    finally:
        stop_cloud(cloud)


def test_metrics_need_no_credentials_but_say_nothing_of_accounts(cloud: Cloud) -> None:
    """A scrape is anonymous, as Prometheus's are: the page holds counts, never a key or a name."""
    keys = cloud.new_account("obs")
    cloud.client("s3", keys, config=BOTO).create_bucket(Bucket=f"obs-{secrets.token_hex(4)}")
    for service in SERVICES:
        with urllib.request.urlopen(f"http://127.0.0.1:{port(cloud, service)}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert keys.access_key_id not in text and keys.account_id not in text
