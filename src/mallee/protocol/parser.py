"""Requests in, operation and parameters out: the server side of botocore's request serializers.

One class per wire protocol, each driven only by the botocore service model:

- `QueryRequestParser` (IAM, STS): form parameters `Action=…&UserName=…&Tags.member.1.Key=…`.
- `EC2RequestParser`: the same form encoding with EC2's naming (`queryName`, capitalised
  `locationName`) and lists always written `Name.N`.
- `RestXmlRequestParser` (S3): the operation is found from the method and URI template; members
  come from URI labels, the query string, headers and an XML or raw payload.

The result is the dict a botocore client was given (`{"UserName": "bob", "Tags": [...]}`), so
handlers are written against the same names as the AWS documentation. Every client mistake is
raised as a `CloudError`; nothing else escapes, whatever bytes arrive.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape

from mallee.core.context import HttpRequest
from mallee.core.errors import CloudError
from mallee.protocol.restxml_parser import RestXmlRequestParser
from mallee.protocol.scalars import convert_scalar

__all__ = ["parse_request", "QueryRequestParser", "EC2RequestParser", "RestXmlRequestParser"]

# Lists longer than this are refused: AWS's own limits are far lower, and an index like
# `Name.member.99999999999` must not make us allocate or sort anything big.
MAX_LIST_INDEX = 1000
# Recursive shapes exist; no real request nests deeper than this.
MAX_DEPTH = 32

_ABSENT: Any = object()  # a member the request does not carry


def parse_request(
    service: ServiceModel, request: HttpRequest, *, virtual_host_bucket: str | None = None
) -> tuple[OperationModel, dict[str, Any]]:
    """Find the operation `request` invokes and the input parameters it carries.

    `virtual_host_bucket`: for rest-xml (S3), the bucket named by the Host header
    (`bucket.s3.example.com`); the path then starts at the key.
    """
    protocol = service.protocol
    if protocol == "ec2":
        return EC2RequestParser(service).parse(request)
    if protocol == "query":
        return QueryRequestParser(service).parse(request)
    if protocol == "rest-xml":
        return RestXmlRequestParser(service).parse(request, virtual_host_bucket=virtual_host_bucket)
    raise CloudError("UnsupportedProtocol", f"The {protocol} protocol is not supported.")


# -- form-encoded protocols (query, ec2) ---------------------------------------------------------


class _Node:
    """One dotted-key segment of the form parameters: `A.member.1.B=v` → A → member → 1 → B."""

    __slots__ = ("value", "children")

    def __init__(self) -> None:
        self.value: str | None = None
        self.children: dict[str, _Node] = {}

    @classmethod
    def build(cls, params: list[tuple[str, str]]) -> _Node:
        root = cls()
        for key, value in params:
            node = root
            for part in key.split("."):
                child = node.children.get(part)
                if child is None:
                    child = node.children[part] = cls()
                node = child
            if node.value is None:  # a repeated key: the first one wins, as in AWS
                node.value = value
        return root


class _Loc:
    """Where a value sits: its form key (`Tags.member.1.Key`) and AWS's error path (`tags.1.member.key`)."""

    __slots__ = ("wire", "aws")

    def __init__(self, wire: str = "", aws: str = "") -> None:
        self.wire = wire
        self.aws = aws

    def member(self, wire_name: str, member_name: str) -> _Loc:
        aws_name = member_name[:1].lower() + member_name[1:]
        return _Loc(_join(self.wire, wire_name), _join(self.aws, aws_name))

    def item(self, container: str | None, index: int, aws_suffix: str = "member") -> _Loc:
        wire = _join(self.wire, container) if container else self.wire
        return _Loc(f"{wire}.{index}", f"{self.aws}.{index}.{aws_suffix}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class QueryRequestParser:
    """The `query` protocol (IAM, STS): see botocore.serialize.QuerySerializer for the client side."""

    type_error_code = "ValidationError"
    check_patterns = True  # the model's `pattern` traits
    check_enums = True  # the model's `enum` traits

    def __init__(self, service: ServiceModel) -> None:
        self.service = service
        self._violations: list[str] = []

    def parse(self, request: HttpRequest) -> tuple[OperationModel, dict[str, Any]]:
        try:
            params = request.form_params()
        except (UnicodeDecodeError, ValueError):
            raise CloudError(
                "MalformedQueryString", "The request body is not valid UTF-8 form data."
            ) from None
        keys = [key for key, _ in params]
        for name in ("Action", "Version"):  # which operation, in which version: never ambiguous
            if keys.count(name) > 1:
                raise CloudError("InvalidQueryParameter", f"The parameter {name} is given more than once.")
        root = _Node.build(params)
        operation = self._operation(root)
        if operation.input_shape is None:
            return operation, {}
        # Everything not named by the input shape (Version, Signature*, AWSAccessKeyId, Timestamp,
        # X-Amz-*, SecurityToken, DelegateAccount, or a typo) is simply never looked up.
        result = self._structure(operation.input_shape, root, _Loc(), 0)
        self._raise_violations()
        return operation, result

    def _operation(self, root: _Node) -> OperationModel:
        action_node = root.children.get("Action")
        action = action_node.value if action_node is not None else None
        if not action:
            raise CloudError("MissingAction", "The request must contain the parameter Action")
        if action not in self.service.operation_names:
            raise CloudError("InvalidAction", f"The action {action} is not valid for this web service.")
        return self.service.operation_model(action)

    # naming: the parts that differ between query and ec2

    def wire_name(self, member_name: str, member: Shape) -> str:
        if member.type_name == "list" and member.serialization.get("flattened"):
            # A flattened list whose items have a locationName is keyed by that name.
            item_name = member.member.serialization.get("name")
            return str(item_name or member.serialization.get("name", member_name))
        return str(member.serialization.get("name", member_name))

    def list_items(self, shape: Shape, node: _Node) -> tuple[str | None, _Node | None]:
        """The node whose numbered children are the list's items, and its key segment."""
        if shape.serialization.get("flattened"):
            return None, node
        container = shape.member.serialization.get("name", "member")
        return container, node.children.get(container)

    # walking the shapes

    def _value(self, shape: Shape, node: _Node, loc: _Loc, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CloudError(self.type_error_code, f"Parameter {loc.wire} is nested too deeply.")
        kind = shape.type_name
        if kind == "structure":
            value: Any = self._structure(shape, node, loc, depth)
        elif kind == "list":
            value = self._list(shape, node, loc, depth)
        elif kind == "map":
            value = self._map(shape, node, loc, depth)
        elif node.value is None:
            return _ABSENT  # `Name.x=1` without `Name`: not this member
        else:
            value = self._scalar(shape, node.value, loc)
        if value is not _ABSENT:
            self.check_constraints(shape, value, loc)
        return value

    def _structure(self, shape: Shape, node: _Node, loc: _Loc, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, member in shape.members.items():
            wire = self.wire_name(name, member)
            child = node.children.get(wire)
            if child is None:
                continue
            value = self._value(member, child, loc.member(wire, name), depth + 1)
            if value is not _ABSENT:
                result[name] = value
        for name in shape.required_members:
            # An empty list (`Name=`) does not give a required member: `InstanceId=` never means all.
            if name not in result or result[name] == []:
                self.missing(loc.member(self.wire_name(name, shape.members[name]), name))
        return result

    def _list(self, shape: Shape, node: _Node, loc: _Loc, depth: int) -> Any:
        container, items = self.list_items(shape, node)
        if items is None or not items.children:
            # The query protocol writes an empty list as `Name=`.
            return [] if node.value is not None else _ABSENT
        values = [
            self._value(shape.member, child, loc.item(container, index), depth + 1)
            for index, child in self._numbered(items, loc)
        ]
        return [value for value in values if value is not _ABSENT]

    def _map(self, shape: Shape, node: _Node, loc: _Loc, depth: int) -> Any:
        entries = node if shape.serialization.get("flattened") else node.children.get("entry")
        if entries is None or not entries.children:
            return {} if node.value is not None else _ABSENT
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        result: dict[str, Any] = {}
        for index, entry in self._numbered(entries, loc):
            entry_loc = loc.item("entry", index, "entry")
            key_node = entry.children.get(key_name)
            if key_node is None or key_node.value is None:
                self.missing(entry_loc.member(key_name, "key"))
                continue
            key = self._value(shape.key, key_node, entry_loc.member(key_name, "key"), depth + 1)
            value_node = entry.children.get(value_name)
            value = _ABSENT
            if value_node is not None:
                value = self._value(shape.value, value_node, entry_loc.member(value_name, "value"), depth + 1)
            if value is _ABSENT:
                self.missing(entry_loc.member(value_name, "value"))
                continue
            result[key] = value
        return result

    def _numbered(self, node: _Node, loc: _Loc) -> list[tuple[int, _Node]]:
        """`node`'s children as (index, child), sorted; any other child is a client error."""
        numbered = []
        for key, child in node.children.items():
            if not (key.isascii() and key.isdigit()) or len(key) > 4 or not 1 <= int(key) <= MAX_LIST_INDEX:
                raise CloudError(
                    self.type_error_code,
                    f"Invalid list index '{key}' in parameter {loc.wire}: "
                    f"expected an integer from 1 to {MAX_LIST_INDEX}.",
                )
            numbered.append((int(key), child))
        numbered.sort(key=lambda pair: pair[0])
        return numbered

    def _scalar(self, shape: Shape, raw: str, loc: _Loc) -> Any:
        try:
            return convert_scalar(shape, raw)
        except ValueError as exc:
            raise CloudError(self.type_error_code, self.type_message(raw, loc, str(exc))) from None

    # error reporting: AWS's wording for the query protocol

    def type_message(self, raw: str, loc: _Loc, expected: str) -> str:
        return (
            f"1 validation error detected: Value '{raw}' at '{loc.aws}' failed to satisfy "
            f"constraint: Member must be {expected}"
        )

    def missing(self, loc: _Loc) -> None:
        self._violations.append(
            f"Value null at '{loc.aws}' failed to satisfy constraint: Member must not be null"
        )

    def violation(self, shape: Shape, value: Any, loc: _Loc, constraint: str) -> None:
        shown = "*** Sensitive Data Redacted ***" if shape.metadata.get("sensitive") else value
        self._violations.append(f"Value '{shown}' at '{loc.aws}' failed to satisfy constraint: {constraint}")

    def _raise_violations(self) -> None:
        if self._violations:
            count = len(self._violations)
            noun = "error" if count == 1 else "errors"
            raise CloudError(
                "ValidationError", f"{count} validation {noun} detected: " + "; ".join(self._violations)
            )

    def check_constraints(self, shape: Shape, value: Any, loc: _Loc) -> None:
        """Check the model's min/max/pattern/enum traits, reporting each violation."""
        meta = shape.metadata
        kind = shape.type_name
        if kind in ("string", "list", "map", "blob"):
            size = len(value)
            if "min" in meta and size < meta["min"]:
                self.violation(
                    shape, value, loc, f"Member must have length greater than or equal to {meta['min']}"
                )
            if "max" in meta and size > meta["max"]:
                self.violation(
                    shape, value, loc, f"Member must have length less than or equal to {meta['max']}"
                )
        elif kind in ("integer", "long", "float", "double"):
            if "min" in meta and value < meta["min"]:
                self.violation(
                    shape, value, loc, f"Member must have value greater than or equal to {meta['min']}"
                )
            if "max" in meta and value > meta["max"]:
                self.violation(
                    shape, value, loc, f"Member must have value less than or equal to {meta['max']}"
                )
        if kind != "string":
            return
        pattern = _compiled(meta.get("pattern")) if self.check_patterns else None
        if pattern is not None and not pattern.fullmatch(value):
            self.violation(
                shape, value, loc, f"Member must satisfy regular expression pattern: {meta['pattern']}"
            )
        enum = meta.get("enum") if self.check_enums else None
        if enum and value not in enum:
            self.violation(shape, value, loc, f"Member must satisfy enum value set: [{', '.join(enum)}]")


class EC2RequestParser(QueryRequestParser):
    """The `ec2` protocol: see botocore.serialize.EC2Serializer for the client side.

    Errors differ from the query protocol: EC2 answers the first problem only, with
    MissingParameter or InvalidParameterValue.
    """

    type_error_code = "InvalidParameterValue"
    # EC2's models carry few patterns, and their enums (instance types…) lag behind what EC2
    # accepts; the handlers validate those values with EC2's own error codes.
    check_patterns = False
    check_enums = False

    def wire_name(self, member_name: str, member: Shape) -> str:
        if "queryName" in member.serialization:
            return str(member.serialization["queryName"])
        name = member.serialization.get("name")
        if name:
            return str(name[0].upper() + name[1:])
        return member_name

    def list_items(self, shape: Shape, node: _Node) -> tuple[str | None, _Node | None]:
        return None, node  # EC2 lists are always `Name.N`

    def type_message(self, raw: str, loc: _Loc, expected: str) -> str:
        return f"Value ({raw}) for parameter {loc.wire} is invalid. Expected {expected}."

    def missing(self, loc: _Loc) -> None:
        raise CloudError("MissingParameter", f"The request must contain the parameter {loc.wire}")

    def violation(self, shape: Shape, value: Any, loc: _Loc, constraint: str) -> None:
        shown = "***" if shape.metadata.get("sensitive") else value
        raise CloudError(
            "InvalidParameterValue", f"Value ({shown}) for parameter {loc.wire} is invalid. {constraint}."
        )


_PATTERNS: dict[str, re.Pattern[str] | None] = {}


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    """The model's regular expression, compiled once; None when Python cannot compile it."""
    if pattern is None:
        return None
    if pattern not in _PATTERNS:
        try:
            _PATTERNS[pattern] = re.compile(pattern)
        except re.error:
            _PATTERNS[pattern] = None  # a Java-only construct: skip the check rather than fail
    return _PATTERNS[pattern]
