"""The fuzz suite's cases (issue 19): what one malformed request is, and the bad values it is
made of. support/fuzz_query.py and support/fuzz_s3.py spoil each operation of the service models
with them (support/fuzz_post.py: S3's browser-based uploads, no botocore operation),
support/fuzz_cases.py gathers every case (or a fixed sample), and support/fuzz_check.py sends and
judges them.

For each operation of ec2, iam, sts (form-encoded query protocols) and s3 (rest-xml), a plausible
request is built from the operation's input shape (its required members filled in) and then
spoiled one way at a time: a required member left out, a value of the wrong type, huge, with
control characters, a NUL or bytes that are not UTF-8, integers at and past their limits, an enum
value that is not one, list indexes of 0 or past any limit, too many items, a parameter given
twice, and for S3 bodies XML that is truncated, rooted wrongly, declares entities, is not UTF-8 or
nests too deeply (and JSON documents, where a member carries one, broken the same ways).
Deterministic: the same seed gives the same cases.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.model import Shape

SEED = 19
SERVICES = ("ec2", "iam", "sts", "s3")
HUGE = 100 * 1024  # a huge string: 100 KB
CONTROL = "a\x01\x02\x07\x08\x0b\x0c\x1b[31m\x7f\t\r\nz"
# Percent-encoded bytes that are not UTF-8: a lone continuation byte, an overlong '/', a surrogate.
INVALID_UTF8 = "%FF%FE%C0%AF%ED%A0%80"
WEIRD_UNICODE = "\u202e\ufeff\U0001d54f\u0301\uffff"
# Cases per operation in the sample (CI) mode: many for the operations Mallee implements (their
# handlers see what gets through the parser), a few for the others (EC2 has 865 operations; the
# parser they share is the same, and they answer NotImplemented).
SAMPLE_IMPLEMENTED = 60
SAMPLE_PER_OPERATION = {"ec2": 4, "iam": 6, "sts": 12, "s3": 12}
# Eucalyptus-style administrative extensions: signed by the cloud's administrator (the only
# caller that may run them); everything else by a fresh account, so that requests that succeed
# change nothing the other tests see.
ADMIN_OPERATIONS = frozenset(
    {
        "ec2:DescribeServices",
        "ec2:ModifyInstanceTypeAttribute",
        "ec2:RegisterNode",
        "ec2:RegisterCluster",
        "ec2:RegisterStorageController",
        "ec2:DescribeNodes",
        "ec2:ModifyNodeMaintenance",
        "ec2:EvacuateNode",
        "ec2:DeregisterNode",
        "iam:CreateAccount",
        "iam:ListAccounts",
        "iam:DeleteAccount",
        "iam:PutAccountQuota",
        "iam:ListAccountUsage",
    }
)
# Baseline members that keep a request that gets through the parser from changing anything the
# other tests see: RegisterNode, RegisterCluster and RegisterStorageController of a host that is no
# host name (a spoiled Zone, even an empty one that means the default zone, must not register a node
# the cluster then polls for good, nor a zone, nor a zone's storage controller); the
# other node operations name a node that is none (no node of the shared cloud is put in
# maintenance, evacuated or deregistered).
_NO_NODE = {"Node": "fuzz is no host:1"}
BASELINE_EXTRAS: dict[str, dict[str, str]] = {
    "ec2:RegisterNode": {"Host": "fuzz is no host", "Zone": "fuzz-no-such-zone"},
    "ec2:RegisterCluster": {"Host": "fuzz is no host", "Zone": "fuzz-no-such-zone"},
    "ec2:RegisterStorageController": {"Host": "fuzz is no host", "Zone": "fuzz-no-such-zone"},
    "ec2:ModifyNodeMaintenance": _NO_NODE,
    "ec2:EvacuateNode": _NO_NODE,
    "ec2:DeregisterNode": _NO_NODE,
}
# The administrator's requests name other things than the fresh account's (whose alias may
# become "fuzz": an account is found by its alias, and DeleteAccount must not find it).
ADMIN_WORD = "fuzz-admin-only"

_INT_VALUES = (
    "-1",
    "0",
    "2147483648",
    "-2147483649",
    str(2**63),
    str(-(2**63) - 1),
    "9" * 40,
    "1e999",
    "1.5",
    "0x10",
    " 7",
)
BAD_VALUES = {
    "integer": ("notanint", *_INT_VALUES),
    "long": ("notalong", *_INT_VALUES),
    "boolean": ("notabool", "1", "yes", "TRUE "),
    "float": ("notafloat", "1e999", "--1", "0x1p3"),
    "double": ("notadouble", "-1e999", "1.2.3", "nan"),
    "timestamp": (
        "not-a-time",
        "2026-13-45T25:61:61Z",
        "9" * 30,
        "-1e999",
        "0000-00-00T00:00:00Z",
        "Mon, 99 Foo 2026 00:00:00 GMT",
    ),
    "blob": ("!!!not base64!!!", "QQ=", "\x00"),
}
JSON_DOCUMENTS = (
    "{",
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"',
    "[" * 50_000 + "]" * 50_000,
    '{"Statement": ' + "[" * 1000 + "]" * 1000 + "}",  # deep, yet within IAM's 2 KB inline limit
    '{"Statement": ' + '{"a": ' * 1000 + "1" + "}" * 1001,
    '{"a":' * 20_000 + "1" + "}" * 20_000,
    "null",
    "[]",
    '"just a string"',
    "12345",
    '{"Version": 1, "Statement": {"Effect": ["Allow"], "Action": 5, "Resource": null}}',
    '{"Version": "2012-10-17", "Statement": [1, "two", null, []]}',
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*",'
    ' "Condition": {"StringEquals": {"aws:x": {"nested": [1, {"a": null}]}}, "Bogus": 7}}]}',
    '{"Version": "2012-10-17", "Statement": [{"Sid": ' + "1" * 5000 + "}]}",
    '{"Version": "2012-10-17", "Version": "2008-10-17", "Statement": []}',
    '{"Statement": [{"Effect": "Allow", "Action": "\\ud800", "Resource": "\\u0000"}]}',
    '{"Statement": [{"Effect": "Deny", "NotAction": [], "NotResource": [], "Principal": {"AWS": []}}]}',
)


class Raw(str):
    """Form or query text sent as it is (already percent-encoded): bytes that are not UTF-8."""


@dataclass(frozen=True)
class Case:
    service: str
    operation: str  # "-": a case about the service's requests in general
    kind: str
    detail: str
    method: str = "POST"
    target: str = "/"  # path and query, exactly as sent
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    admin: bool = False  # signed by the cloud's administrator
    signed: bool = True  # False: sent as it is (its headers carry their own, broken, signature)
    payload_hash: str = ""  # S3: the x-amz-content-sha256 to declare (and sign), if not the body's
    presigned: bool = False  # S3: signed in the query string (its headers are not signed)

    @property
    def name(self) -> str:
        return f"{self.service}:{self.operation}:{self.kind}:{self.detail}"


def sample(found: list[Case], count: int, rng: random.Random) -> list[Case]:
    """`count` cases of as many different kinds as possible, chosen by `rng`."""
    by_kind: dict[str, list[Case]] = {}
    for case in found:
        by_kind.setdefault(case.kind, []).append(case)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    chosen: list[Case] = []
    taken: set[Case] = set()  # the same as `chosen`, to look in
    while len(chosen) < min(count, len(found)):
        for kind in kinds:
            left = [c for c in by_kind[kind] if c not in taken]
            if left and len(chosen) < count:
                chosen.append(rng.choice(left))
                taken.add(chosen[-1])
    return chosen


# -- values ---------------------------------------------------------------------------------------


def _fit(text: str, shape: Shape) -> str:
    low, high = int(shape.metadata.get("min", 0)), int(shape.metadata.get("max", len(text)))
    return (text + "x" * max(0, low - len(text)))[: max(high, low, 1)]


def text_baseline(shape: Shape, depth: int = 0, full: bool = False, word: str = "fuzz") -> Any:
    """A plausible value of `shape` in wire text (its required members, or all of them if `full`;
    strings are `word`)."""
    kind = shape.type_name
    if kind == "structure":
        if depth > 4:
            return {}
        names = list(shape.members) if full else shape.required_members
        return {n: text_baseline(shape.members[n], depth + 1, full, word) for n in names}
    if kind == "list":
        return [text_baseline(shape.member, depth + 1, full, word)]
    if kind == "map":
        return {
            text_baseline(shape.key, depth + 1, word=word): text_baseline(shape.value, depth + 1, full, word)
        }
    if kind == "string":
        enum = shape.metadata.get("enum")
        return str(enum[0]) if enum else _fit(word, shape)
    if kind in ("integer", "long"):
        return str(max(1, shape.metadata.get("min", 1)))
    return {
        "boolean": "true",
        "float": "1.5",
        "double": "1.5",
        "timestamp": "2026-01-01T00:00:00Z",
        "blob": base64.b64encode(b"fuzz").decode(),
    }.get(kind, "fuzz")


def typed_baseline(shape: Shape, depth: int = 0, full: bool = False) -> Any:
    """The same as a botocore client would be given it (ints, booleans, datetimes, bytes)."""
    kind = shape.type_name
    if kind == "structure":
        if depth > 4:
            return {}
        names = list(shape.members) if full else shape.required_members
        return {n: typed_baseline(shape.members[n], depth + 1, full) for n in names}
    if kind == "list":
        return [typed_baseline(shape.member, depth + 1, full)]
    if kind == "map":
        return {str(text_baseline(shape.key)): typed_baseline(shape.value, depth + 1, full)}
    if kind in ("integer", "long"):
        return max(1, shape.metadata.get("min", 1))
    if kind == "boolean":
        return True
    if kind in ("float", "double"):
        return 1.5
    if kind == "timestamp":
        return datetime(2026, 1, 1, tzinfo=UTC)
    if kind == "blob":
        return b"fuzz"
    return text_baseline(shape)


def is_json_document(name: str, shape: Shape) -> bool:
    return shape.type_name == "string" and (
        "policy" in shape.name.lower() or name.endswith(("Policy", "PolicyDocument", "Document"))
    )


def scalar_mutations(name: str, shape: Shape, top: bool) -> list[tuple[str, str, str]]:
    """(kind, detail, wire text) for a scalar member: every bad value its type invites."""
    found = [
        ("wrong-type", f"{shape.type_name}:{value!r}"[:60], value)
        for value in BAD_VALUES.get(shape.type_name, ())
    ]
    if shape.type_name in ("integer", "long"):
        found = [("extreme-int" if v in _INT_VALUES else k, d, v) for k, d, v in found]
    if shape.type_name in ("string", "blob") or top:
        found += [
            ("huge-string", "100KB", "A" * HUGE),
            ("control-chars", "C0+DEL", CONTROL),
            ("nul", "embedded", "a\x00b"),
            ("invalid-utf8", "percent-bytes", Raw(INVALID_UTF8)),
            ("weird-unicode", "bidi+bom+astral", WEIRD_UNICODE),
            ("empty", "empty", ""),
        ]
    if shape.metadata.get("enum"):
        found += [
            ("invalid-enum", "NotAnEnumValue", "NotAnEnumValue"),
            ("invalid-enum", "case", shape.metadata["enum"][0].upper() + "x"),
        ]
    if is_json_document(name, shape):
        found += [("json-document", f"variant{i}", doc) for i, doc in enumerate(JSON_DOCUMENTS)]
    return found
