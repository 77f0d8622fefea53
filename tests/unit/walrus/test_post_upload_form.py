"""The streaming multipart/form-data reader of browser-based uploads, fed in awkward pieces."""

from __future__ import annotations

import base64
import json
import os

import pytest

from mallee.core.context import Headers, HttpRequest
from mallee.core.errors import CloudError
from mallee.protocol import routing
from mallee.services.walrus import post_upload


class Trickle:
    """A body handed out a few bytes at a time, so delimiters straddle reads."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + self.step]
        self.pos += len(chunk)
        return chunk


def _body(fields: dict[str, str], content: bytes, boundary: str = "XyZ") -> bytes:
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a;b.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    return (
        out
        + content
        + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=x\r\n\r\ny".encode()
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 20])
def test_fields_then_file_in_any_pieces(step: int) -> None:
    content = os.urandom(5000) + b"\r\n--XyQ-not-quite" + b"\r\n--Xy"
    form = post_upload._Form(Trickle(_body({"key": "k/${filename}", "Policy": "p"}, content), step), b"XyZ")
    fields, filename = post_upload._read_fields(form)
    assert fields == {"key": "k/${filename}", "policy": "p"}
    assert filename == "a;b.txt"
    stream = post_upload._FileStream(form, (1, 10_000))
    got = b""
    while chunk := stream.read(4096):
        got += chunk
    assert got == content
    form.drain(1 << 20)


def test_file_over_the_range_is_refused() -> None:
    form = post_upload._Form(Trickle(_body({"key": "k"}, b"x" * 100), 10), b"XyZ")
    post_upload._read_fields(form)
    stream = post_upload._FileStream(form, (0, 99))
    with pytest.raises(CloudError) as err:
        while stream.read(7):
            pass
    assert err.value.code == "EntityTooLarge"


def test_fields_beyond_the_limit_are_refused() -> None:
    body = _body({"key": "k", "x-ignore-big": "a" * (post_upload.MAX_FIELDS + 10)}, b"data")
    with pytest.raises(CloudError) as err:
        post_upload._read_fields(post_upload._Form(Trickle(body, 4096), b"XyZ"))
    assert err.value.code == "MaxPostPreDataLengthExceeded"


def test_form_without_a_file_is_refused() -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n--XyZ--\r\n'
    with pytest.raises(CloudError) as err:
        post_upload._read_fields(post_upload._Form(Trickle(body, 5), b"XyZ"))
    assert err.value.code == "InvalidArgument"


def _request(host: str, path: str = "/", method: str = "POST") -> HttpRequest:
    headers = Headers([("host", host), ("content-type", "multipart/form-data; boundary=b")])
    return HttpRequest(method=method, raw_path=path, query_string="", headers=headers)


def test_virtual_host_bucket_and_post_detection() -> None:
    assert routing.virtual_host_bucket(_request("my.bucket.s3.test:8773"), "s3.test") == "my.bucket"
    assert routing.virtual_host_bucket(_request("s3.test:8773"), "s3.test") is None
    assert routing.virtual_host_bucket(_request("b.s3.test"), "") is None
    assert routing.virtual_host_bucket(_request("b.other.test"), "s3.test") is None
    assert post_upload.is_post_upload(_request("b.s3.test"), "s3.test")
    assert not post_upload.is_post_upload(_request("b.s3.test", "/key"), "s3.test")
    assert post_upload.is_post_upload(_request("127.0.0.1", "/bucket"))
    assert post_upload.is_post_upload(_request("127.0.0.1", "/services/objectstorage/bucket"))
    assert not post_upload.is_post_upload(_request("127.0.0.1", "/bucket/key"))
    assert not post_upload.is_post_upload(_request("127.0.0.1", "/bucket", "PUT"))


@pytest.mark.parametrize(
    "condition",
    [["content-length-range", 1e999, 1], ["content-length-range", "a", "b"], ["content-length-range", 1]],
)
def test_a_content_length_range_that_is_no_pair_of_integers_is_an_invalid_policy(
    condition: list[object],
) -> None:
    """Found by the fuzz suite: `1e999` (JSON's Infinity) made int() raise OverflowError, a 500."""
    document = base64.b64encode(
        json.dumps({"expiration": "2099-01-01T00:00:00Z", "conditions": [condition]}).encode()
    )
    with pytest.raises(CloudError) as err:
        post_upload._parse_policy(document.decode())
    assert err.value.code == "InvalidPolicyDocument"


def test_a_policy_nested_too_deeply_is_invalid_json() -> None:
    document = base64.b64encode(
        b'{"expiration": "2099-01-01T00:00:00Z", "conditions": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    with pytest.raises(CloudError) as err:
        post_upload._parse_policy(document.decode())
    assert err.value.code == "InvalidPolicyDocument" and "Invalid JSON" in err.value.message
