"""The `rest-xml` protocol (S3), request side: see botocore.serialize.RestXMLSerializer.

The operation is the one whose HTTP method and `requestUri` template match the request. S3
reuses paths heavily (`PUT /{Bucket}/{Key+}` is PutObject, UploadPart, CopyObject and
UploadPartCopy), so among matching templates the most specific wins: the one needing the most
query keys (`?uploads`, `?list-type=2`), required query members (`uploadId`) and required headers
(`x-amz-copy-source`). Members then come from the URI labels, query string, headers and body.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from botocore.model import OperationModel, ServiceModel, Shape

from mallee.core.context import HttpRequest
from mallee.core.errors import CloudError
from mallee.protocol.scalars import convert_scalar
from mallee.protocol.xmlcodec import XmlError, local_name, parse_xml

# Operations that lose a tie with an equally specific one: S3 Express (directory bucket) twins
# of the general-purpose operations. Deprecated operations lose ties too.
DEMOTED_OPERATIONS = frozenset({"ListDirectoryBuckets"})
_LABEL_RE = re.compile(r"\{([^}]+)\}")
# A header whose value is not one of its model's enum is refused (not ignored); S3 names a few of
# these errors itself, the rest are InvalidArgument.
_ENUM_ERRORS = {
    "x-amz-storage-class": ("InvalidStorageClass", "The storage class you specified is not valid")
}
_MAX_XML_DEPTH = 32
# A streamed (large) request whose payload is parsed (XML, or a string such as a bucket policy) is
# read up to this size; a bigger one is refused. DeleteObjects with 1000 long keys is about 1.1 MiB.
MAX_PARSED_BODY = 2 * 1024 * 1024


@dataclass(frozen=True)
class Route:
    """One operation's `http` trait, ready for matching."""

    operation: OperationModel
    method: str
    path: re.Pattern[str]
    labels: dict[str, str]  # regex group → URI label name (without the greedy '+')
    query: tuple[tuple[str, str | None], ...]  # fixed query keys of the template (`?list-type=2`)
    required_query: tuple[str, ...]  # query keys of required querystring members
    required_headers: tuple[str, ...]  # header names of required header members
    rank: tuple[int, int]  # (specificity, not demoted): the highest matching rank wins
    query_keys: frozenset[str]  # every query key the route requires: `candidates` filters on it
    binding: Binding | None  # where the input members come from; None: the operation has no input

    def matches(self, path: str, query: dict[str, list[str]], request: HttpRequest) -> bool:
        return self.match(path, query, request) is not None

    def match(self, path: str, query: dict[str, list[str]], request: HttpRequest) -> re.Match[str] | None:
        """The path's match (the parser reads the labels from it) when the request fits, else None."""
        for key, value in self.query:  # the cheap tests first: most routes fail one of them
            if key not in query or (value is not None and value not in query[key]):
                return None
        if all(key in query for key in self.required_query) and all(
            name in request.headers for name in self.required_headers
        ):
            return self.path.fullmatch(path)
        return None


class Binding:
    """Where each member of an operation's input comes from, worked out once per operation rather
    than by walking the input shape's members on every request."""

    def __init__(
        self, shape: Shape, labels: dict[str, str], fixed_query: tuple[tuple[str, str | None], ...]
    ) -> None:
        members = shape.members
        by_label = {
            member.serialization.get("name", name): name
            for name, member in members.items()
            if member.serialization.get("location") == "uri"
        }
        # (regex group, member name, member shape, label), in the template's order
        self.labels = tuple(
            (group, by_label[label], members[by_label[label]], label)
            for group, label in labels.items()
            if label in by_label
        )
        query: list[tuple[str, str, Shape]] = []  # (member name, query key, member shape)
        # (member, header name or lower-cased prefix, the same lower-cased, shape, is prefix)
        headers: list[tuple[str, str, str, Shape, bool]] = []
        self.query_map: str | None = None  # the map member that takes the unclaimed query keys
        bound = {key for key, _ in fixed_query}
        for name, member in members.items():
            location = member.serialization.get("location")
            if location == "querystring":
                if member.type_name == "map":
                    self.query_map = name
                    continue
                key = member.serialization.get("name", name)
                bound.add(key)
                query.append((name, key, member))
            elif location == "header":
                header = member.serialization.get("name", name)
                headers.append((name, header, header.lower(), member, False))
            elif location == "headers":
                prefix = member.serialization.get("name", "").lower()
                headers.append((name, prefix, prefix, member, True))
        self.query = tuple(query)
        self.query_bound = frozenset(bound)  # keys the map member does not take
        self.headers = tuple(headers)
        self.payload: str | None = shape.serialization.get("payload")
        self.payload_type = members[self.payload].type_name if self.payload is not None else None
        self.payload_required = self.payload is not None and self.payload in shape.required_members
        self.has_body_members = any("location" not in m.serialization for m in members.values())
        self.shape = shape


def _route(operation: OperationModel) -> Route:
    uri = operation.http.get("requestUri", "/")
    path_template, _, query_template = uri.partition("?")
    labels: dict[str, str] = {}
    pattern = ""
    position = 0
    for index, match in enumerate(_LABEL_RE.finditer(path_template)):
        pattern += re.escape(path_template[position : match.start()])
        name = match.group(1)
        group = f"g{index}"
        labels[group] = name.rstrip("+")
        pattern += f"(?P<{group}>.+)" if name.endswith("+") else f"(?P<{group}>[^/]+)"
        position = match.end()
    pattern += re.escape(path_template[position:])
    if path_template.endswith("}") and not path_template.endswith("+}"):
        pattern += "/?"  # `/bucket/` is the bucket too
    query = tuple(
        (key, value if sep else None)
        for key, sep, value in (part.partition("=") for part in query_template.split("&") if part)
    )
    shape = operation.input_shape
    required_query: list[str] = []
    required_headers: list[str] = []
    if shape is not None:
        for name in shape.required_members:
            member = shape.members[name]
            location = member.serialization.get("location")
            if location == "querystring":
                required_query.append(member.serialization.get("name", name))
            elif location == "header":
                required_headers.append(member.serialization.get("name", name))
    demoted = operation.deprecated or operation.name in DEMOTED_OPERATIONS
    specificity = len(query) + len(required_query) + len(required_headers)
    return Route(
        operation,
        operation.http.get("method", "POST").upper(),
        re.compile(pattern, re.DOTALL),
        labels,
        query,
        tuple(required_query),
        tuple(required_headers),
        (specificity, 0 if demoted else 1),
        frozenset(key for key, _ in query).union(required_query),
        Binding(shape, labels, query) if shape is not None else None,
    )


@functools.lru_cache(maxsize=32)
def routes(service: ServiceModel) -> tuple[Route, ...]:
    return tuple(_route(service.operation_model(name)) for name in service.operation_names)


@functools.lru_cache(maxsize=32)
def routes_by_method(service: ServiceModel) -> dict[str, tuple[Route, ...]]:
    """Each HTTP method's routes, highest rank first; equal ranks keep the model's order (a stable
    sort), so the first match is the one `max(matching, key=rank)` would pick."""
    by_method: dict[str, list[Route]] = {}
    for route in routes(service):
        by_method.setdefault(route.method, []).append(route)
    return {method: tuple(sorted(rs, key=lambda r: r.rank, reverse=True)) for method, rs in by_method.items()}


@functools.lru_cache(maxsize=256)
def candidates(service: ServiceModel, method: str, query_keys: frozenset[str]) -> tuple[Route, ...]:
    """`routes_by_method`, less the routes that need a query key the request lacks (a GetObject
    need not be tried against the 40 GET routes of `?acl`, `?tagging`...). Same order."""
    return tuple(r for r in routes_by_method(service).get(method, ()) if r.query_keys <= query_keys)


class RestXmlRequestParser:
    """Finds the operation and binds labels, query string, headers and payload to its input."""

    def __init__(self, service: ServiceModel) -> None:
        self.service = service

    def parse(
        self, request: HttpRequest, *, virtual_host_bucket: str | None = None
    ) -> tuple[OperationModel, dict[str, Any]]:
        path = request.raw_path or "/"
        if virtual_host_bucket:
            # Virtual-hosted style: the bucket came in the Host header; put it back in the path.
            path = "/" + quote(virtual_host_bucket, safe="") + (path if path != "/" else "")
        query: dict[str, list[str]] = {}
        for key, value in request.query_params():
            query.setdefault(key, []).append(value)
        route, path_match = self._match(request, path, query)
        binding = route.binding
        if binding is None:
            return route.operation, {}
        params: dict[str, Any] = {}
        self._bind_labels(binding, path_match, params)
        self._bind_query(binding, query, params)
        self._bind_headers(binding, request, params)
        self._bind_body(binding, _read_parsed_body(binding, request), params)
        return route.operation, params

    def _match(
        self, request: HttpRequest, path: str, query: dict[str, list[str]]
    ) -> tuple[Route, re.Match[str]]:
        for route in candidates(self.service, request.method.upper(), frozenset(query)):
            path_match = route.match(path, query, request)
            if path_match is not None:
                return route, path_match
        if any(r.matches(path, query, request) for r in routes(self.service)):  # with another method
            raise CloudError("MethodNotAllowed", "The specified method is not allowed against this resource.")
        if path.startswith("//"):  # an empty bucket name, not an operation we lack
            raise CloudError("InvalidBucketName", "The specified bucket is not valid.")
        raise CloudError(
            "NotImplemented", "A header or query you provided requested a function that is not implemented."
        )

    # locations

    def _bind_labels(self, binding: Binding, path_match: re.Match[str], params: dict[str, Any]) -> None:
        for group, name, member, label in binding.labels:
            try:
                raw = unquote(path_match.group(group), errors="strict")
            except UnicodeDecodeError:
                raise CloudError("InvalidURI", "Couldn't parse the specified URI.") from None
            params[name] = self._convert(member, raw, label, "iso8601")

    def _bind_query(self, binding: Binding, query: dict[str, list[str]], params: dict[str, Any]) -> None:
        if query:
            for name, key, member in binding.query:
                if key not in query:
                    continue
                if member.type_name == "list":
                    _check_enum(member.member, key, query[key])
                    params[name] = [self._convert(member.member, v, key, "iso8601") for v in query[key]]
                else:
                    _check_enum(member, key, query[key][:1])
                    params[name] = self._convert(member, query[key][0], key, "iso8601")
        if binding.query_map is not None:  # takes whatever no other member claims
            rest = {key: values[0] for key, values in query.items() if key not in binding.query_bound}
            if rest:
                params[binding.query_map] = rest

    def _bind_headers(self, binding: Binding, request: HttpRequest, params: dict[str, Any]) -> None:
        headers = request.headers
        first = headers.first_values()  # `headers.get` for PutObject's 40 header members, cheaper
        for name, header, key, member, is_prefix in binding.headers:
            if is_prefix:  # location "headers": every header starting with the prefix
                values = {k[len(key) :]: v for k, v in headers if k.startswith(key) and k != key}
                if values:
                    params[name] = values
                continue
            raw = first.get(key)
            if raw is None:
                continue
            enum = member.metadata.get("enum")
            if enum and raw not in enum:
                code, message = _ENUM_ERRORS.get(
                    key, ("InvalidArgument", f"Invalid value for {header}: {raw!r}.")
                )
                raise CloudError(code, message)
            if member.type_name == "list":
                items = [item.strip() for item in raw.split(",")]
                _check_enum(member.member, header, items)
                params[name] = [self._convert(member.member, item, header, "rfc822") for item in items]
            else:
                params[name] = self._convert(member, raw, header, "rfc822")

    def _bind_body(self, binding: Binding, body: bytes, params: dict[str, Any]) -> None:
        payload = binding.payload
        if payload is not None:
            if binding.payload_type == "blob":
                if body:
                    params[payload] = body  # raw bytes: an object's content is never parsed
            elif binding.payload_type == "string":
                if body:
                    try:
                        params[payload] = body.decode("utf-8")
                    except UnicodeDecodeError:
                        raise CloudError("InvalidArgument", "The request body is not valid UTF-8.") from None
            elif body.strip():
                member = binding.shape.members[payload]
                params[payload] = XmlBodyReader().read(member, self._xml_root(body), 0)
            elif binding.payload_required:
                raise CloudError("MissingRequestBodyError", "Request Body is empty")
            return
        if binding.has_body_members and body.strip():
            params.update(XmlBodyReader().read(binding.shape, self._xml_root(body), 0))

    @staticmethod
    def _xml_root(body: bytes) -> ET.Element:
        try:
            return parse_xml(body)
        except XmlError:
            raise CloudError(
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema",
            ) from None

    @staticmethod
    def _convert(shape: Shape, raw: str, where: str, timestamp_format: str) -> Any:
        if shape.type_name == "string":
            return raw  # what convert_scalar would return, without the calls
        try:
            if shape.type_name == "timestamp":
                return convert_scalar(
                    shape, raw, shape.serialization.get("timestampFormat", timestamp_format)
                )
            return convert_scalar(shape, raw)
        except ValueError as exc:
            raise CloudError("InvalidArgument", f"Invalid value for {where}: expected {exc}.") from None


def _check_enum(shape: Shape, where: str, values: list[str]) -> None:
    """A query parameter or list header item outside its model's enum is refused, as S3 refuses
    `encoding-type=foo` (InvalidArgument), not ignored."""
    enum = shape.metadata.get("enum")
    if enum:
        for value in values:
            if value not in enum:
                raise CloudError("InvalidArgument", f"Invalid value for {where}: {value!r}.")


def _read_parsed_body(binding: Binding, request: HttpRequest) -> bytes:
    """The body, when the operation parses it: read from the request's stream when the front door
    streamed it (too big to read whole there) and kept in `request.body` for the handler."""
    if request.body or request.stream is None:
        return request.body
    if binding.payload is not None:
        if binding.payload_type == "blob":
            return b""  # an object's content: the handler streams it
    elif not binding.has_body_members:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = request.stream.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_PARSED_BODY:
            raise CloudError(  # S3's name for it
                "MaxMessageLengthExceeded",
                f"Your request was too big: this operation accepts {MAX_PARSED_BODY} bytes at most.",
            )
        chunks.append(chunk)
    request.body = b"".join(chunks)
    return request.body


class XmlBodyReader:
    """An XML element → the member values of a shape (botocore's XML response parser, mirrored)."""

    def read(self, shape: Shape, element: ET.Element, depth: int) -> Any:
        if depth > _MAX_XML_DEPTH:
            raise self._malformed()
        kind = shape.type_name
        if kind == "structure":
            return self._structure(shape, element, depth)
        if kind == "list":
            item_name = shape.member.serialization.get("name", "member")
            return [
                self.read(shape.member, child, depth + 1)
                for child in element
                if local_name(child.tag) == item_name
            ]
        if kind == "map":
            return self._map(shape, [child for child in element if local_name(child.tag) == "entry"], depth)
        try:
            return convert_scalar(shape, element.text or "")
        except ValueError:
            raise self._malformed() from None

    def _structure(self, shape: Shape, element: ET.Element, depth: int) -> dict[str, Any]:
        children: dict[str, list[ET.Element]] = {}
        for child in element:
            children.setdefault(local_name(child.tag), []).append(child)
        attributes = {local_name(key): value for key, value in element.attrib.items()}
        result: dict[str, Any] = {}
        for name, member in shape.members.items():
            xml_name = member.serialization.get("name", name)
            if member.serialization.get("xmlAttribute"):
                if local_name(xml_name) in attributes:
                    result[name] = attributes[local_name(xml_name)]
                continue
            flattened = member.serialization.get("flattened")
            if flattened and member.type_name == "list":
                nodes = children.get(member.member.serialization.get("name", xml_name), [])
                if nodes:
                    result[name] = [self.read(member.member, node, depth + 1) for node in nodes]
            elif flattened and member.type_name == "map":
                if xml_name in children:
                    result[name] = self._map(member, children[xml_name], depth)
            elif xml_name in children:
                result[name] = self.read(member, children[xml_name][0], depth + 1)
        body_required = (
            n for n in shape.required_members if "location" not in shape.members[n].serialization
        )
        if any(name not in result for name in body_required):
            raise self._malformed()
        return result

    def _map(self, shape: Shape, entries: list[ET.Element], depth: int) -> dict[str, Any]:
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        result: dict[str, Any] = {}
        for entry in entries:
            parts = {local_name(child.tag): child for child in entry}
            if key_name not in parts or value_name not in parts:
                raise self._malformed()
            key = self.read(shape.key, parts[key_name], depth + 1)
            result[key] = self.read(shape.value, parts[value_name], depth + 1)
        return result

    @staticmethod
    def _malformed() -> CloudError:
        return CloudError(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
