"""aws-chunked decoding: AWS's worked examples, botocore's real uploads, and broken bodies."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib
from datetime import UTC, datetime

import botocore.session
import pytest
from botocore.config import Config

from mallee.core.context import Headers, HttpRequest
from mallee.protocol import auth, chunked, sigv4
from mallee.protocol.auth import AuthError
from mallee.protocol.chunked import AwsChunkedDecoder, ChunkedFormatError, ChunkSigning

# The S3 documentation's example credentials and request time.
DOC_AKID = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_NOW = datetime(2013, 5, 24, tzinfo=UTC)
DOC_TIMESTAMP = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"

# "Signature Calculations for the Authorization Header: Transferring Payload in Multiple Chunks":
# 66560 bytes of 'a' in chunks of 65536, 1024 and 0 bytes.
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_CHUNK_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
DOC_SIGNED_HEADERS = (
    "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
    "x-amz-decoded-content-length;x-amz-storage-class"
)
# "... Including Trailing Headers": the same data, then an x-amz-checksum-crc32c trailer.
DOC_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
DOC_TRAILER_CHUNK_SIGNATURES = (
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
)
DOC_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
DOC_TRAILER_SIGNED_HEADERS = (
    "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
    "x-amz-storage-class;x-amz-trailer"
)


def doc_body(signatures: tuple[str, ...], trailer: bytes = b"") -> bytes:
    return (
        f"10000;chunk-signature={signatures[0]}\r\n".encode()
        + b"a" * 65536
        + f"\r\n400;chunk-signature={signatures[1]}\r\n".encode()
        + b"a" * 1024
        + f"\r\n0;chunk-signature={signatures[2]}\r\n".encode()
        + trailer
        + b"\r\n"
    )


def doc_request(*, trailer: bool = False, body: bytes | None = None) -> HttpRequest:
    if trailer:
        mode, signed, seed = sigv4.STREAMING_SIGNED_TRAILER, DOC_TRAILER_SIGNED_HEADERS, DOC_TRAILER_SEED
        body = (
            body
            if body is not None
            else doc_body(
                DOC_TRAILER_CHUNK_SIGNATURES,
                f"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{DOC_TRAILER_SIGNATURE}\r\n".encode(),
            )
        )
    else:
        mode, signed, seed = sigv4.STREAMING_SIGNED, DOC_SIGNED_HEADERS, DOC_SEED
        body = body if body is not None else doc_body(DOC_CHUNK_SIGNATURES)
    headers = [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", DOC_TIMESTAMP),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={DOC_AKID}/{DOC_SCOPE},SignedHeaders={signed},Signature={seed}",
        ),
        ("x-amz-content-sha256", mode),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
    ]
    headers.append(("x-amz-trailer", "x-amz-checksum-crc32c") if trailer else ("Content-Length", "66824"))
    return HttpRequest("PUT", "/examplebucket/chunkObject.txt", "", Headers(headers), body)


def feed_in_pieces(decoder: AwsChunkedDecoder, body: bytes, sizes: list[int]) -> bytes:
    out, pos, i = [], 0, 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        out.append(decoder.feed(body[pos : pos + size]))
        pos, i = pos + size, i + 1
    return b"".join(out)


# -- AWS's worked examples ------------------------------------------------------------------------


def test_documented_chunk_signature() -> None:
    signing = ChunkSigning(
        sigv4.signing_key(DOC_SECRET, "20130524", "us-east-1", "s3"), DOC_TIMESTAMP, DOC_SCOPE, DOC_SEED
    )
    first = signing.chunk_signature(DOC_SEED, hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == DOC_CHUNK_SIGNATURES[0]


@pytest.mark.parametrize("sizes", [[len(doc_body(DOC_CHUNK_SIGNATURES))], [1], [997], [65536, 3, 100]])
def test_documented_signed_upload(sizes: list[int]) -> None:
    request = doc_request()
    assert len(request.body) == 66824  # the documented Content-Length
    info = auth.extract(request)
    assert info is not None
    auth.verify(request, info, DOC_SECRET, DOC_NOW)  # the seed signature
    decoder = AwsChunkedDecoder.for_request(request, DOC_SECRET)
    assert feed_in_pieces(decoder, request.body, sizes) == b"a" * 66560
    assert decoder.finish() == {}


def test_documented_signed_upload_with_trailer() -> None:
    request = doc_request(trailer=True)
    info = auth.extract(request)
    assert info is not None
    auth.verify(request, info, DOC_SECRET, DOC_NOW)
    payload, trailers = chunked.decode(request.body, request, DOC_SECRET)
    assert payload == b"a" * 66560
    assert trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


def test_signed_data_is_released_chunk_by_chunk() -> None:
    request = doc_request()
    decoder = AwsChunkedDecoder.for_request(request, DOC_SECRET)
    first_chunk_end = request.body.index(b"\r\n400;")
    assert decoder.feed(request.body[:first_chunk_end]) == b""  # not verified yet: held back
    assert decoder.feed(request.body[first_chunk_end : first_chunk_end + 2]) == b"a" * 65536
    assert decoder.feed(request.body[first_chunk_end + 2 :]) == b"a" * 1024


# -- botocore's default PutObject: unsigned payload with a CRC32 trailer -------------------------


class _Captured(Exception):
    pass


def botocore_put_object(data: bytes) -> HttpRequest:
    """The request botocore >= 1.36 sends for PutObject over HTTPS, captured before sending."""
    session = botocore.session.get_session()
    client = session.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="https://s3.example.test",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(s3={"addressing_style": "path"}),
    )
    captured = {}

    def capture(request, **kwargs):
        captured["request"] = request
        raise _Captured

    client.meta.events.register("before-send.s3.PutObject", capture)
    with pytest.raises(_Captured):
        client.put_object(Bucket="bucket", Key="a key", Body=data)
    sent = captured["request"]
    body = sent.body.read() if hasattr(sent.body, "read") else sent.body
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in sent.headers.items()]
    if not any(k.lower() == "host" for k, _ in headers):  # botocore adds it itself when awscrt is installed
        headers.insert(0, ("Host", "s3.example.test"))
    path, _, query = sent.url.removeprefix("https://s3.example.test").partition("?")
    return HttpRequest("PUT", path, query, Headers(headers), body)


@pytest.mark.parametrize("size", [0, 10, 1024 * 1024 + 5])
def test_botocore_unsigned_trailer_upload(size: int) -> None:
    data = random.Random(size).randbytes(size)
    request = botocore_put_object(data)
    assert request.headers.get("x-amz-content-sha256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    info = auth.extract(request)
    assert info is not None
    auth.verify(request, info, "secret", datetime.now(UTC))
    assert auth.payload_hash_matches(request)  # nothing to compare for streaming bodies
    decoder = AwsChunkedDecoder.for_request(request)
    assert feed_in_pieces(decoder, request.body, [4096, 1, 77777]) == data
    trailers = decoder.finish()
    expected_crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert trailers == {"x-amz-checksum-crc32": expected_crc}


def test_unsigned_data_is_released_as_it_arrives() -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, decoded_length=6)
    assert decoder.feed(b"6\r\nabc") == b"abc"
    assert decoder.feed(b"def\r\n0\r\n") == b"def"
    assert decoder.feed(b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n") == b""
    assert decoder.finish() == {"x-amz-checksum-crc32": "AAAAAA=="}


def test_unsigned_without_trailers() -> None:
    payload, trailers = chunked.decode(
        b"3\r\nabc\r\n0\r\n\r\n",
        HttpRequest("PUT", "/b/k", "", Headers([("x-amz-content-sha256", sigv4.STREAMING_UNSIGNED_TRAILER)])),
    )
    assert (payload, trailers) == (b"abc", {})


# -- bodies we sign ourselves ------------------------------------------------------------------------

SECRET = "test-secret"


def our_signing() -> ChunkSigning:
    return ChunkSigning(
        sigv4.signing_key(SECRET, "20240102", "eu-west-1", "s3"),
        "20240102T030405Z",
        "20240102/eu-west-1/s3/aws4_request",
        "ab" * 32,
    )


def encode_signed(data: bytes, chunk_size: int, trailers: dict[str, str] | None = None) -> bytes:
    """Frame `data` as a signed aws-chunked body, per the S3 documentation."""
    signing, previous, out = our_signing(), our_signing().seed_signature, []
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for piece in pieces:
        previous = signing.chunk_signature(previous, hashlib.sha256(piece).hexdigest())
        out.append(
            f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + (b"\r\n" if piece else b"")
        )
    if trailers is None:
        return b"".join(out) + b"\r\n"
    lines = "".join(f"{name}:{value}\r\n" for name, value in trailers.items())
    signature = signing.trailer_signature(previous, trailers)
    return b"".join(out) + f"{lines}x-amz-trailer-signature:{signature}\r\n\r\n".encode()


def signed_decoder(
    length: int | None,
    *,
    trailer: bool = False,
    declared: tuple[str, ...] | None = None,
    max_chunk_size: int = chunked.DEFAULT_MAX_CHUNK_SIZE,
) -> AwsChunkedDecoder:
    mode = sigv4.STREAMING_SIGNED_TRAILER if trailer else sigv4.STREAMING_SIGNED
    return AwsChunkedDecoder(
        mode,
        signing=our_signing(),
        decoded_length=length,
        declared_trailers=declared,
        max_chunk_size=max_chunk_size,
    )


@pytest.mark.parametrize("seed", range(8))
def test_signed_round_trip_in_random_pieces(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 300_000))
    trailers = {"x-amz-checksum-sha256": "x" * 44} if seed % 2 else None
    body = encode_signed(data, rng.choice([8192, 65536, 100_000]), trailers)
    decoder = signed_decoder(len(data), trailer=trailers is not None)
    sizes = [rng.randrange(1, 20_000) for _ in range(10)]
    assert feed_in_pieces(decoder, body, sizes) == data
    assert decoder.finish() == (trailers or {})


def test_a_tampered_chunk_fails_its_signature() -> None:
    body = bytearray(encode_signed(b"0123456789" * 2000, 8192))
    body[9000] ^= 1
    with pytest.raises(AuthError) as caught:
        signed_decoder(20000).feed(bytes(body))
    assert caught.value.kind == "signature"


@pytest.mark.parametrize("which", [0, 1, 2])
def test_documented_body_with_a_wrong_chunk_signature(which: int) -> None:
    signatures = list(DOC_CHUNK_SIGNATURES)
    signatures[which] = "0" * 64
    request = doc_request(body=doc_body(tuple(signatures)))
    with pytest.raises(AuthError) as caught:
        chunked.decode(request.body, request, DOC_SECRET)
    assert caught.value.kind == "signature"


def test_chunks_cannot_be_reordered_or_dropped() -> None:
    body = encode_signed(bytes(range(256)) * 100, 8192)
    frame = len(b"2000;chunk-signature=") + 64 + 2 + 8192 + 2  # one full 8 KiB chunk on the wire
    first, second, rest = body[:frame], body[frame : 2 * frame], body[2 * frame :]
    # Each signature chains from the previous one: dropping or swapping chunks breaks the chain.
    for broken in (first + rest, second + first + rest):
        with pytest.raises(AuthError):
            signed_decoder(None).feed(broken)
    assert signed_decoder(None).feed(first + second + rest) == bytes(range(256)) * 100


def test_wrong_secret_fails_the_first_chunk() -> None:
    request = doc_request()
    with pytest.raises(AuthError):
        chunked.decode(request.body, request, "another secret")


def test_missing_chunk_signature() -> None:
    with pytest.raises(AuthError) as caught:
        signed_decoder(3).feed(b"3\r\nabc\r\n")
    assert caught.value.kind == "signature"
    with pytest.raises(AuthError):
        signed_decoder(3).feed(b"3;chunk-signature=xyz\r\nabc\r\n")


def test_trailer_signature_is_checked() -> None:
    body = encode_signed(b"abc", 8192, {"x-amz-checksum-crc32": "NSRBwg=="})
    with pytest.raises(AuthError) as caught:
        signed_decoder(3, trailer=True).feed(body.replace(b"NSRBwg==", b"AAAAAA=="))
    assert caught.value.kind == "signature"
    without_signature = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    with pytest.raises(AuthError):
        signed_decoder(3, trailer=True).feed(without_signature)


def test_truncated_bodies() -> None:
    body = encode_signed(b"x" * 20000, 8192)
    for cut in (0, 10, 5000, 8300, len(body) - 90, len(body) - 3):
        decoder = signed_decoder(20000)
        decoder.feed(body[:cut])
        with pytest.raises(ChunkedFormatError, match="ended before"):
            decoder.finish()


def test_missing_final_empty_line_is_tolerated() -> None:
    body = encode_signed(b"x" * 100, 8192)
    decoder = signed_decoder(100)
    assert decoder.feed(body[:-2]) == b"x" * 100
    assert decoder.finish() == {}


def test_decoded_length_must_match() -> None:
    body = encode_signed(b"x" * 100, 8192)
    decoder = signed_decoder(101)
    decoder.feed(body)
    with pytest.raises(ChunkedFormatError, match="x-amz-decoded-content-length"):
        decoder.finish()
    with pytest.raises(ChunkedFormatError, match="longer than"):
        signed_decoder(99).feed(body)


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b" 3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",  # more data than declared
        b"3\r\nabc\r\n0\r\n\r\nmore",  # data after the end
        b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
        b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:a\r\nx-amz-checksum-crc32:b\r\n\r\n",
        b"3\r\nabc\r\n0\r\nx-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n",
        b"1" * 5000,  # a header line without its CRLF
        b"ffffffffffffffffff\r\n",
    ],
)
def test_framing_errors(body: bytes) -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER)
    with pytest.raises(ChunkedFormatError):
        decoder.feed(body)
        decoder.finish()
    with pytest.raises(ChunkedFormatError, match="already failed"):
        decoder.feed(b"")


def test_chunk_size_limit() -> None:
    with pytest.raises(ChunkedFormatError, match="limit"):
        signed_decoder(None, max_chunk_size=1024).feed(b"401;chunk-signature=" + b"0" * 64 + b"\r\n")


def test_declared_trailers_must_arrive() -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, declared_trailers=("x-amz-checksum-crc32",))
    with pytest.raises(ChunkedFormatError, match="x-amz-trailer"):
        decoder.feed(b"0\r\nx-amz-checksum-sha1:abc\r\n\r\n")


def test_request_level_errors() -> None:
    plain = HttpRequest("PUT", "/b/k", "", Headers([("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]))
    with pytest.raises(ChunkedFormatError):
        AwsChunkedDecoder.for_request(plain)
    bad_length = HttpRequest(
        "PUT",
        "/b/k",
        "",
        Headers(
            [
                ("x-amz-content-sha256", sigv4.STREAMING_UNSIGNED_TRAILER),
                ("x-amz-decoded-content-length", "-1"),
            ]
        ),
    )
    with pytest.raises(ChunkedFormatError):
        AwsChunkedDecoder.for_request(bad_length)
    unsigned_request = HttpRequest(
        "PUT", "/b/k", "", Headers([("x-amz-content-sha256", sigv4.STREAMING_SIGNED)])
    )
    with pytest.raises(AuthError):
        AwsChunkedDecoder.for_request(unsigned_request, "secret")


def test_fuzzed_bodies_raise_only_documented_errors() -> None:
    rng = random.Random(7)
    body = encode_signed(rng.randbytes(30000), 8192, {"x-amz-checksum-crc32": "AAAAAA=="})
    for _ in range(300):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(mutated))
            mutated[position : position + rng.randint(0, 3)] = rng.randbytes(rng.randint(0, 3))
        decoder = signed_decoder(30000, trailer=True)
        try:
            feed_in_pieces(decoder, bytes(mutated), [rng.randrange(1, 5000)])
            decoder.finish()
        except (AuthError, ChunkedFormatError):
            pass
