"""The fuzz suite's cases for S3 (rest-xml): an operation's URI template filled in (a bucket that
exists, or one that does not), its query, headers and body, each spoiled in turn (see
support/fuzz.py); XML bodies broken every way a parser can be hurt; aws-chunked bodies whose
framing lies."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from botocore.model import OperationModel, Shape
from botocore.serialize import create_serializer
from botocore.utils import percent_encode_sequence

from support.fuzz import (
    BAD_VALUES,
    CONTROL,
    HUGE,
    INVALID_UTF8,
    JSON_DOCUMENTS,
    Case,
    Raw,
    scalar_mutations,
    typed_baseline,
)

_XML_VARIANTS: dict[str, bytes] = {
    "wrong-root": b"<WrongRoot><Nothing/></WrongRoot>",
    "doctype-entities": (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(8))
        + b"]><r>&i;</r>"
    ),
    "external-entity": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
    "deep-nesting": b"<a>" * 100_000 + b"</a>" * 100_000,
    "json-not-xml": b'{"Rules": [{"ID": 1}]}',
    "binary": bytes(range(256)) * 4,
    "latin1-declared-utf8": b'<?xml version="1.0" encoding="UTF-8"?><r>caf\xe9</r>',
    "utf16": '<?xml version="1.0" encoding="UTF-16"?><r>x</r>'.encode("utf-16"),
    "undeclared-prefix": b"<x:r><x:y/></x:r>",
    "unclosed": b"<r><a></r>",
    "processing-instruction": b'<?xml version="1.0"?><?evil cmd="rm"?><r/>',
}


_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
# (detail, declared x-amz-content-sha256, body, x-amz-decoded-content-length)
STREAMING_BODIES = (
    ("garbage-size", _TRAILER, b"zz\r\nabc\r\n0\r\n\r\n", "3"),
    ("huge-size", _TRAILER, b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", "3"),
    ("negative-size", _TRAILER, b"-3\r\nabc\r\n0\r\n\r\n", "3"),
    ("no-final-chunk", _TRAILER, b"3\r\nabc\r\n", "3"),
    ("short-chunk", _TRAILER, b"10\r\nabc\r\n0\r\n\r\n", "16"),
    ("bad-trailer", _TRAILER, b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:\xff\xfe\r\n\r\n", "3"),
    ("trailer-no-colon", _TRAILER, b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32\r\n\r\n", "3"),
    ("length-mismatch", _TRAILER, b"3\r\nabc\r\n0\r\n\r\n", "999"),
    ("length-garbage", _TRAILER, b"3\r\nabc\r\n0\r\n\r\n", "-1"),
    ("length-huge", _TRAILER, b"3\r\nabc\r\n0\r\n\r\n", "9" * 30),
    ("bad-chunk-signature", _SIGNED, b"3;chunk-signature=zz\r\nabc\r\n0;chunk-signature=\r\n\r\n", "3"),
    ("no-chunk-signature", _SIGNED, b"3\r\nabc\r\n0\r\n\r\n", "3"),
    ("lf-only", _TRAILER, b"3\nabc\n0\n\n", "3"),
    ("binary", _TRAILER, bytes(range(256)), "3"),
)


class S3Cases:
    """Requests of one S3 operation: its URI template filled in, its query, headers and body."""

    def __init__(self, model: OperationModel, bucket: str, missing_bucket: str) -> None:
        self.model = model
        self.bucket = bucket
        self.missing_bucket = missing_bucket
        self.shape = model.input_shape
        self.params = self.baseline_params(full=False)

    def baseline_params(self, full: bool) -> dict[str, Any]:
        shape = self.shape
        if shape is None:
            return {}
        params: dict[str, Any] = typed_baseline(shape)
        payload = shape.serialization.get("payload")
        if full and payload is not None and shape.members[payload].type_name == "structure":
            params[payload] = typed_baseline(shape.members[payload], 1, full=True)
        for name in params:
            if name == "Bucket":
                params[name] = self.bucket
            elif name == "Key":
                params[name] = "fuzz-key"
            elif name == "CopySource":
                params[name] = f"{self.bucket}/keep"
        return params

    def request(self, params: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]], bytes]:
        """(method, target, headers, body) of a botocore client given `params`."""
        serialized = create_serializer("rest-xml", include_validation=False).serialize_to_request(
            params, self.model
        )
        path, _, fixed = serialized["url_path"].partition("?")
        query = percent_encode_sequence(serialized["query_string"])
        target = path + ("?" + "&".join(q for q in (fixed, query) if q) if fixed or query else "")
        body = serialized["body"]
        body = body.encode() if isinstance(body, str) else bytes(body or b"")
        headers = [(k, str(v)) for k, v in serialized["headers"].items()]
        return serialized["method"], target, headers, body

    def case(
        self,
        kind: str,
        detail: str,
        params: dict[str, Any] | None = None,
        *,
        target: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        digest: bool = True,
    ) -> Case:
        method, base_target, base_headers, base_body = self.request(self.params if params is None else params)
        body = base_body if body is None else body
        headers = base_headers if headers is None else headers
        if digest and body and not any(k.lower() == "content-md5" for k, _ in headers):
            headers = [*headers, ("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode())]
        return Case("s3", self.model.name, kind, detail, method, target or base_target, tuple(headers), body)

    def label_target(self, bucket: str, key: str) -> str:
        """The request target with the URI labels given as raw (already encoded) text."""
        _, target, _, _ = self.request(self.params)
        path, sep, query = target.partition("?")
        uri = str(self.model.http["requestUri"]).partition("?")[0]
        path = uri.replace("{Bucket}", bucket).replace("{Key+}", key)
        return path + sep + query

    def all(self) -> list[Case]:
        found = [self.case("baseline", "required-members")]
        shape = self.shape
        if shape is None:
            return found
        if "Bucket" in shape.members and self.model.name != "CreateBucket":  # it would then exist
            found.append(
                self.case("no-such-bucket", "baseline", {**self.params, "Bucket": self.missing_bucket})
            )
        found += self.label_cases()
        method, target, headers, body = self.request(self.params)
        path, _, query = target.partition("?")
        for name in shape.required_members:
            member = shape.members[name]
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "uri":
                blank = {"Bucket": "", "Key": ""}
                labels = (
                    blank[n] if n == name else quote(str(self.params.get(n, "")), safe="/")
                    for n in ("Bucket", "Key")
                )
                found.append(self.case("missing-required", name, target=self.label_target(*labels)))
            elif location == "header":
                kept = [(k, v) for k, v in headers if k.lower() != wire.lower()]
                found.append(self.case("missing-required", name, headers=kept))
            elif location == "querystring":
                kept_query = [q for q in query.split("&") if q.split("=", 1)[0] != wire]
                found.append(self.case("missing-required", name, target=path + "?" + "&".join(kept_query)))
            else:
                found.append(self.case("missing-required", name, body=b"", digest=False))
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location == "querystring" and member.type_name != "map":
                found += self.query_cases(name, member)
            elif location == "header":
                found += self.header_cases(name, member)
        payload = shape.serialization.get("payload")
        if payload is not None and shape.members[payload].type_name == "structure":
            found += self.xml_cases(payload, shape.members[payload])
        elif payload is not None and shape.members[payload].type_name == "string":
            found += [
                self.case("json-document", f"{payload}:variant{i}", body=d.encode())
                for i, d in enumerate(JSON_DOCUMENTS)
            ]
            found.append(self.case("invalid-utf8", f"{payload}:body", body=b"{\xff\xfe}"))
        elif payload is not None and shape.members[payload].type_name == "blob":
            found += self.streaming_cases()
        if payload is not None or any("location" not in m.serialization for m in shape.members.values()):
            found.append(
                self.case(
                    "bad-digest",
                    "Content-MD5",
                    headers=[*self.request(self.params)[2], ("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")],
                    body=b"<x/>",
                )
            )
        return found

    def streaming_cases(self) -> list[Case]:
        """aws-chunked bodies whose framing lies, and declared payload hashes that are wrong."""
        _, _, headers, _ = self.request(self.params)
        found: list[Case] = []
        for detail, declared, body, length in STREAMING_BODIES:
            chunked = [
                *headers,
                ("Content-Encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", length),
                ("x-amz-trailer", "x-amz-checksum-crc32"),
            ]
            found.append(
                Case(
                    "s3", self.model.name, "aws-chunked", detail, self.model.http["method"],
                    self.request(self.params)[1], tuple(chunked), body, payload_hash=declared,
                )
            )  # fmt: skip
        for detail, name, value in (  # presigned: these headers are not covered by the signature
            ("sha256-latin1", "x-amz-content-sha256", "\xe9" * 64),
            ("sha256-not-hex", "x-amz-content-sha256", "z" * 64),
            ("sha256-other-bytes", "x-amz-content-sha256", hashlib.sha256(b"other").hexdigest()),
            ("sha256-streaming", "x-amz-content-sha256", _TRAILER),
            ("md5-latin1", "Content-MD5", "\xe9" * 24),
            ("crc32-latin1", "x-amz-checksum-crc32", "\xe9" * 8),
            ("decoded-length-garbage", "x-amz-decoded-content-length", "-1"),
        ):
            target = self.request(self.params)[1]
            found.append(
                Case(
                    "s3", self.model.name, "presigned", detail, self.model.http["method"], target,
                    ((name, value),), b"fuzz", presigned=True,
                )
            )  # fmt: skip
        for detail, declared in (
            ("not-a-hash", "zz"),
            ("other-bytes", hashlib.sha256(b"other").hexdigest()),
            ("uppercase", hashlib.sha256(b"fuzz").hexdigest().upper()),
            ("ecdsa", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"),
        ):
            case = self.case("payload-hash", detail, body=b"fuzz")
            found.append(replace(case, payload_hash=declared))
        return found

    def label_cases(self) -> list[Case]:
        found: list[Case] = []
        labels = set(re.findall(r"\{(\w+)\+?\}", self.model.http["requestUri"]))
        key = quote("fuzz-key", safe="/")
        if "Key" in labels:
            for detail, raw in (
                ("nul", "a%00b"),
                ("control-chars", "a%01%1B%7Fb"),
                ("invalid-utf8", INVALID_UTF8),
                ("dot-segments", "../../etc/passwd"),
                ("encoded-dot-segments", "%2E%2E%2F%2E%2E%2Fx"),
                ("huge-string", "k" * 2000),
                ("bad-escape", "a%zzb%"),
            ):
                found.append(self.case("key-label", detail, target=self.label_target(self.bucket, raw)))
        if "Bucket" in labels:
            for detail, raw in (
                ("uppercase", "Fuzz_Bucket"),
                ("too-long", "b" * 300),
                ("dots", ".."),
                ("nul", "b%00b"),
                ("invalid-utf8", INVALID_UTF8),
                ("ip-address", "192.168.1.1"),
            ):
                found.append(self.case("bucket-label", detail, target=self.label_target(raw, key)))
        return found

    def query_cases(self, name: str, member: Shape) -> list[Case]:
        wire = member.serialization.get("name", name)
        method, target, headers, body = self.request(self.params)
        path, _, query = target.partition("?")
        kept = [q for q in query.split("&") if q and q.split("=", 1)[0] != wire]
        found: list[Case] = []
        for kind, detail, value in scalar_mutations(
            name, member.member if member.type_name == "list" else member, True
        ):
            encoded = value if isinstance(value, Raw) else quote(value, safe="")
            found.append(
                self.case(
                    kind, f"{name}:{detail}", target=path + "?" + "&".join([*kept, f"{wire}={encoded}"])
                )
            )
        found.append(
            self.case("duplicate", name, target=path + "?" + "&".join([*kept, f"{wire}=1", f"{wire}=2"]))
        )
        return found

    def header_cases(self, name: str, member: Shape) -> list[Case]:
        wire = member.serialization.get("name", name)
        _, _, headers, _ = self.request(self.params)
        kept = [(k, v) for k, v in headers if k.lower() != wire.lower()]
        found: list[Case] = []
        scalar = member.member if member.type_name == "list" else member
        for kind, detail, value in scalar_mutations(name, scalar, True):
            if kind == "invalid-utf8":
                value = "\xff\xfe\xc0\xaf"  # as latin-1 bytes on the wire
            elif kind == "control-chars":
                value = CONTROL.replace("\r", "").replace("\n", "")  # a line break would end the header
            elif kind == "weird-unicode":
                continue  # a header is Latin-1 text
            found.append(self.case(kind, f"{name}:{detail}", headers=[*kept, (wire, value)]))
        found.append(self.case("duplicate", name, headers=[*kept, (wire, "fuzz-a"), (wire, "fuzz-b")]))
        return found

    def xml_cases(self, payload: str, member: Shape) -> list[Case]:
        rich = self.baseline_params(full=True)
        _, _, _, document = self.request(rich)
        found = [self.case("xml-body", "all-members", rich)]
        found.append(self.case("xml-body", "truncated", body=document[: len(document) // 2]))
        found.append(self.case("xml-body", "empty", body=b""))
        found += [self.case("xml-body", name, body=body) for name, body in _XML_VARIANTS.items()]
        found.append(
            self.case("xml-body", "huge-text", body=document.replace(b">fuzz<", b">" + b"A" * HUGE + b"<", 1))
        )
        found.append(self.case("xml-body", "nul-char-ref", body=document.replace(b">fuzz<", b">&#0;<", 1)))
        for element, shape in _xml_leaves(member, member.serialization.get("name", payload)):
            values = BAD_VALUES.get(shape.type_name, ())[:3] + (
                ("NotAnEnumValue",) if shape.metadata.get("enum") else ()
            )
            for value in values:
                bad = re.sub(
                    rb"<" + element.encode() + rb">[^<]*</" + element.encode() + rb">",
                    b"<"
                    + element.encode()
                    + b">"
                    + value.encode("utf-8", "replace")
                    + b"</"
                    + element.encode()
                    + b">",
                    document,
                    count=1,
                )
                if bad != document:
                    found.append(self.case("xml-wrong-type", f"{element}:{value!r}"[:60], body=bad))
        for path in _xml_lists(member, payload):
            params = copy.deepcopy(rich)
            holder = params
            for part in path[:-1]:
                holder = holder[part]
            holder[path[-1]] = holder[path[-1]] * 1001
            found.append(self.case("too-many-items", ".".join(path[1:]), params))
        return found


def _xml_leaves(shape: Shape, name: str, depth: int = 0) -> Iterator[tuple[str, Shape]]:
    """(element name, shape) of the typed (not free-text) scalar leaves under `shape`."""
    if depth > 4:
        return
    if shape.type_name == "structure":
        for member_name, member in shape.members.items():
            yield from _xml_leaves(member, member.serialization.get("name", member_name), depth + 1)
    elif shape.type_name == "list":
        yield from _xml_leaves(shape.member, shape.member.serialization.get("name", name), depth + 1)
    elif shape.type_name != "string" or shape.metadata.get("enum"):
        yield name, shape


def _xml_lists(shape: Shape, payload: str) -> Iterator[list[str]]:
    """Paths (in the params) to the lists directly in the payload structure."""
    for name, member in shape.members.items():
        if member.type_name == "list":
            yield [payload, name]
