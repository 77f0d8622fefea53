"""Walrus under concurrent requests to one key: readers and copies during overwrites always get
one whole body (a replaced version's blob is deleted while they may still be on their way to it),
and concurrent writers end with exactly one of their bodies."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.config import Config as BotoConfig

from support.cloud import Cloud, Keys

SECONDS = 3.0
# No retries: botocore would otherwise hide a failed read or copy by sending it again.
ONCE = BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)


def overwrite(
    cloud: Cloud, account: Keys, bucket: str, key: str, bodies: list[bytes], stop: threading.Event, n: int
) -> int:
    """PUT `bodies` to `key` in turn (writer `n` starting at its own) until `stop`; how many."""
    client, count = cloud.client("s3", account), 0
    while not stop.is_set():
        client.put_object(Bucket=bucket, Key=key, Body=bodies[(n + count) % len(bodies)])
        count += 1
    return count


@pytest.mark.parametrize("size", [1024, 200 * 1024])  # sent whole / streamed from the file
def test_reads_during_overwrites_get_one_whole_body(cloud: Cloud, account: Keys, size: int) -> None:
    s3 = cloud.client("s3", account)
    bucket = f"race-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    bodies = [bytes([i]) * size for i in range(8)]
    s3.put_object(Bucket=bucket, Key="hot", Body=bodies[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def read(_: int) -> int:
        client, count = cloud.client("s3", account, config=ONCE), 0
        while not stop.is_set():
            seen.append(client.get_object(Bucket=bucket, Key="hot")["Body"].read())
            count += 1
        return count

    with ThreadPoolExecutor(8) as pool:
        writers = [pool.submit(overwrite, cloud, account, bucket, "hot", bodies, stop, n) for n in range(4)]
        futures = writers + [pool.submit(read, n) for n in range(4)]
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


def test_copies_of_a_key_being_overwritten_copy_one_whole_body(cloud: Cloud, account: Keys) -> None:
    s3 = cloud.client("s3", account)
    bucket = f"race-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    bodies = [bytes([i]) * (200 * 1024) for i in range(4)]
    s3.put_object(Bucket=bucket, Key="src", Body=bodies[0])
    stop = threading.Event()

    def copy(n: int) -> list[str]:
        client, keys = cloud.client("s3", account, config=ONCE), []
        while not stop.is_set():
            key = f"copy-{n}-{len(keys)}"
            client.copy_object(Bucket=bucket, Key=key, CopySource=f"{bucket}/src")
            keys.append(key)
        return keys

    with ThreadPoolExecutor(6) as pool:
        writers = [pool.submit(overwrite, cloud, account, bucket, "src", bodies, stop, n) for n in range(3)]
        copiers = [pool.submit(copy, n) for n in range(3)]
        time.sleep(SECONDS)
        stop.set()
        assert min(f.result() for f in writers) > 0
        copied = [key for f in copiers for key in f.result()]  # a failed copy raises here
    assert copied
    for key in copied[:: max(1, len(copied) // 20)]:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() in bodies
