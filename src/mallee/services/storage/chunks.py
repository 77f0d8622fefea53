"""Where snapshot bytes live: content-addressed chunks (`chunks/<sha256>`) and one manifest per
snapshot (`manifests/<snap-id>.json`), in a Walrus bucket the cloud owns (`S3ChunkStore`) or a
directory (`DirChunkStore`, for tests). A chunk's name is its digest, so writing one twice is harmless
and two snapshots with the same bytes share it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from mallee.core.files import write_atomically
from mallee.rpc.cloud import SystemCredentials

CHUNK_SIZE = 4 * 1024 * 1024

# Codes that mean our key is stale (rotated, or the CLC's database was rebuilt): ask the CLC again.
_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}


class ChunkStoreError(Exception):
    """The store failed or refused; the message says what it was asked."""


class ChunkNotFound(ChunkStoreError):
    pass


class ChunkStore(Protocol):
    def has(self, digest: str) -> bool: ...

    def put(self, digest: str, data: bytes) -> None: ...

    def get(self, digest: str) -> bytes: ...

    def delete(self, digest: str) -> None: ...

    def put_manifest(self, snapshot_id: str, data: bytes) -> None: ...

    def get_manifest(self, snapshot_id: str) -> bytes: ...

    def delete_manifest(self, snapshot_id: str) -> None: ...


def chunk_key(digest: str) -> str:
    return f"chunks/{digest}"


def manifest_key(snapshot_id: str) -> str:
    return f"manifests/{snapshot_id}.json"


class DirChunkStore:
    """Chunks and manifests as files under `path`; each written to a temporary name and renamed, so
    a crash never leaves half an object."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        for sub in ("chunks", "manifests"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def has(self, digest: str) -> bool:
        return (self.path / chunk_key(digest)).exists()

    def put(self, digest: str, data: bytes) -> None:
        self._write(chunk_key(digest), data)

    def get(self, digest: str) -> bytes:
        return self._read(chunk_key(digest))

    def delete(self, digest: str) -> None:
        (self.path / chunk_key(digest)).unlink(missing_ok=True)

    def put_manifest(self, snapshot_id: str, data: bytes) -> None:
        self._write(manifest_key(snapshot_id), data)

    def get_manifest(self, snapshot_id: str) -> bytes:
        return self._read(manifest_key(snapshot_id))

    def delete_manifest(self, snapshot_id: str) -> None:
        (self.path / manifest_key(snapshot_id)).unlink(missing_ok=True)

    def _write(self, key: str, data: bytes) -> None:
        write_atomically(self.path / key, data, 0o600)

    def _read(self, key: str) -> bytes:
        try:
            return (self.path / key).read_bytes()
        except FileNotFoundError:
            raise ChunkNotFound(f"no {key} in {self.path}") from None


class S3ChunkStore:
    """The store in Walrus, bucket `mallee-snapshots-<region>`, under the cloud's system account.
    `credentials` asks the CLC for that account's key and the S3 endpoint (rpc
    cloud.SYSTEM_CREDENTIALS); it is called at first use and again when S3 refuses the key."""

    def __init__(self, credentials: Callable[[], SystemCredentials], prefix: str = "") -> None:
        """`prefix`: the zone's own part of the bucket ("mallee-1a/"): each SC counts references only
        to its own snapshots' chunks, so zones must not share chunks (or delete each other's)."""
        self._credentials = credentials
        self.prefix = prefix
        self._lock = threading.Lock()
        self._client: Any = None
        self.bucket = ""

    def has(self, digest: str) -> bool:
        try:
            self._call("head_object", Key=self.prefix + chunk_key(digest))
        except ChunkNotFound:
            return False
        return True

    def put(self, digest: str, data: bytes) -> None:
        self._call("put_object", Key=self.prefix + chunk_key(digest), Body=data)

    def get(self, digest: str) -> bytes:
        return self._read(self.prefix + chunk_key(digest))

    def delete(self, digest: str) -> None:
        self._call("delete_object", Key=self.prefix + chunk_key(digest))

    def put_manifest(self, snapshot_id: str, data: bytes) -> None:
        self._call(
            "put_object",
            Key=self.prefix + manifest_key(snapshot_id),
            Body=data,
            ContentType="application/json",
        )

    def get_manifest(self, snapshot_id: str) -> bytes:
        return self._read(self.prefix + manifest_key(snapshot_id))

    def delete_manifest(self, snapshot_id: str) -> None:
        self._call("delete_object", Key=self.prefix + manifest_key(snapshot_id))

    def _read(self, key: str) -> bytes:
        body = self._call("get_object", Key=key)["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def _call(self, method: str, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            client = self._connect(fresh=attempt == 2)
            try:
                return getattr(client, method)(Bucket=self.bucket, **kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise ChunkNotFound(f"no {kwargs.get('Key')} in {self.bucket}") from None
                if code in _AUTH_ERRORS and attempt == 1:
                    continue
                raise ChunkStoreError(f"S3 {method} {kwargs.get('Key')} failed: {exc}") from exc
            except BotoCoreError as exc:
                raise ChunkStoreError(f"S3 {method} {kwargs.get('Key')} failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _connect(self, fresh: bool) -> Any:
        """The client, made (with the bucket, created if missing) at first use or when `fresh`."""
        with self._lock:
            if self._client is not None and not fresh:
                return self._client
            try:
                creds = self._credentials()
            except Exception as exc:  # the rpc's own errors: the CLC is down or refuses
                raise ChunkStoreError(f"cannot get the cloud's S3 credentials from the CLC: {exc}") from exc
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=creds.endpoint,
                region_name=creds.region,
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                config=BotoConfig(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=16,
                ),
            )
            bucket = f"mallee-snapshots-{creds.region}"
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise ChunkStoreError(f"cannot create bucket {bucket}: {exc}") from exc
            except BotoCoreError as exc:
                raise ChunkStoreError(f"cannot reach S3 at {creds.endpoint}: {exc}") from exc
            self._client, self.bucket = client, bucket
            return client
