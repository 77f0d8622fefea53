"""The fuzz suite's cases for the query protocols (ec2, iam, sts): form-encoded bodies
`Action=…&Version=…&Member=…`, named as botocore's query and ec2 serializers name them, each with
one member spoiled (see support/fuzz.py)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from botocore.model import OperationModel, Shape

from mallee.protocol.specs import load_service
from support.fuzz import (
    ADMIN_OPERATIONS,
    ADMIN_WORD,
    BASELINE_EXTRAS,
    HUGE,
    INVALID_UTF8,
    Case,
    Raw,
    scalar_mutations,
    text_baseline,
)


@lru_cache(maxsize=1 << 16)
def _quoted(text: str) -> str:
    """`text` percent-encoded for a form body (the same few names and values recur in every case)."""
    return quote(text, safe="")


class QueryCases:
    """Form-encoded bodies: `Action=…&Version=…&Member=…`, named as botocore's query and ec2
    serializers name them."""

    def __init__(self, service: str, model: OperationModel) -> None:
        self.service = service
        self.model = model
        self.ec2 = service == "ec2"
        self.admin = f"{service}:{model.name}" in ADMIN_OPERATIONS
        shape = model.input_shape
        baseline = (
            text_baseline(shape, word=ADMIN_WORD if self.admin else "fuzz") if shape is not None else {}
        )
        baseline.update(BASELINE_EXTRAS.get(f"{service}:{model.name}", {}))
        self.baseline = self.encode(shape, baseline, "") if shape is not None else []

    def wire_name(self, name: str, member: Shape) -> str:
        if self.ec2:
            if "queryName" in member.serialization:
                return str(member.serialization["queryName"])
            located = member.serialization.get("name")
            return str(located[0].upper() + located[1:]) if located else name
        if member.type_name == "list" and member.serialization.get("flattened"):
            return str(member.member.serialization.get("name") or member.serialization.get("name", name))
        return str(member.serialization.get("name", name))

    def item(self, shape: Shape, prefix: str, index: int | str) -> str:
        if self.ec2 or shape.serialization.get("flattened"):
            return f"{prefix}.{index}"
        return f"{prefix}.{shape.member.serialization.get('name', 'member')}.{index}"

    def entry(self, shape: Shape, prefix: str, index: int | str) -> tuple[str, str, str]:
        base = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key, value = (
            shape.key.serialization.get("name", "key"),
            shape.value.serialization.get("name", "value"),
        )
        return f"{base}.{index}", key, value

    def encode(self, shape: Shape, value: Any, prefix: str) -> list[tuple[str, str]]:
        """The form pairs of `value` (text leaves), as botocore would write them."""
        kind = shape.type_name
        if kind == "structure":
            pairs: list[tuple[str, str]] = []
            for name, member in shape.members.items():
                if name in value:
                    wire = self.wire_name(name, member)
                    pairs += self.encode(member, value[name], f"{prefix}.{wire}" if prefix else wire)
            return pairs
        if kind == "list":
            if not value:
                return [(prefix, "")]
            return [
                p
                for i, v in enumerate(value, 1)
                for p in self.encode(shape.member, v, self.item(shape, prefix, i))
            ]
        if kind == "map":
            pairs = []
            for i, (k, v) in enumerate(value.items(), 1):
                base, key_name, value_name = self.entry(shape, prefix, i)
                pairs.append((f"{base}.{key_name}", k))
                pairs += self.encode(shape.value, v, f"{base}.{value_name}")
            return pairs
        return [(prefix, value)]

    def case(self, kind: str, detail: str, pairs: list[tuple[str, str]]) -> Case:
        head = [("Action", self.model.name), ("Version", self.model.metadata["apiVersion"])]
        body = "&".join(
            (k if isinstance(k, Raw) else _quoted(k)) + "=" + (v if isinstance(v, Raw) else _quoted(v))
            for k, v in head + pairs
        )
        return Case(
            self.service, self.model.name, kind, detail, body=body.encode("latin-1"), admin=self.admin
        )

    def replaced(self, key: str, value: str) -> list[tuple[str, str]]:
        """The baseline with `key` (and anything under it) replaced by `key=value`."""
        kept = [(k, v) for k, v in self.baseline if k != key and not k.startswith(key + ".")]
        return kept + [(key, value)]

    def slots(self, shape: Shape, prefix: str, depth: int) -> Iterator[tuple[str, str, Shape, bool]]:
        """(wire key, member name, shape, is required) of every member to spoil, to 3 levels."""
        for name, member in shape.members.items():
            wire = self.wire_name(name, member)
            key = f"{prefix}.{wire}" if prefix else wire
            yield key, name, member, name in shape.required_members
            if depth >= 2:
                continue
            if member.type_name == "structure":
                yield from self.slots(member, key, depth + 1)
            elif member.type_name == "list" and member.member.type_name == "structure":
                yield from self.slots(member.member, self.item(member, key, 1), depth + 1)

    def all(self) -> list[Case]:
        shape = self.model.input_shape
        found = [self.case("baseline", "required-members", list(self.baseline))]
        if shape is None:
            return found + [self.case("unexpected-member", "Bogus", [("Bogus.1.x", "y")])]
        for key, name, member, required in self.slots(shape, "", 0):
            top = "." not in key
            if required and top:
                kept = [(k, v) for k, v in self.baseline if k != key and not k.startswith(key + ".")]
                found.append(self.case("missing-required", name, kept))
            if member.type_name == "structure":
                found.append(self.case("wrong-type", f"{name}:scalar-for-structure", self.replaced(key, "x")))
            elif member.type_name == "list":
                found += self.list_cases(name, member, key)
            elif member.type_name == "map":
                base, key_name, value_name = self.entry(member, key, 1)
                found.append(
                    self.case(
                        "map-entry",
                        f"{name}:no-value",
                        self.replaced(key, "") + [(f"{base}.{key_name}", "k")],
                    )
                )
                found.append(
                    self.case("map-entry", f"{name}:no-key", [*self.baseline, (f"{base}.{value_name}", "v")])
                )
            else:
                for kind, detail, value in scalar_mutations(name, member, top):
                    if kind == "huge-string" and not top:
                        continue
                    found.append(self.case(kind, f"{name}:{detail}", self.replaced(key, value)))
                if top:
                    found.append(
                        self.case("duplicate", name, [*self.baseline, (key, "fuzz-a"), (key, "fuzz-b")])
                    )
        return found

    def list_cases(self, name: str, shape: Shape, key: str) -> list[Case]:
        leaf = shape.member.type_name not in ("structure", "list", "map")
        value = "fuzz" if leaf else None

        def items(indexes: list[str]) -> list[tuple[str, str]]:
            kept = [(k, v) for k, v in self.baseline if k != key and not k.startswith(key + ".")]
            if value is not None:
                return kept + [(self.item(shape, key, i), value) for i in indexes]
            return kept + [(self.item(shape, key, i) + ".X", "fuzz") for i in indexes]

        found = [
            self.case("list-index", f"{name}:0", items(["0"])),
            self.case("list-index", f"{name}:huge", items(["99999999999999999999"])),
            self.case("list-index", f"{name}:negative", items(["-1"])),
            self.case("list-index", f"{name}:not-a-number", items(["x%00"])),
            self.case("list-index", f"{name}:sparse", items(["1", "1000"])),
            self.case("too-many-items", f"{name}:1001", items([str(i) for i in range(1, 1002)])),
            self.case("empty", f"{name}:empty-list", self.replaced(key, "")),
        ]
        if leaf:
            found.append(self.case("duplicate", f"{name}:item", items(["1", "1"])))
        return found


def general_cases(service: str) -> list[Case]:
    """Cases about a query service's requests rather than one operation."""
    if service == "s3":
        return []
    version = load_service(service).api_version
    bodies = {
        "no-action": f"Version={version}",
        "empty-action": f"Action=&Version={version}",
        "unknown-action": f"Action=NoSuchOperation&Version={version}",
        "nul-action": f"Action=Describe%00Regions&Version={version}",
        "invalid-utf8-action": f"Action={INVALID_UTF8}&Version={version}",
        "huge-action": "Action=" + "A" * HUGE + f"&Version={version}",
        "wrong-version": "Action=GetCallerIdentity&Version=1999-01-01",
        "no-version": "Action=GetCallerIdentity",
        "only-separators": "&&&===&&%%%",
        "binary": "".join(f"%{b:02X}" for b in range(256)),
        "deep-key": "Action=GetCallerIdentity&" + ".".join(["A"] * 5000) + "=1",
        "huge-key": "Action=GetCallerIdentity&" + "K" * HUGE + "=1",
        "many-params": "Action=GetCallerIdentity&" + "&".join(f"P{i}=v" for i in range(20_000)),
    }
    found = [
        Case(service, "-", "general", name, body=Raw(text).encode("latin-1")) for name, text in bodies.items()
    ]
    found.append(
        Case(
            service,
            "-",
            "general",
            "json-body",
            headers=(("Content-Type", "application/x-amz-json-1.1"),),
            body=b'{"Action": "GetCallerIdentity"}',
        )
    )
    found.append(Case(service, "-", "general", "get-query", method="GET", target="/?Action=%FF&Version=%00"))
    return found
