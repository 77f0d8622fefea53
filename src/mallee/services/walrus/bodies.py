"""Receiving an object body: decode aws-chunked framing, check every digest the client sent
(Content-MD5, x-amz-content-sha256, x-amz-checksum-* as header or trailer), and write the bytes to
the object store as they arrive (small objects' bytes to their row instead: see BodySink). Nothing
is committed unless every check passed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.drivers.objectstore.base import BlobWriter, ObjectStore
from mallee.protocol import chunked
from mallee.protocol.auth import AuthError
from mallee.rpc.transport import REQUEST_TIMEOUT
from mallee.services.walrus import checksums
from mallee.services.walrus.encryption import StreamCipher
from mallee.services.walrus.streaming import BodyTimedOut, ClientDisconnected

_HEX64 = re.compile("[0-9a-fA-F]{64}")

READ_SIZE = 1024 * 1024
MAX_OBJECT = 5 * 1024**3  # S3's limit for one PUT
INLINE_MAX = 64 * 1024  # objects up to this size keep their bytes in their row (see BodySink)


@dataclass(frozen=True)
class StoredBody:
    """Where a body's bytes went: a new blob in the object store (`locator`), or, for a small
    object, `inline`: bytes for the object's row."""

    size: int
    locator: str | None = None
    inline: bytes | None = None

    def discard(self, store: ObjectStore) -> None:
        """Undo: the database never pointed at it."""
        if self.locator is not None:
            store.delete(self.locator)


class BodySink:
    """Takes a body's bytes as they arrive. With `keep_up_to`, a body no larger stays in memory and
    is stored in the object's row, committed with its metadata: no blob file, so none of its two
    fsyncs (file, directory) nor an open and read for each GET, which for small objects cost more
    than the bytes (MinIO and Ceph RGW keep small objects with their metadata too). Anything larger,
    and every multipart part (`keep_up_to=None`), goes to a blob."""

    def __init__(
        self, store: ObjectStore, keep_up_to: int | None = None, cipher: Cipher | None = None
    ) -> None:
        self._store = store
        self._keep_up_to = keep_up_to
        self._kept: list[bytes] = []
        self._writer: BlobWriter | None = None
        self._cipher = cipher
        # An SSE-C object's ETag is the MD5 of what is stored (see encryption).
        self._stored_md5 = hashlib.md5() if cipher is not None and cipher.etag_of_stored else None
        self.size = 0

    @property
    def stored_md5(self) -> str | None:
        """Hex MD5 of what was stored, when the ETag is that (SSE-C); else None."""
        return self._stored_md5.hexdigest() if self._stored_md5 is not None else None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._cipher is not None:
            data = self._cipher.stream.update(data)
            if self._stored_md5 is not None:
                self._stored_md5.update(data)
        if self._writer is None and self._keep_up_to is not None and self.size <= self._keep_up_to:
            self._kept.append(bytes(data))
            return
        self._blob_writer().write(data)

    def _blob_writer(self) -> BlobWriter:
        if self._writer is None:
            self._writer = self._store.writer()
            for data in self._kept:
                self._writer.write(data)
            self._kept = []
        return self._writer

    def commit(self) -> StoredBody:
        if self._writer is None and self._keep_up_to is not None:
            return StoredBody(self.size, inline=b"".join(self._kept))
        return StoredBody(self.size, locator=self._blob_writer().commit().locator)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


@dataclass(frozen=True)
class Cipher:
    """How a sink encrypts what it stores: the stream under the bytes' new data key, and whether
    their ETag is the MD5 of what is stored (SSE-C) rather than of the bytes."""

    stream: StreamCipher
    etag_of_stored: bool = False


@dataclass
class ReceivedBody:
    stored: StoredBody
    md5: str  # hex, of the body (the plaintext)
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64
    stored_md5: str | None = None  # hex, of what was stored, when the ETag is that (SSE-C)

    @property
    def etag(self) -> str:
        return f'"{self.stored_md5 or self.md5}"'


def receive_body(
    ctx: RequestContext,
    store: ObjectStore,
    limit: int = MAX_OBJECT,
    keep_up_to: int | None = None,
    cipher: Cipher | None = None,
    also: tuple[str, ...] = (),
) -> ReceivedBody:
    """The request's body, checked and stored (`keep_up_to`, `cipher`: see BodySink), with the
    checksums its headers ask for and those of `also`."""
    request = ctx.request
    headers = request.headers
    stream = request.stream
    assert stream is not None, "the Walrus app always provides a stream"
    content_sha = (headers.get("x-amz-content-sha256") or "").strip()
    decoder = None
    if content_sha.startswith("STREAMING-"):
        try:
            decoder = chunked.AwsChunkedDecoder.for_request(request, ctx.secret_key)
        except (AuthError, chunked.ChunkedFormatError) as exc:
            raise CloudError("InvalidRequest", str(exc)) from exc
    sent = checksums.requested(headers)
    wanted = list(dict.fromkeys([*sent, *also]))
    hashers = checksums.Hashers(wanted)
    md5 = hashlib.md5()
    # Only a hex digest pins the body (a presigned request's header is not checked by its signature).
    sha = hashlib.sha256() if _HEX64.fullmatch(content_sha) else None
    sink = BodySink(store, keep_up_to, cipher)
    try:
        while True:
            raw = stream.read(READ_SIZE)
            if not raw:
                break
            data = decoder.feed(raw) if decoder else raw
            if not data:
                continue
            if sink.size + len(data) > limit:
                raise CloudError(
                    "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400
                )
            md5.update(data)
            if sha:
                sha.update(data)
            hashers.update(data)
            sink.write(data)
        trailers = decoder.finish() if decoder else {}
        if sha and not hmac.compare_digest(sha.hexdigest(), content_sha.lower()):
            raise CloudError(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        check_md5(headers.get("content-md5"), md5.digest())
        sums = hashers.verify(headers, trailers, unsent=[a for a in also if a not in sent])
        stored = sink.commit()
    except chunked.ChunkedFormatError as exc:
        sink.abort()
        raise CloudError(
            "IncompleteBody", f"The request body is not valid aws-chunked data: {exc}", 400
        ) from exc
    except AuthError as exc:
        sink.abort()
        raise CloudError("SignatureDoesNotMatch", exc.message, 403) from exc
    except BodyTimedOut as exc:
        sink.abort()
        raise CloudError("RequestTimeout", REQUEST_TIMEOUT, 400) from exc
    except ClientDisconnected as exc:
        sink.abort()
        raise CloudError("IncompleteBody", "The request body terminated unexpectedly", 400) from exc
    except BaseException:
        sink.abort()
        raise
    return ReceivedBody(stored, md5.hexdigest(), sums, sink.stored_md5)


def check_md5(header: str | None, digest: bytes) -> None:
    """Content-MD5 (when sent) against the body's MD5: InvalidDigest, BadDigest."""
    if header is None:
        return
    try:
        sent = base64.b64decode(header.strip(), validate=True)
    except ValueError as exc:
        raise CloudError("InvalidDigest", "The Content-MD5 you specified was invalid.") from exc
    if len(sent) != 16:
        raise CloudError("InvalidDigest", "The Content-MD5 you specified was invalid.")
    if not hmac.compare_digest(sent, digest):
        raise CloudError("BadDigest", "The Content-MD5 you specified did not match what we received.")
