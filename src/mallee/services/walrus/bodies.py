"""Receiving an object body: decode aws-chunked framing, check every digest the client sent
(Content-MD5, x-amz-content-sha256, x-amz-checksum-* as header or trailer), and write the bytes to
the object store as they arrive. Nothing is committed unless every check passed."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.drivers.objectstore.base import ObjectStore, StoredBlob
from mallee.protocol import chunked
from mallee.protocol.auth import AuthError
from mallee.services.walrus import checksums
from mallee.services.walrus.streaming import ClientDisconnected

READ_SIZE = 1024 * 1024
MAX_OBJECT = 5 * 1024**3  # S3's limit for one PUT


@dataclass
class ReceivedBody:
    blob: StoredBlob
    md5: str  # hex
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64

    @property
    def etag(self) -> str:
        return f'"{self.md5}"'


def receive_body(ctx: RequestContext, store: ObjectStore, limit: int = MAX_OBJECT) -> ReceivedBody:
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
    wanted = checksums.requested(headers)
    hashers = checksums.Hashers(wanted)
    md5 = hashlib.md5()
    sha = hashlib.sha256() if len(content_sha) == 64 else None
    writer = store.writer()
    try:
        while True:
            raw = stream.read(READ_SIZE)
            if not raw:
                break
            data = decoder.feed(raw) if decoder else raw
            if not data:
                continue
            if writer.size + len(data) > limit:
                raise CloudError(
                    "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400
                )
            md5.update(data)
            if sha:
                sha.update(data)
            hashers.update(data)
            writer.write(data)
        trailers = decoder.finish() if decoder else {}
        if sha and not hmac.compare_digest(sha.hexdigest(), content_sha.lower()):
            raise CloudError(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        check_md5(headers.get("content-md5"), md5.digest())
        sums = hashers.verify(headers, trailers)
        blob = writer.commit()
    except chunked.ChunkedFormatError as exc:
        writer.abort()
        raise CloudError(
            "IncompleteBody", f"The request body is not valid aws-chunked data: {exc}", 400
        ) from exc
    except AuthError as exc:
        writer.abort()
        raise CloudError("SignatureDoesNotMatch", exc.message, 403) from exc
    except ClientDisconnected as exc:
        writer.abort()
        raise CloudError("IncompleteBody", "The request body terminated unexpectedly", 400) from exc
    except BaseException:
        writer.abort()
        raise
    return ReceivedBody(blob, md5.hexdigest(), sums)


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
