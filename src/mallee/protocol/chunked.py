"""Incremental decoder for S3's `aws-chunked` request bodies (Content-Encoding: aws-chunked).

SDKs upload objects in this framing when they sign the body chunk by chunk or send a checksum
after it. The request's `x-amz-content-sha256` header names the variant:

* `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: `<hex size>;chunk-signature=<sig>\\r\\n<data>\\r\\n` ...
  ending with a zero-size chunk and `\\r\\n`. Each chunk's signature is chained from the previous
  one, starting from the "seed" signature of the request's Authorization header, so chunks cannot
  be altered, dropped or reordered.
* `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: the same, and after the zero-size chunk, trailing
  headers (`x-amz-checksum-crc32:...`) and a `x-amz-trailer-signature` over them.
* `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: `<hex size>\\r\\n<data>\\r\\n` ... `0\\r\\n` then the
  trailing headers and an empty line; what botocore >= 1.36 sends for PutObject over HTTPS.

`AwsChunkedDecoder.feed()` takes the body as it arrives and returns the decoded bytes available
so far; `finish()` checks the body was complete and returns the trailers. The body is never held
whole: unsigned data is passed on at once, and signed data one chunk at a time, only after its
signature checked out (at most `max_chunk_size` bytes are held). Checksums named by the trailers
(crc32 & co.) are the caller's to compare: this module only frames and authenticates.

Reference: the S3 API reference, "Signature Calculations for the Authorization Header:
Transferring Payload in Multiple Chunks" and "... Including Trailing Headers".
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from mallee.core.context import HttpRequest
from mallee.protocol.auth import AuthError
from mallee.protocol.sigv4 import (
    EMPTY_SHA256,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    hmac_sha256,
    parse,
    signing_key,
)

CHUNK_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"
TRAILER_SIGNATURE = "x-amz-trailer-signature"
DEFAULT_MAX_CHUNK_SIZE = 16 * 1024 * 1024
_MAX_LINE = 4096  # a chunk header or trailer line; real ones are under 100 bytes
_MAX_TRAILERS = 16 * 1024  # all trailer lines together

_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TRAILER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


class ChunkedFormatError(ValueError):
    """The body is not well-formed aws-chunked: bad framing, truncated, or the wrong length."""


@dataclass(frozen=True)
class ChunkSigning:
    """What chunk signatures are computed from: the request's signing key, date, scope and seed."""

    key: bytes  # sigv4.signing_key(secret, date, region, service)
    timestamp: str  # the request's X-Amz-Date, YYYYMMDDTHHMMSSZ
    scope: str  # 20130524/us-east-1/s3/aws4_request
    seed_signature: str  # the Authorization header's signature

    def chunk_signature(self, previous: str, data_sha256: str) -> str:
        text = f"{CHUNK_ALGORITHM}\n{self.timestamp}\n{self.scope}\n{previous}\n{EMPTY_SHA256}\n{data_sha256}"
        return hmac_sha256(self.key, text).hex()

    def trailer_signature(self, previous: str, trailers: dict[str, str]) -> str:
        canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        text = f"{TRAILER_ALGORITHM}\n{self.timestamp}\n{self.scope}\n{previous}\n{digest}"
        return hmac_sha256(self.key, text).hex()


# Decoder states.
_HEADER, _DATA, _DATA_END, _FINAL_END, _TRAILERS, _DONE, _FAILED = range(7)


class AwsChunkedDecoder:
    """Feed it an aws-chunked body piece by piece; get the payload back as it is verified."""

    def __init__(
        self,
        content_sha256: str,
        *,
        signing: ChunkSigning | None = None,
        decoded_length: int | None = None,
        declared_trailers: tuple[str, ...] | None = None,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> None:
        if content_sha256 not in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER):
            raise ChunkedFormatError(
                f"not an aws-chunked payload: x-amz-content-sha256 is {content_sha256!r}"
            )
        self.signed = content_sha256 != STREAMING_UNSIGNED_TRAILER
        if self.signed and signing is None:
            raise ValueError(f"{content_sha256} needs the request's signing context")
        self.has_trailers = content_sha256 != STREAMING_SIGNED
        self._signing = signing
        self._previous = signing.seed_signature.lower() if signing else ""
        self._decoded_length = decoded_length
        self._declared = declared_trailers
        self._max_chunk = max_chunk_size
        self._buf = bytearray()
        self._state = _HEADER
        self._remaining = 0  # data bytes still due in the current chunk
        self._chunk_signature = ""
        self._chunk = bytearray()  # a signed chunk's data, held until its signature is checked
        self._chunk_hash = hashlib.sha256()
        self._trailer_lines: list[str] = []
        self._trailer_bytes = 0
        self.trailers: dict[str, str] = {}
        self.decoded = 0  # payload bytes returned so far

    @classmethod
    def for_request(
        cls,
        request: HttpRequest,
        secret_key: str | None = None,
        *,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
    ) -> AwsChunkedDecoder:
        """A decoder set up from the request's headers (and the secret, for signed chunks).

        Call it after `auth.verify` accepted the request: the seed signature is taken as good.
        """
        mode = (request.headers.get("x-amz-content-sha256") or "").strip()
        signing = None
        if mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            signing = _signing_for(request, secret_key)
        return cls(
            mode,
            signing=signing,
            decoded_length=_decoded_length(request),
            declared_trailers=_declared_trailers(request),
            max_chunk_size=max_chunk_size,
        )

    # -- public ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of the body; return the payload bytes it completed."""
        if self._state == _FAILED:
            raise ChunkedFormatError("the aws-chunked body already failed to decode")
        self._buf += data
        out: list[bytes] = []
        try:
            self._run(out)
        except (ChunkedFormatError, AuthError):
            self._state = _FAILED
            raise
        return b"".join(out)

    def finish(self) -> dict[str, str]:
        """The body ended: check it was complete and of the declared length; return the trailers."""
        if self._state == _FAILED:
            raise ChunkedFormatError("the aws-chunked body already failed to decode")
        if self._state == _FINAL_END and not self._buf:
            # Tolerated: a signed body without trailers whose final empty line is missing.
            self._state = _DONE
        if self._state != _DONE:
            self._state = _FAILED
            raise ChunkedFormatError("the aws-chunked body ended before its final chunk")
        if self._decoded_length is not None and self.decoded != self._decoded_length:
            self._state = _FAILED
            raise ChunkedFormatError(
                f"the body decoded to {self.decoded} bytes, but x-amz-decoded-content-length is "
                f"{self._decoded_length}"
            )
        return dict(self.trailers)

    # -- the state machine ----------------------------------------------------------------------

    def _run(self, out: list[bytes]) -> None:
        pos = 0
        while True:
            if self._state == _DATA:
                pos = self._take_data(pos, out)
                if self._remaining:
                    break
                continue
            if self._state == _DONE:
                if pos < len(self._buf):
                    raise ChunkedFormatError("data after the end of the aws-chunked body")
                break
            line, pos = self._next_line(pos)
            if line is None:
                break
            self._on_line(line, out)
        del self._buf[:pos]

    def _next_line(self, pos: int) -> tuple[bytes | None, int]:
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            if len(self._buf) - pos > _MAX_LINE:
                raise ChunkedFormatError("an aws-chunked header line is too long (or lacks its CRLF)")
            return None, pos
        if end - pos > _MAX_LINE:
            raise ChunkedFormatError("an aws-chunked header line is too long")
        return bytes(self._buf[pos:end]), end + 2

    def _on_line(self, line: bytes, out: list[bytes]) -> None:
        if self._state == _HEADER:
            self._on_chunk_header(line)
        elif self._state == _DATA_END:
            if line:
                raise ChunkedFormatError("a chunk's data is longer than its declared size")
            self._end_chunk(out)
        elif self._state == _FINAL_END:
            if line:
                raise ChunkedFormatError("unexpected data after the final chunk")
            self._state = _DONE
        elif self._state == _TRAILERS:
            self._on_trailer_line(line)

    def _on_chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not _SIZE.fullmatch(size_text):
            raise ChunkedFormatError(f"bad aws-chunked chunk size {size_text[:40]!r}")
        size = int(size_text, 16)
        if size > self._max_chunk:
            raise ChunkedFormatError(f"chunk of {size} bytes exceeds the {self._max_chunk}-byte limit")
        if self._decoded_length is not None and self.decoded + size > self._decoded_length:
            raise ChunkedFormatError(
                f"the body is longer than its x-amz-decoded-content-length of {self._decoded_length}"
            )
        self._chunk_signature = self._chunk_signature_of(extension) if self.signed else ""
        self._remaining = size
        self._chunk = bytearray()
        self._chunk_hash = hashlib.sha256()
        if size == 0:
            self._end_final_chunk()
        else:
            self._state = _DATA

    def _chunk_signature_of(self, extension: bytes) -> str:
        name, _, value = extension.partition(b"=")
        text = value.decode("ascii", "replace").strip()
        if name.strip() != b"chunk-signature" or not _HEX64.fullmatch(text):
            raise AuthError("signature", "a chunk of a signed aws-chunked body lacks a valid chunk-signature")
        return text.lower()

    def _take_data(self, pos: int, out: list[bytes]) -> int:
        take = min(self._remaining, len(self._buf) - pos)
        piece = bytes(self._buf[pos : pos + take])
        self._remaining -= take
        if self.signed:
            self._chunk_hash.update(piece)
            self._chunk += piece
        elif piece:
            out.append(piece)
            self.decoded += len(piece)
        if not self._remaining:
            self._state = _DATA_END
        return pos + take

    def _end_chunk(self, out: list[bytes]) -> None:
        if self.signed:
            self._check_chunk_signature(self._chunk_hash.hexdigest())
            out.append(bytes(self._chunk))
            self.decoded += len(self._chunk)
            self._chunk = bytearray()
        self._state = _HEADER

    def _end_final_chunk(self) -> None:
        if self.signed:
            self._check_chunk_signature(EMPTY_SHA256)
        self._state = _TRAILERS if self.has_trailers else _FINAL_END

    def _check_chunk_signature(self, data_sha256: str) -> None:
        assert self._signing is not None
        expected = self._signing.chunk_signature(self._previous, data_sha256)
        if not hmac.compare_digest(expected, self._chunk_signature):
            raise AuthError(
                "signature",
                "The request signature we calculated does not match the signature you provided "
                f"(chunk ending at payload byte {self.decoded + len(self._chunk)}).",
            )
        self._previous = expected

    def _on_trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > _MAX_TRAILERS:
            raise ChunkedFormatError("the aws-chunked trailers are too long")
        if line:
            self._trailer_lines.append(line.decode("utf-8", "replace"))
            return
        self._end_trailers()

    def _end_trailers(self) -> None:
        trailers: dict[str, str] = {}
        signature: str | None = None
        for text in self._trailer_lines:
            name, colon, value = text.partition(":")
            name = name.strip().lower()
            if not colon or not _TRAILER_NAME.fullmatch(name):
                raise ChunkedFormatError(f"malformed aws-chunked trailer line {text[:80]!r}")
            if signature is not None:
                raise ChunkedFormatError("x-amz-trailer-signature must be the last trailer")
            if name == TRAILER_SIGNATURE:
                signature = value.strip()
            elif name in trailers:
                raise ChunkedFormatError(f"trailer {name} is repeated")
            else:
                trailers[name] = value.strip()
        if self.signed:
            self._check_trailer_signature(trailers, signature)
        elif signature is not None:
            raise ChunkedFormatError("an unsigned aws-chunked body carries a trailer signature")
        self._check_declared(trailers)
        self.trailers = trailers
        self._state = _DONE

    def _check_trailer_signature(self, trailers: dict[str, str], signature: str | None) -> None:
        assert self._signing is not None
        if signature is None or not _HEX64.fullmatch(signature):
            raise AuthError(
                "signature", "the signed aws-chunked trailers lack a valid x-amz-trailer-signature"
            )
        expected = self._signing.trailer_signature(self._previous, trailers)
        if not hmac.compare_digest(expected, signature.lower()):
            raise AuthError(
                "signature",
                "The request signature we calculated does not match the signature you provided "
                "(trailing headers).",
            )

    def _check_declared(self, trailers: dict[str, str]) -> None:
        # x-amz-trailer announces the trailers (and is signed): the body must bring exactly those.
        if self._declared is None:
            return
        if set(trailers) != set(self._declared):
            raise ChunkedFormatError(
                f"the trailers sent ({', '.join(sorted(trailers)) or 'none'}) are not the ones "
                f"x-amz-trailer declared ({', '.join(self._declared) or 'none'})"
            )


def decode(body: bytes, request: HttpRequest, secret_key: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Decode a whole aws-chunked body at once (for small bodies and tests)."""
    decoder = AwsChunkedDecoder.for_request(request, secret_key)
    payload = decoder.feed(body)
    return payload, decoder.finish()


# -- reading the request's headers ---------------------------------------------------------------


def _signing_for(request: HttpRequest, secret_key: str | None) -> ChunkSigning:
    parsed = parse(request)
    if parsed is None or parsed.presigned:
        raise AuthError("incomplete", "Signed aws-chunked bodies need an Authorization header signature")
    if secret_key is None:
        raise ValueError("signed aws-chunked bodies need the access key's secret")
    return ChunkSigning(
        key=signing_key(secret_key, parsed.date, parsed.region, parsed.service),
        timestamp=parsed.timestamp,
        scope=parsed.scope,
        seed_signature=parsed.signature.strip(),
    )


def _decoded_length(request: HttpRequest) -> int | None:
    value = request.headers.get("x-amz-decoded-content-length")
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise ChunkedFormatError(f"bad x-amz-decoded-content-length {value[:40]!r}")
    return int(value)


def _declared_trailers(request: HttpRequest) -> tuple[str, ...] | None:
    values = request.headers.get_all("x-amz-trailer")
    if not values:
        return None
    names = (name.strip().lower() for value in values for name in value.split(","))
    return tuple(name for name in names if name)
