"""Operation results out: the server side of botocore's response parsers.

One class per wire protocol, driven by the operation's output shape:

- `QueryResponseSerializer` (IAM, STS): `<XResponse><XResult>…</XResult><ResponseMetadata>…`.
- `EC2ResponseSerializer`: `<XResponse><requestId/>…members…</XResponse>`, EC2's error envelope.
- `RestXmlResponseSerializer` (S3): header members as headers, the payload (or the body members)
  as the body, S3's `<Error>` document.

Handlers return plain dicts keyed by the model's member names; members missing from the dict are
left out, keys the shape does not know are ignored.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape

from mallee.core.context import FileBody, HttpResponse
from mallee.core.errors import CloudError
from mallee.protocol.scalars import format_scalar
from mallee.protocol.xmlcodec import Element

__all__ = [
    "serialize_response",
    "serialize_error",
    "QueryResponseSerializer",
    "EC2ResponseSerializer",
    "RestXmlResponseSerializer",
]

# botocore's S3 model does not name the root element of bodies without a payload member (its
# parser ignores the root); real S3 uses these. Operations not listed get `<OperationName>Result`.
S3_ROOT_ELEMENTS = {
    "ListBuckets": "ListAllMyBucketsResult",
    "ListDirectoryBuckets": "ListAllMyDirectoryBucketsResult",
    "ListObjects": "ListBucketResult",
    "ListObjectsV2": "ListBucketResult",
    "ListObjectVersions": "ListVersionsResult",
    "ListMultipartUploads": "ListMultipartUploadsResult",
    "ListParts": "ListPartsResult",
    "CreateMultipartUpload": "InitiateMultipartUploadResult",
    "CompleteMultipartUpload": "CompleteMultipartUploadResult",
    "DeleteObjects": "DeleteResult",
    "GetBucketAcl": "AccessControlPolicy",
    "GetObjectAcl": "AccessControlPolicy",
    "GetBucketTagging": "Tagging",
    "GetObjectTagging": "Tagging",
    "GetBucketVersioning": "VersioningConfiguration",
    "GetBucketLocation": "LocationConstraint",
    "GetBucketCors": "CORSConfiguration",
    "GetBucketLifecycleConfiguration": "LifecycleConfiguration",
    "GetBucketLifecycle": "LifecycleConfiguration",
    "GetBucketLogging": "BucketLoggingStatus",
    "GetBucketNotificationConfiguration": "NotificationConfiguration",
    "GetBucketNotification": "NotificationConfiguration",
    "GetBucketWebsite": "WebsiteConfiguration",
    "GetBucketAccelerateConfiguration": "AccelerateConfiguration",
    "GetBucketRequestPayment": "RequestPaymentConfiguration",
    "GetObjectAttributes": "GetObjectAttributesResponse",
}
_BODY_LOCATIONS = (None, "")


def serialize_response(
    service: ServiceModel, operation: OperationModel, output: Mapping[str, Any], request_id: str
) -> HttpResponse:
    """The HTTP response a botocore client parses back into `output`."""
    return _serializer(service).serialize(operation, output, request_id)


def serialize_error(
    service: ServiceModel, error: CloudError, request_id: str, *, resource: str | None = None
) -> HttpResponse:
    """The protocol's error document for `error` (status: `error.status`).

    `resource`: for rest-xml, the bucket or object the error is about (S3's `<Resource>`).
    """
    return _serializer(service).serialize_error(error, request_id, resource=resource)


def _serializer(service: ServiceModel) -> QueryResponseSerializer | RestXmlResponseSerializer:
    protocol = service.protocol
    if protocol == "ec2":
        return EC2ResponseSerializer(service)
    if protocol == "query":
        return QueryResponseSerializer(service)
    if protocol == "rest-xml":
        return RestXmlResponseSerializer(service)
    raise ValueError(f"unsupported protocol {protocol!r}")


class XmlShapeWriter:
    """Writes values as XML elements the way botocore's XML response parser reads them back."""

    def write(self, shape: Shape, value: Any, parent: Element, name: str) -> None:
        kind = shape.type_name
        if kind == "structure":
            element = parent.add(name)
            if "xmlNamespace" in shape.serialization:
                self.namespace(shape, element)
            self.members(shape, value, element)
        elif kind == "list":
            if shape.serialization.get("flattened"):
                for item in value:
                    self.write(shape.member, item, parent, name)
                return
            element = parent.add(name)
            if "xmlNamespace" in shape.serialization:
                self.namespace(shape, element)
            item_name = shape.member.serialization.get("name", "member")
            for item in value:
                self.write(shape.member, item, element, item_name)
        elif kind == "map":
            self.map(shape, value, parent, name)
        else:
            # A string is written as is: what format_scalar would do, without the calls.
            element = parent.add(name, str(value) if kind == "string" else format_scalar(shape, value))
            if "xmlNamespace" in shape.serialization:
                self.namespace(shape, element)

    def members(self, shape: Shape, value: Mapping[str, Any], element: Element) -> None:
        """Write the body members of structure `shape` found in `value` into `element`."""
        members = _body_members(shape)
        # The value's keys, not the shape's members (an EC2 Instance has 60), in shape order.
        # (keys(): a value that is not a mapping fails as it did with value.get.)
        found = sorted(members[k] for k in members.keys() & value.keys())
        for _, name, member, xml_name, attribute, item_name in found:
            member_value = value[name]
            if member_value is None:
                continue
            if attribute:
                element.attrs[xml_name] = format_scalar(member, member_value)
            elif item_name is not None:
                # botocore reads a flattened list's items under the item's own locationName.
                for item in member_value:
                    self.write(member.member, item, element, item_name)
            else:
                self.write(member, member_value, element, xml_name)

    def map(self, shape: Shape, value: Mapping[str, Any], parent: Element, name: str) -> None:
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        flattened = shape.serialization.get("flattened")
        container = parent if flattened else parent.add(name)
        for key, item in value.items():
            entry = container.add(name if flattened else "entry")
            self.write(shape.key, key, entry, key_name)
            self.write(shape.value, item, entry, value_name)

    @staticmethod
    def namespace(shape: Shape, element: Element) -> None:
        namespace = shape.serialization.get("xmlNamespace")
        if isinstance(namespace, dict):
            prefix = namespace.get("prefix")
            element.attrs["xmlns:" + prefix if prefix else "xmlns"] = namespace.get("uri", "")
        elif isinstance(namespace, str):
            element.attrs["xmlns"] = namespace


def service_namespace(service: ServiceModel, scheme: str) -> str:
    """The XML namespace of a service's answers: the model's, else AWS's `doc/<version>/` URL
    (https for the query services, http for S3, as each answers)."""
    metadata = service.metadata
    return str(
        metadata.get("xmlNamespace")
        or f"{scheme}://{metadata['endpointPrefix']}.amazonaws.com/doc/{metadata['apiVersion']}/"
    )


class QueryResponseSerializer:
    """The `query` protocol (IAM, STS): see botocore.parsers.QueryParser for the client side."""

    content_type = "text/xml"

    def __init__(self, service: ServiceModel) -> None:
        self.service = service
        self.writer = XmlShapeWriter()

    @property
    def namespace(self) -> str:
        return service_namespace(self.service, "https")

    def serialize(
        self, operation: OperationModel, output: Mapping[str, Any], request_id: str
    ) -> HttpResponse:
        root = Element(f"{operation.name}Response", attrs={"xmlns": self.namespace})
        self.body(operation, output, request_id, root)
        return self.response(200, root, request_id)

    def body(
        self, operation: OperationModel, output: Mapping[str, Any], request_id: str, root: Element
    ) -> None:
        shape = operation.output_shape
        if shape is not None:
            wrapper = shape.serialization.get("resultWrapper")
            self.writer.members(shape, output, root.add(wrapper) if wrapper else root)
        root.add("ResponseMetadata").add("RequestId", request_id)

    def serialize_error(
        self, error: CloudError, request_id: str, *, resource: str | None = None
    ) -> HttpResponse:
        root = Element("ErrorResponse", attrs={"xmlns": self.namespace})
        detail = root.add("Error")
        detail.add("Type", "Receiver" if error.status >= 500 else "Sender")
        detail.add("Code", error.code)
        detail.add("Message", error.message)
        root.add("RequestId", request_id)
        return self.response(error.status, root, request_id)

    def response(self, status: int, root: Element, request_id: str) -> HttpResponse:
        headers = [("Content-Type", self.content_type), ("x-amzn-RequestId", request_id)]
        return HttpResponse(status, headers, root.to_bytes())


class EC2ResponseSerializer(QueryResponseSerializer):
    """The `ec2` protocol: see botocore.parsers.EC2QueryParser for the client side."""

    @property
    def namespace(self) -> str:
        # The model says `http://ec2.amazonaws.com/doc/2016-11-15`; EC2 itself ends it with '/'.
        return super().namespace.rstrip("/") + "/"

    def body(
        self, operation: OperationModel, output: Mapping[str, Any], request_id: str, root: Element
    ) -> None:
        root.add("requestId", request_id)
        if operation.output_shape is not None:
            self.writer.members(operation.output_shape, output, root)

    def serialize_error(
        self, error: CloudError, request_id: str, *, resource: str | None = None
    ) -> HttpResponse:
        root = Element("Response")
        detail = root.add("Errors").add("Error")
        detail.add("Code", error.code)
        detail.add("Message", error.message)
        root.add("RequestID", request_id)
        return self.response(error.status, root, request_id)


# A handler may answer with another success status than the operation's (S3 GetObject with a Range
# answers 206): it sets this key in its output.
STATUS_OVERRIDE = "$status"
# What no header value can carry (uvicorn refuses to send it): C0 controls but tab, DEL, non-Latin-1.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


class RestXmlResponseSerializer:
    """The `rest-xml` protocol (S3): see botocore.parsers.RestXMLParser for the client side."""

    def __init__(self, service: ServiceModel) -> None:
        self.service = service
        self.writer = XmlShapeWriter()

    @property
    def namespace(self) -> str:
        return service_namespace(self.service, "http")

    def serialize(
        self, operation: OperationModel, output: Mapping[str, Any], request_id: str
    ) -> HttpResponse:
        status = int(operation.http.get("responseCode", 200))
        headers: list[tuple[str, str]] = []
        body = b""
        files: tuple[FileBody, ...] = ()
        content_type = "application/xml"
        shape = operation.output_shape
        if shape is not None:
            status = self.headers(shape, output, headers) or status
            status = int(output.get(STATUS_OVERRIDE, status))
            payload = shape.serialization.get("payload")
            value = output.get(payload) if payload is not None else None
            if isinstance(value, FileBody) or (
                isinstance(value, tuple) and all(isinstance(v, FileBody) for v in value)
            ):
                # Streamed from files by the app (an object, or a multipart object's parts).
                files = value if isinstance(value, tuple) else (value,)
                content_type = "binary/octet-stream"
            elif payload is not None:
                body, content_type = self.payload(shape.members[payload], payload, output.get(payload))
            elif len(_non_body_members(shape)) < len(shape.members):  # it has body members
                body = self.document(operation, shape, output).to_bytes()
        # Only a body gets a default type: botocore reports a Content-Type header as the output's
        # ContentType member (HeadObject), so an invented one would misstate the object's type.
        if (body or files) and not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", content_type))
        headers.append(("x-amz-request-id", request_id))
        return HttpResponse(status, headers, body, files)

    def headers(self, shape: Shape, output: Mapping[str, Any], headers: list[tuple[str, str]]) -> int | None:
        """Append the header members to `headers`; return a `statusCode` member's value if any."""
        status = None
        members = _non_body_members(shape)
        # The output's few keys, not the shape's many members (GetObject has 45), in shape order.
        found = sorted(members[k] for k in members.keys() & output.keys())
        for _, name, member, location, wire, plain in found:
            value = output[name]
            if value is None:
                continue
            if location == "statusCode":
                status = int(value)
            elif location == "headers":
                headers.extend((wire + str(key), _header_safe(str(v))) for key, v in value.items())
            elif location == "header":
                text = str(value) if plain else self.header_value(member, value)
                headers.append((wire, _header_safe(text)))
        return status

    @staticmethod
    def header_value(shape: Shape, value: Any) -> str:
        if shape.type_name == "list":
            return ",".join(format_scalar(shape.member, item, "rfc822") for item in value)
        if shape.serialization.get("jsonvalue"):
            return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()
        return format_scalar(shape, value, "rfc822")

    def payload(self, member: Shape, name: str, value: Any) -> tuple[bytes, str]:
        """The body for the payload member: raw for blobs and strings, else an XML document."""
        if member.type_name == "blob":
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
            return data, "binary/octet-stream"
        if member.type_name == "string":
            return (value or "").encode("utf-8"), "text/plain"
        if value is None:
            return b"", "application/xml"
        root = Element("")  # a throwaway parent: `write` adds the real root under it
        self.writer.write(member, value, root, member.serialization.get("name", name))
        document = root.children[0]
        document.attrs.setdefault("xmlns", self.namespace)
        return document.to_bytes(), "application/xml"

    def document(self, operation: OperationModel, shape: Shape, output: Mapping[str, Any]) -> Element:
        """The XML body of an output without a payload member: its body members under one root."""
        root_name = shape.serialization.get("name") or S3_ROOT_ELEMENTS.get(
            operation.name, f"{operation.name}Result"
        )
        root = Element(root_name, attrs={"xmlns": self.namespace})
        body_members = [
            n for n, m in shape.members.items() if m.serialization.get("location") in _BODY_LOCATIONS
        ]
        only = shape.members[body_members[0]] if len(body_members) == 1 else None
        if only is not None and only.serialization.get("name", body_members[0]) == root_name:
            # GetBucketLocation: the document *is* the member: <LocationConstraint>eu-west-1</…>.
            if output.get(body_members[0]) is not None:
                root.text = format_scalar(only, output[body_members[0]])
            return root
        self.writer.members(shape, output, root)
        return root

    def serialize_error(
        self, error: CloudError, request_id: str, *, resource: str | None = None
    ) -> HttpResponse:
        if error.status == 304:  # Not Modified has no body: one would be read as the next response
            return HttpResponse(304, [("x-amz-request-id", request_id)], b"")
        root = Element("Error")
        root.add("Code", error.code)
        root.add("Message", error.message)
        for name, value in error.details.items():
            root.add(name, value)
        if resource is not None:
            root.add("Resource", resource)
        root.add("RequestId", request_id)
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        return HttpResponse(error.status, headers, root.to_bytes())


@functools.lru_cache(maxsize=4096)
def _body_members(shape: Shape) -> dict[str, tuple[int, str, Shape, str, bool, str | None]]:
    """name -> (position, name, member, XML name, is an attribute, flattened list's item name) for
    the body members of a structure, worked out once per shape."""
    members: dict[str, tuple[int, str, Shape, str, bool, str | None]] = {}
    for index, (name, member) in enumerate(shape.members.items()):
        if member.serialization.get("location") not in _BODY_LOCATIONS:
            continue
        xml_name = member.serialization.get("name", name)
        attribute = bool(member.serialization.get("xmlAttribute"))
        item_name = None
        if not attribute and member.type_name == "list" and member.serialization.get("flattened"):
            item_name = member.member.serialization.get("name", xml_name)
        members[name] = (index, name, member, xml_name, attribute, item_name)
    return members


@functools.lru_cache(maxsize=1024)
def _non_body_members(
    shape: Shape,
) -> dict[str, tuple[int, str, Shape, str, str, bool]]:
    """name -> (position, name, member, location, wire name, plain) for the members of an output
    shape that are not in the body; `plain`: a string written as is (what `header_value` does)."""
    members: dict[str, tuple[int, str, Shape, str, str, bool]] = {}
    for index, (name, member) in enumerate(shape.members.items()):
        location = member.serialization.get("location")
        if location in _BODY_LOCATIONS:
            continue
        wire = member.serialization.get("name", "" if location == "headers" else name)
        plain = member.type_name == "string" and not member.serialization.get("jsonvalue")
        members[name] = (index, name, member, location, wire, plain)
    return members


def _header_safe(value: str) -> str:
    """Header values cannot carry line breaks (they would split or smuggle headers); those become
    spaces. Nor can they carry other control characters or characters beyond Latin-1 (such text
    comes from a percent-encoded URL, as a version id the client sent): those values are sent
    RFC 2047-encoded (`=?UTF-8?B?…?=`), as S3 sends non-ASCII metadata."""
    value = value.replace("\r", " ").replace("\n", " ")
    if _HEADER_UNSAFE.search(value) is None:
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8", "replace")).decode("ascii") + "?="
