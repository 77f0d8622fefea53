"""Durability with multipart: SIGKILL Walrus while threads run PUTs and multipart uploads (parts and
CompleteMultipartUpload). Afterwards every acknowledged object reads back byte for byte, whatever
is listed is whole, and an upload is either still listable (and abortable) or gone: never an
object half made of its parts."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from botocore.config import Config as BotoConfig

from support.cloud import Cloud, start_cloud, stop_cloud

NO_RETRY = BotoConfig(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60)
PART = 5 * 1024 * 1024
PARTS = 3
BUCKET = "durable-mpu"


def _multipart_etag(body: bytes) -> str:
    digests = [hashlib.md5(body[i : i + PART]).digest() for i in range(0, len(body), PART)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


class Writers:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.acknowledged: dict[str, str] = {}  # key -> md5 of what the client was told is stored
        self.created: list[tuple[str, str]] = []  # (key, upload id) of every acknowledged Create
        self.unanswered: set[str] = set()  # keys whose Create failed: it may have committed all the same
        self.completed = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def put(self, n: int) -> None:
        client = self.cloud.client("s3", config=NO_RETRY)
        i = 0
        while not self.stop.is_set():
            key = f"put{n}/obj-{i}"
            body = os.urandom(128 * 1024 + 997 * i % 500_000)
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=body)
            except Exception:
                pass  # in flight when Walrus died: not acknowledged
            else:
                with self.lock:
                    self.acknowledged[key] = hashlib.md5(body).hexdigest()
            i += 1

    def multipart(self, n: int) -> None:
        client = self.cloud.client("s3", config=NO_RETRY)
        i = 0
        while not self.stop.is_set():
            key = f"mpu{n}/obj-{i}"
            i += 1
            try:
                upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
            except Exception:
                with self.lock:
                    self.unanswered.add(key)
                continue
            with self.lock:
                self.created.append((key, upload_id))
            body = os.urandom(PART * PARTS)
            try:
                parts = []
                for number in range(1, PARTS + 1):
                    chunk = body[(number - 1) * PART : number * PART]
                    etag = client.upload_part(
                        Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                    )["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
                client.complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except Exception:
                continue
            with self.lock:
                self.acknowledged[key] = hashlib.md5(body).hexdigest()
                self.completed += 1


def test_sigkill_during_puts_and_multipart_uploads(tmp_path: Path) -> None:
    cloud = start_cloud(tmp_path)
    try:
        s3: Any = cloud.client("s3", config=NO_RETRY)
        s3.create_bucket(Bucket=BUCKET)
        w = Writers(cloud)
        threads = [threading.Thread(target=w.put, args=(n,)) for n in range(3)]
        threads += [threading.Thread(target=w.multipart, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and w.completed < 4:  # some Completes went through
            time.sleep(0.1)
        time.sleep(0.7)  # ...and others are in flight
        pids = cloud.service_pids("walrus")  # every worker
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        w.stop.set()
        for t in threads:
            t.join(timeout=120)
        cloud.wait_restarted("walrus", pids, lambda: cloud.client("s3", config=NO_RETRY).list_buckets())

        assert w.completed >= 4, "no multipart upload completed before the crash; the test proves nothing"
        assert len(w.acknowledged) > 10
        for key, digest in w.acknowledged.items():
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert hashlib.md5(body).hexdigest() == digest, key

        listed: dict[str, int] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                listed[item["Key"]] = item["Size"]
        for key, size in listed.items():  # whatever is listed is whole
            head = s3.head_object(Bucket=BUCKET, Key=key)
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert len(body) == size == head["ContentLength"], key
            if key.startswith("mpu"):
                assert size == PART * PARTS, key
                assert head["ETag"] == _multipart_etag(body), key
            else:
                assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest(), key

        # Uploads: every one still open is listable with its parts and abortable; one that is not
        # open any more became a whole object (checked above) or was never finished and is gone.
        open_uploads: dict[str, str] = {}
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=BUCKET):
            for upload in page.get("Uploads", []):
                open_uploads[upload["UploadId"]] = upload["Key"]
        for key, upload_id in w.created:
            if upload_id in open_uploads:
                assert key not in w.acknowledged, f"{key}: completed yet still open"
                parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", [])
                assert all(p["Size"] == PART for p in parts), parts
                s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
            elif key in w.acknowledged:
                assert listed.get(key) == PART * PARTS
        # A Create committed just before the kill, its answer lost: the upload exists (as on S3)
        # though its client never heard of it; it must be as listable and abortable as the others.
        known = {upload_id for _, upload_id in w.created}
        for upload_id, key in open_uploads.items():
            if upload_id not in known:
                assert key in w.unanswered, f"{key}: an upload nobody asked for"
                assert s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", []) == []
                s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
        assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
        for incoming in (cloud.data_dir / "walrus").glob("incoming*"):  # one per worker
            assert list(incoming.iterdir()) == [], incoming
    finally:
        stop_cloud(cloud)
