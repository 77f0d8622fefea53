"""Walrus under concurrent requests to one key: readers during overwrites always get one whole body
(a replaced version's blob is deleted while GETs may still be on their way to it), and concurrent
writers end with exactly one of their bodies."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from support.cloud import Cloud, Keys

SECONDS = 3.0


@pytest.mark.parametrize("size", [1024, 200 * 1024])  # sent whole / streamed from the file
def test_reads_during_overwrites_get_one_whole_body(cloud: Cloud, account: Keys, size: int) -> None:
    s3 = cloud.client("s3", account)
    bucket = f"race-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    bodies = [bytes([i]) * size for i in range(8)]
    s3.put_object(Bucket=bucket, Key="hot", Body=bodies[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def write(n: int) -> int:
        client, count = cloud.client("s3", account), 0
        while not stop.is_set():
            client.put_object(Bucket=bucket, Key="hot", Body=bodies[(n + count) % len(bodies)])
            count += 1
        return count

    def read(_: int) -> int:
        client, count = cloud.client("s3", account), 0
        while not stop.is_set():
            seen.append(client.get_object(Bucket=bucket, Key="hot")["Body"].read())
            count += 1
        return count

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(write, n) for n in range(4)] + [pool.submit(read, n) for n in range(4)]
        time.sleep(SECONDS)
        stop.set()
        counts = [f.result() for f in futures]  # a failed GET or PUT raises here
    assert min(counts) > 0
    assert all(body in bodies for body in seen)


def test_concurrent_writers_to_one_key_leave_exactly_one_body(cloud: Cloud, account: Keys) -> None:
    s3: Any = cloud.client("s3", account)
    bucket = f"race-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    bodies = [secrets.token_bytes(64 * 1024) for _ in range(12)]

    def put(body: bytes) -> None:
        cloud.client("s3", account).put_object(Bucket=bucket, Key="one", Body=body)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(put, bodies))
    listing = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listing] == ["one"]
    assert s3.get_object(Bucket=bucket, Key="one")["Body"].read() in bodies
