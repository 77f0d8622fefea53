"""Walrus runs as two worker processes sharing its port, database and object store: the front door
hands new connections to them in turn, and what one worker commits the other serves at once."""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

from support.cloud import Cloud, Keys


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def fresh(cloud: Cloud, account: Keys) -> Any:
    """A client of its own: its first request opens a new connection, which may go to either worker."""
    return cloud.client("s3", account)


def test_both_workers_serve_the_endpoint(cloud: Cloud, account: Keys) -> None:
    pids = cloud.service_pids("walrus")
    assert len(pids) == 2
    bucket = f"workers-{secrets.token_hex(4)}"
    fresh(cloud, account).create_bucket(Bucket=bucket)
    before = {pid: cpu_ticks(pid) for pid in pids}
    for n in range(30):
        client = fresh(cloud, account)
        for i in range(10):
            client.put_object(Bucket=bucket, Key=f"k{n}-{i}", Body=b"x" * 100)
    assert all(cpu_ticks(pid) > before[pid] for pid in pids), "one worker served nothing"


def test_a_bucket_change_is_seen_at_once_by_every_worker(cloud: Cloud, account: Keys) -> None:
    bucket = f"workers-{secrets.token_hex(4)}"
    fresh(cloud, account).create_bucket(Bucket=bucket, ObjectOwnership="ObjectWriter")  # ACLs on
    for n in range(6):  # both workers now have the bucket in their cache
        fresh(cloud, account).put_object(Bucket=bucket, Key=f"warm{n}", Body=b"w")
    fresh(cloud, account).put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for n in range(6):  # each worker must know at once that the bucket is versioned
        answer = fresh(cloud, account).put_object(Bucket=bucket, Key="k", Body=str(n).encode())
        assert answer.get("VersionId", "null") != "null", f"PUT {n} did not see versioning enabled"
    versions = fresh(cloud, account).list_object_versions(Bucket=bucket, Prefix="k")["Versions"]
    assert len(versions) == 6 and sum(v["IsLatest"] for v in versions) == 1
    other = cloud.new_account()
    fresh(cloud, account).put_bucket_acl(Bucket=bucket, GrantRead=f'id="{other.account_id}"')
    for _ in range(6):
        assert "Contents" in fresh(cloud, other).list_objects_v2(Bucket=bucket)


def test_a_killed_worker_costs_no_request(cloud: Cloud, account: Keys) -> None:
    """While one worker is dead, new connections go to the other (the front door skips a worker
    whose hand-off socket is gone; the kernel no longer offers the dead one's listener), and the
    supervisor starts it again."""
    bucket = f"workers-{secrets.token_hex(4)}"
    fresh(cloud, account).create_bucket(Bucket=bucket)
    pids = cloud.service_pids("walrus")
    victim = pids[-1]
    os.kill(victim, signal.SIGKILL)
    while Path(f"/proc/{victim}").exists() and Path(f"/proc/{victim}/stat").read_text().split()[2] != "Z":
        time.sleep(0.01)  # dead (a zombie until the supervisor reaps it)
    for n in range(20):  # fresh connections: half would have gone to the dead worker
        fresh(cloud, account).put_object(Bucket=bucket, Key=f"k{n}", Body=b"x")
    assert len(fresh(cloud, account).list_objects_v2(Bucket=bucket)["Contents"]) == 20
    deadline = time.monotonic() + 30
    while victim in cloud.service_pids("walrus") or len(cloud.service_pids("walrus")) < 2:
        assert time.monotonic() < deadline, "the worker was not restarted"
        time.sleep(0.1)
