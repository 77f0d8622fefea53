"""The fuzz suite's cases for S3's browser-based uploads (POST Object): not a botocore operation,
but a form parser and a policy language of its own. A correctly signed baseline form, then forms
whose framing is broken, whose fields are hostile, and signed policies whose JSON or conditions are
(a signed policy is what reaches the condition checks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from support.fuzz import HUGE, JSON_DOCUMENTS, Case

_BOUNDARY = "fuzzboundary"


def form(fields: list[tuple[str, bytes]], file: bytes | None = b"posted", filename: str = "f.txt") -> bytes:
    parts = [
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields
    ]
    if file is not None:
        head = f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        parts.append(head.encode("utf-8") + b"Content-Type: text/plain\r\n\r\n" + file + b"\r\n")
    return b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()


class PostCases:
    """POST Object forms for `bucket`, signed (SigV4) with the account's keys."""

    def __init__(self, bucket: str, access_key: str, secret_key: str, region: str) -> None:
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.date = datetime.now(UTC).strftime("%Y%m%d")
        self.credential = f"{access_key}/{self.date}/{region}/s3/aws4_request"

    def signed_fields(self, policy: Any, key: str = "post/${filename}") -> list[tuple[str, bytes]]:
        """The fields of a form whose (possibly hostile) `policy` is correctly signed."""
        document = policy if isinstance(policy, bytes) else json.dumps(policy).encode()
        encoded = base64.b64encode(document)
        signing = ("AWS4" + self.secret_key).encode()
        for part in (self.date, self.region, "s3", "aws4_request"):
            signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(signing, encoded, hashlib.sha256).hexdigest()
        return [
            ("key", key.encode()),
            ("x-amz-algorithm", b"AWS4-HMAC-SHA256"),
            ("x-amz-credential", self.credential.encode()),
            ("x-amz-date", f"{self.date}T000000Z".encode()),
            ("policy", encoded),
            ("x-amz-signature", signature.encode()),
        ]

    def policy(self, *conditions: Any, expiration: Any = "2099-01-01T00:00:00Z") -> dict[str, Any]:
        return {
            "expiration": expiration,
            "conditions": [
                {"bucket": self.bucket},
                ["starts-with", "$key", "post/"],
                {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                {"x-amz-credential": self.credential},
                {"x-amz-date": f"{self.date}T000000Z"},
                *conditions,
            ],
        }

    def case(
        self, detail: str, body: bytes, content_type: str = f"multipart/form-data; boundary={_BOUNDARY}"
    ) -> Case:
        headers = (("Content-Type", content_type),)
        return Case(
            "s3", "PostObject", "post-upload", detail, "POST", f"/{self.bucket}", headers, body, signed=False
        )

    def all(self) -> list[Case]:
        good = self.signed_fields(self.policy())
        found = [self.case("baseline", form(good))]
        found += [
            self.case(f"policy-json-{i}", form(self.signed_fields(doc.encode())))
            for i, doc in enumerate(JSON_DOCUMENTS)
        ]
        expirations: tuple[Any, ...] = (5, "garbage", "9999-99-99T99:99:99Z", None, [], "1e999")
        for i, expiration in enumerate(expirations):
            found.append(
                self.case(f"expiration-{i}", form(self.signed_fields(self.policy(expiration=expiration))))
            )
        hostile_conditions: list[Any] = [
            5,
            None,
            ["eq"],
            ["eq", "$key"],
            ["starts-with", 1, 2],
            ["content-length-range", "a", "b"],
            ["content-length-range", -5, 2**70],
            ["content-length-range", 1e999, 1],
            ["content-length-range", 10, 1],
            {"bucket": ["x"]},
            {"a": 1, "b": {"c": None}},
            ["eq", "$key", None],
            ["unknown-op", "$key", "x"],
            ["eq", "key", "no-dollar"],
            [[[[["deep"]]]]],
            ["eq", "$" + "k" * (HUGE // 2), "x"],
        ]
        for i, condition in enumerate(hostile_conditions):
            found.append(self.case(f"condition-{i}", form(self.signed_fields(self.policy(condition)))))
        deep = b'{"expiration": "2099-01-01T00:00:00Z", "conditions": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        found.append(self.case("policy-deep", form(self.signed_fields(deep))))
        found.append(
            self.case("policy-not-base64", form([(n, b"!!!" if n == "policy" else v) for n, v in good]))
        )
        found.append(
            self.case("policy-huge", form(self.signed_fields(b'{"expiration": "' + b"9" * HUGE + b'"}')))
        )
        for name, value in (
            ("x-amz-signature", "é-not-hex".encode()),
            ("x-amz-signature", b"\xff\xfe"),
            ("x-amz-signature", b"0" * 64),
            ("x-amz-credential", b"a/b"),
            ("x-amz-credential", "ключ/20260101/r/s3/aws4_request".encode()),
            ("x-amz-date", b"garbage"),
            ("x-amz-algorithm", b"AWS4-HMAC-MD5"),
            ("key", b""),
            ("key", b"post/" + b"k" * 2000),
            ("key", b"post/a\x00b"),
        ):
            spoiled = [(n, value if n == name else v) for n, v in good]
            found.append(self.case(f"field-{name}-{value[:12]!r}", form(spoiled)))
        sigv2 = [("key", b"post/x"), ("AWSAccessKeyId", self.access_key.encode()), ("policy", b"e30=")]
        found.append(self.case("sigv2-signature-not-base64", form([*sigv2, ("signature", "é".encode())])))
        found.append(self.case("sigv2-no-signature", form(sigv2)))
        for detail, body in (
            ("no-file", form(good, file=None)),
            ("two-files", form(good)[: -len(f"--{_BOUNDARY}--\r\n")] + form([], b"second")),
            ("filename-traversal", form(good, filename="../../etc/passwd")),
            ("filename-nul", form(good, filename="a\x00b")),
            ("filename-unicode", form(good, filename="\u202eexe.txt")),
            ("fields-too-large", form([*good, ("x-ignore-big", b"x" * HUGE)])),
            ("many-fields", form([*good, *((f"x-ignore-{i}", b"v") for i in range(5000))])),
            ("field-not-utf8", form([*good, ("x-ignore-a", b"\xff\xfe")])),
            ("field-name-nul", form([*good, ("x-ignore-\x00", b"v")])),
            ("unchecked-field", form([*good, ("acl", b"public-read-write")])),
            ("status-garbage", form([*good, ("success_action_status", b"999")])),
            ("truncated", form(good)[:-40]),
            ("no-closing-delimiter", form(good)[: -len(f"--{_BOUNDARY}--\r\n")]),
            ("garbage", bytes(range(256)) * 10),
            ("empty", b""),
            ("no-disposition", f"--{_BOUNDARY}\r\nX: y\r\n\r\nv\r\n--{_BOUNDARY}--\r\n".encode()),
            (
                "no-name",
                f"--{_BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nv\r\n--{_BOUNDARY}--\r\n".encode(),
            ),
            (
                "huge-part-headers",
                f"--{_BOUNDARY}\r\nX: {'h' * HUGE}\r\n\r\nv\r\n--{_BOUNDARY}--\r\n".encode(),
            ),
            ("lf-only", form(good).replace(b"\r\n", b"\n")),
        ):
            found.append(self.case(detail, body))
        for detail, content_type in (
            ("no-boundary", "multipart/form-data"),
            ("empty-boundary", 'multipart/form-data; boundary=""'),
            ("huge-boundary", "multipart/form-data; boundary=" + "b" * 1000),
            ("unbalanced-quote", 'multipart/form-data; boundary="fuzz'),
            ("wrong-boundary", "multipart/form-data; boundary=other"),
        ):
            found.append(self.case(detail, form(good), content_type))
        return found
