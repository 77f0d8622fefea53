"""Request parsing, checked against botocore itself: what a client serializes, we parse back.

Two sources of requests: a real botocore client (handlers, parameter validation and all) for the
operations Mallee serves, and botocore's bare serializer for every operation of ec2/iam/sts/s3
(with minimal parameters generated from the model), which also covers our patched operations.
"""

from __future__ import annotations

import base64
import contextlib
import random
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.awsrequest import create_request_object, prepare_request_dict
from botocore.config import Config
from botocore.model import OperationModel, Shape
from botocore.serialize import create_serializer

from mallee.core.context import Headers, HttpRequest
from mallee.core.errors import CloudError
from mallee.protocol.parser import parse_request
from mallee.protocol.specs import load_service

ENDPOINT = "http://localhost:8773"
SERVICES = ("ec2", "iam", "sts", "s3")
WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


class _Captured(Exception):
    """Raised from botocore's before-send hook: the request is built, nothing goes out."""

    def __init__(self, request: Any) -> None:
        super().__init__("captured")
        self.request = request


def _to_http_request(prepared: Any) -> HttpRequest:
    url = urlsplit(prepared.url)
    body = prepared.body or b""
    if hasattr(body, "read"):
        body = body.read()
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = Headers((k, v.decode() if isinstance(v, bytes) else v) for k, v in prepared.headers.items())
    return HttpRequest(prepared.method, url.path or "/", url.query, headers, body)


_CLIENTS: dict[str, Any] = {}


def _client(service: str) -> Any:
    if service not in _CLIENTS:
        client = botocore.session.get_session().create_client(
            service,
            region_name="us-east-1",
            endpoint_url=ENDPOINT,
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="x",
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
        )

        def before_send(request: Any, **_: Any) -> None:
            raise _Captured(request)

        client.meta.events.register("before-send", before_send)
        _CLIENTS[service] = client
    return _CLIENTS[service]


def client_request(service: str, method: str, **params: Any) -> HttpRequest:
    """The request a botocore client sends for `client.<method>(**params)`."""
    with pytest.raises(_Captured) as captured:
        getattr(_client(service), method)(**params)
    return _to_http_request(captured.value.request)


def serializer_request(operation: OperationModel, params: dict[str, Any]) -> HttpRequest:
    """The request botocore's serializer alone builds (no client handlers) for any model."""
    protocol = operation.service_model.protocol
    request_dict = create_serializer(protocol).serialize_to_request(params, operation)
    prepare_request_dict(request_dict, ENDPOINT)
    return _to_http_request(create_request_object(request_dict).prepare())


def parse(service: str, request: HttpRequest, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    operation, params = parse_request(load_service(service), request, **kwargs)
    return operation.name, params


# -- a real client, the operations Mallee serves -------------------------------------------------

CLIENT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("ec2", "DescribeRegions", {}),
    (
        "ec2",
        "DescribeRegions",
        {
            "RegionNames": ["us-east-1", "eu-west-1"],
            "Filters": [
                {"Name": "endpoint", "Values": ["a", "b"]},
                {"Name": "opt-in-status", "Values": ["x"]},
            ],
            "AllRegions": True,
        },
    ),
    ("ec2", "DescribeAvailabilityZones", {"ZoneNames": ["one"], "AllAvailabilityZones": False}),
    (
        "ec2",
        "DescribeInstanceTypes",
        {
            "InstanceTypes": ["m1.small", "t2.micro"],
            "Filters": [{"Name": "vcpu-info.default-vcpus", "Values": ["1"]}],
            "MaxResults": 5,
            "NextToken": "tok",
        },
    ),
    ("ec2", "DescribeAccountAttributes", {"AttributeNames": ["supported-platforms", "default-vpc"]}),
    (
        "ec2",
        "RunInstances",
        {
            "ImageId": "emi-12345678",
            "MinCount": 1,
            "MaxCount": 3,
            "InstanceType": "m1.small",
            "KeyName": "my key",
            "UserData": "#!/bin/sh\necho héllo\n",
            "EbsOptimized": False,
            "DisableApiTermination": True,
            "SecurityGroups": ["default", "web"],
            "Placement": {"AvailabilityZone": "one"},
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 10, "DeleteOnTermination": True}},
                {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            ],
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "Name", "Value": "web"}, {"Key": "a", "Value": ""}],
                }
            ],
            "ClientToken": "token-1",
        },
    ),
    (
        "iam",
        "CreateUser",
        {
            "UserName": "bob",
            "Path": "/eng/",
            "Tags": [{"Key": "team", "Value": "a&b=c"}, {"Key": "k", "Value": "v"}],
        },
    ),
    (
        "iam",
        "PutUserPolicy",
        {
            "UserName": "bob",
            "PolicyName": "all",
            "PolicyDocument": '{"Version":"2012-10-17","Statement":'
            '[{"Effect":"Allow","Action":"*","Resource":"*"}]}',
        },
    ),
    ("iam", "ListUsers", {"Marker": "m+/=", "MaxItems": 10, "PathPrefix": "/"}),
    ("iam", "ListUsers", {}),
    ("iam", "CreateAccessKey", {"UserName": "bob"}),
    ("iam", "CreateAccessKey", {}),
    (
        "iam",
        "UpdateAccessKey",
        {"UserName": "bob", "AccessKeyId": "AKIAIOSFODNN7EXAMPLE", "Status": "Inactive"},
    ),
    ("iam", "AddUserToGroup", {"GroupName": "admins", "UserName": "bob"}),
    ("iam", "GetAccountSummary", {}),
    ("iam", "CreateAccountAlias", {"AccountAlias": "my-account"}),
    ("sts", "GetCallerIdentity", {}),
    ("sts", "GetSessionToken", {"DurationSeconds": 3600}),
    ("sts", "GetSessionToken", {"DurationSeconds": 900, "SerialNumber": "arn:aws:iam::123456789012:mfa/bob"}),
]


@pytest.mark.parametrize(("service", "operation", "params"), CLIENT_CASES)
def test_client_request_round_trip(service: str, operation: str, params: dict[str, Any]) -> None:
    method = botocore.xform_name(operation)
    name, parsed = parse(service, client_request(service, method, **params))
    assert name == operation
    expected = dict(params)
    if operation == "RunInstances":
        # botocore base64-encodes UserData before serializing (EC2 wants it that way).
        expected["UserData"] = base64.b64encode(params["UserData"].encode()).decode()
    assert parsed == expected


def test_run_instances_gets_an_idempotency_token_from_the_client() -> None:
    _, parsed = parse("ec2", client_request("ec2", "run_instances", ImageId="emi-1", MinCount=1, MaxCount=1))
    assert parsed["ClientToken"]
    assert parsed["MinCount"] == 1 and parsed["ImageId"] == "emi-1"


# S3: (client method, params, expected operation, expected params (None: same as params))
S3_CASES: list[tuple[str, dict[str, Any], str, dict[str, Any] | None]] = [
    ("list_buckets", {}, "ListBuckets", None),
    ("create_bucket", {"Bucket": "bkt"}, "CreateBucket", None),
    (
        "create_bucket",
        {"Bucket": "bkt", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}, "ACL": "private"},
        "CreateBucket",
        None,
    ),
    (
        "put_object",
        {
            "Bucket": "bkt",
            "Key": "dir/a b+c%d€.txt",
            "Body": b"\x00hello\xff",
            "Metadata": {"color": "blue", "size": "10"},
            "ContentType": "text/plain",
            "CacheControl": "no-cache",
        },
        "PutObject",
        None,
    ),
    (
        "get_object",
        {"Bucket": "bkt", "Key": "k", "Range": "bytes=0-9", "ResponseContentType": "text/html"},
        "GetObject",
        None,
    ),
    (
        "get_object",
        {"Bucket": "bkt", "Key": "k", "IfModifiedSince": WHEN, "PartNumber": 2},
        "GetObject",
        None,
    ),
    ("head_object", {"Bucket": "bkt", "Key": "a/b/c"}, "HeadObject", None),
    (
        "list_objects_v2",
        {
            "Bucket": "bkt",
            "Prefix": "a/",
            "Delimiter": "/",
            "MaxKeys": 10,
            "ContinuationToken": "t",
            "StartAfter": "s",
        },
        "ListObjectsV2",
        None,
    ),
    ("list_objects", {"Bucket": "bkt", "Marker": "m"}, "ListObjects", None),
    ("create_multipart_upload", {"Bucket": "bkt", "Key": "big"}, "CreateMultipartUpload", None),
    (
        "upload_part",
        {"Bucket": "bkt", "Key": "big", "UploadId": "u1", "PartNumber": 3, "Body": b"p"},
        "UploadPart",
        None,
    ),
    ("list_parts", {"Bucket": "bkt", "Key": "big", "UploadId": "u1"}, "ListParts", None),
    (
        "abort_multipart_upload",
        {"Bucket": "bkt", "Key": "big", "UploadId": "u1"},
        "AbortMultipartUpload",
        None,
    ),
    (
        "complete_multipart_upload",
        {
            "Bucket": "bkt",
            "Key": "big",
            "UploadId": "u1",
            "MultipartUpload": {
                "Parts": [{"ETag": '"e1"', "PartNumber": 1}, {"ETag": '"e2"', "PartNumber": 2}]
            },
        },
        "CompleteMultipartUpload",
        None,
    ),
    (
        "delete_objects",
        {
            "Bucket": "bkt",
            "Delete": {"Objects": [{"Key": "a"}, {"Key": "b<&>", "VersionId": "v"}], "Quiet": True},
        },
        "DeleteObjects",
        None,
    ),
    (
        "put_bucket_tagging",
        {"Bucket": "bkt", "Tagging": {"TagSet": [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": ""}]}},
        "PutBucketTagging",
        None,
    ),
    ("copy_object", {"Bucket": "bkt", "Key": "dst", "CopySource": "src/key"}, "CopyObject", None),
    ("delete_object", {"Bucket": "bkt", "Key": "k"}, "DeleteObject", None),
    ("delete_bucket", {"Bucket": "bkt"}, "DeleteBucket", None),
    ("head_bucket", {"Bucket": "bkt"}, "HeadBucket", None),
    ("get_bucket_acl", {"Bucket": "bkt"}, "GetBucketAcl", None),
    ("get_bucket_location", {"Bucket": "bkt"}, "GetBucketLocation", None),
    ("get_bucket_versioning", {"Bucket": "bkt"}, "GetBucketVersioning", None),
    ("list_multipart_uploads", {"Bucket": "bkt"}, "ListMultipartUploads", None),
]


@pytest.mark.parametrize(("method", "params", "operation", "expected"), S3_CASES)
def test_s3_client_request_round_trip(
    method: str, params: dict[str, Any], operation: str, expected: dict[str, Any] | None
) -> None:
    name, parsed = parse("s3", client_request("s3", method, **params))
    assert name == operation
    # botocore adds checksum / MD5 headers the caller never passed, and HTTP a Content-Length.
    parsed = {
        k: v for k, v in parsed.items() if not k.startswith(("Checksum", "ContentMD5", "ContentLength"))
    }
    expected = dict(expected if expected is not None else params)
    if method.startswith("list_objects"):
        expected["EncodingType"] = "url"  # botocore asks for url-encoded keys, then decodes them
    assert parsed == expected


def test_s3_virtual_host_bucket() -> None:
    request = HttpRequest("GET", "/some/key", "", Headers(), b"")
    assert parse("s3", request, virtual_host_bucket="bkt") == (
        "GetObject",
        {"Bucket": "bkt", "Key": "some/key"},
    )
    request = HttpRequest("GET", "/", "list-type=2", Headers(), b"")
    assert parse("s3", request, virtual_host_bucket="bkt") == ("ListObjectsV2", {"Bucket": "bkt"})


def test_s3_trailing_slash_is_the_bucket() -> None:
    assert parse("s3", HttpRequest("GET", "/bkt/", "", Headers(), b"")) == ("ListObjects", {"Bucket": "bkt"})


# -- botocore's serializer, every operation, minimal parameters ----------------------------------

_CANDIDATES = [
    "x",
    "a",
    "1",
    "A",
    "/",
    "arn:aws:iam::123456789012:user/x",
    "x@example.com",
    "2024-01-01",
    "v1",
]


def _string(shape: Shape) -> str | None:
    """A string satisfying the shape's enum, length and pattern; None if none of ours fits."""
    meta = shape.metadata
    if meta.get("enum"):
        return str(meta["enum"][0])
    low, high = meta.get("min", 1), meta.get("max", 10**6)
    for candidate in _CANDIDATES:
        value = candidate if len(candidate) >= low else (candidate * (low // len(candidate) + 1))[:low]
        if not low <= len(value) <= high:
            continue
        pattern = meta.get("pattern")
        try:
            if pattern is None or re.fullmatch(pattern, value):
                return value
        except re.error:
            return value
    return None


class _Unbuildable(Exception):
    pass


def minimal_value(shape: Shape, depth: int = 0) -> Any:
    """The smallest valid input for `shape`: its required members only, one list item…"""
    if depth > 12:
        raise _Unbuildable("too deep")
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if shape.is_tagged_union:
            names = list(shape.members)[:1]
        else:
            # An empty structure is not serialized at all, so give it one member to be seen.
            names = shape.required_members or _first_visible_member(shape, depth)
        return {name: minimal_value(shape.members[name], depth + 1) for name in names}
    if kind == "list":
        return [minimal_value(shape.member, depth + 1)] * max(1, meta.get("min", 1))
    if kind == "map":
        key = minimal_value(shape.key, depth + 1)
        return {key: minimal_value(shape.value, depth + 1)}
    if kind == "string":
        value = _string(shape)
        if value is None:
            raise _Unbuildable(f"no value for pattern {meta.get('pattern')}")
        return value
    if kind in ("integer", "long"):
        return max(1, meta.get("min", 1))
    if kind in ("float", "double"):
        return 1.5
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return WHEN
    if kind == "blob":
        return b"blob\x00\xff"
    raise _Unbuildable(kind)


def _visible(value: Any) -> bool:
    """Whether botocore serializes `value` at all (it writes nothing for `{}` or `[{}]`)."""
    if isinstance(value, dict):
        return any(_visible(v) for v in value.values())
    if isinstance(value, list):
        return bool(value) and all(_visible(v) for v in value)
    return True


def _first_visible_member(shape: Shape, depth: int) -> list[str]:
    for name, member in shape.members.items():
        if member.serialization.get("location"):
            continue
        try:
            if _visible(minimal_value(member, depth + 1)):
                return [name]
        except _Unbuildable:
            continue
    return []


def _all_operations() -> list[tuple[str, str]]:
    return [(svc, op) for svc in SERVICES for op in load_service(svc).operation_names]


# Operations another one of the same method, URI and required members shadows: they are
# indistinguishable on the wire (AWS keeps the deprecated names for old clients).
S3_SHADOWED = {
    "GetBucketLifecycle": "GetBucketLifecycleConfiguration",
    "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
    "ListDirectoryBuckets": "ListBuckets",
}


@pytest.mark.parametrize(("service", "operation"), _all_operations())
def test_every_operation_round_trips_minimal_params(service: str, operation: str) -> None:
    if service == "s3" and operation in S3_SHADOWED:
        pytest.skip(f"shadowed by {S3_SHADOWED[operation]} (see the routing test)")
    model = load_service(service).operation_model(operation)
    try:
        params = minimal_value(model.input_shape) if model.input_shape is not None else {}
    except _Unbuildable as exc:
        pytest.skip(f"cannot generate input: {exc}")
    name, parsed = parse(service, serializer_request(model, params))
    assert name == operation
    if service == "s3":
        parsed.pop("ContentLength", None)  # set by HTTP for every body, even an empty one
    assert parsed == params


def test_patched_operations_are_in_the_models() -> None:
    ec2 = load_service("ec2")
    request = serializer_request(
        ec2.operation_model("ModifyInstanceTypeAttribute"),
        {"Name": "m1.small", "Cpu": 2, "Memory": 512, "Reset": False},
    )
    assert parse("ec2", request) == (
        "ModifyInstanceTypeAttribute",
        {"Name": "m1.small", "Cpu": 2, "Memory": 512, "Reset": False},
    )
    request = serializer_request(ec2.operation_model("DescribeServices"), {"ServiceName": ["a", "b"]})
    assert request.body and b"ServiceName.1=a" in request.body
    assert parse("ec2", request) == ("DescribeServices", {"ServiceName": ["a", "b"]})
    iam = load_service("iam")
    request = serializer_request(
        iam.operation_model("DeleteAccount"), {"AccountName": "acme", "Recursive": True}
    )
    assert parse("iam", request) == ("DeleteAccount", {"AccountName": "acme", "Recursive": True})
    assert parse("iam", serializer_request(iam.operation_model("ListAccounts"), {})) == ("ListAccounts", {})


# -- errors -------------------------------------------------------------------------------------


def form(service: str, body: str | bytes, query: str = "") -> HttpRequest:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers([("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")])
    return HttpRequest("POST", "/", query, headers, data)


def error(service: str, request: HttpRequest, **kwargs: Any) -> CloudError:
    with pytest.raises(CloudError) as raised:
        parse_request(load_service(service), request, **kwargs)
    return raised.value


def test_missing_and_unknown_action() -> None:
    assert error("iam", form("iam", "Version=2010-05-08")).code == "MissingAction"
    err = error("ec2", form("ec2", "Action=Frobnicate"))
    assert (err.code, err.message) == (
        "InvalidAction",
        "The action Frobnicate is not valid for this web service.",
    )


def test_action_in_the_query_string_and_common_params_are_ignored() -> None:
    request = form(
        "iam", "UserName=bob&Signature=x&AWSAccessKeyId=AK&Timestamp=t&Bogus=1", query="Action=GetUser"
    )
    assert parse("iam", request) == ("GetUser", {"UserName": "bob"})


def test_query_missing_required_uses_aws_wording() -> None:
    err = error("iam", form("iam", "Action=CreateUser"))
    assert err.code == "ValidationError" and err.status == 400
    assert err.message == (
        "1 validation error detected: Value null at 'userName' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_query_constraints() -> None:
    err = error("iam", form("iam", "Action=CreateUser&UserName=" + "x" * 65 + "&Path=nope"))
    assert err.code == "ValidationError"
    assert err.message.startswith("2 validation errors detected: ")
    assert "Member must have length less than or equal to 64" in err.message
    assert (
        "at 'path' failed to satisfy constraint: Member must satisfy regular expression pattern"
        in err.message
    )
    err = error("iam", form("iam", "Action=UpdateAccessKey&AccessKeyId=AKIAIOSFODNN7EXAMPLE&Status=Sleeping"))
    assert "Member must satisfy enum value set: [Active, Inactive" in err.message
    err = error("iam", form("iam", "Action=ListUsers&MaxItems=0"))
    assert (
        "Value '0' at 'maxItems' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1" in err.message
    )
    err = error("iam", form("iam", "Action=CreateUser&UserName=bob&Tags.member.1.Key=k"))
    assert "Value null at 'tags.1.member.value'" in err.message


def test_query_type_errors() -> None:
    err = error("iam", form("iam", "Action=ListUsers&MaxItems=ten"))
    assert err.code == "ValidationError" and "maxItems" in err.message
    err = error("sts", form("sts", "Action=GetSessionToken&DurationSeconds=99999999999999999999999"))
    assert err.code == "ValidationError"


def test_ec2_errors() -> None:
    err = error("ec2", form("ec2", "Action=CreateKeyPair&DryRun=false"))
    assert (err.code, err.message) == ("MissingParameter", "The request must contain the parameter KeyName")
    err = error("ec2", form("ec2", "Action=RunInstances&MinCount=1&MaxCount=1&Monitoring.Foo=x"))
    assert (err.code, err.message) == (
        "MissingParameter",
        "The request must contain the parameter Monitoring.Enabled",
    )
    err = error("ec2", form("ec2", "Action=DescribeRegions&AllRegions=maybe"))
    assert err.code == "InvalidParameterValue" and "AllRegions" in err.message
    err = error("ec2", form("ec2", "Action=DescribeInstanceTypes&MaxResults=3"))
    assert err.code == "InvalidParameterValue" and "MaxResults" in err.message
    err = error("ec2", form("ec2", "Action=ImportKeyPair&KeyName=k&PublicKeyMaterial=%%%not-base64"))
    assert err.code == "InvalidParameterValue" and "PublicKeyMaterial" in err.message


@pytest.mark.parametrize(
    ("service", "body"),
    [
        ("iam", "Action=CreateUser&UserName=bob&Tags.member.abc.Key=k"),
        ("iam", "Action=CreateUser&UserName=bob&Tags.member.0.Key=k&Tags.member.0.Value=v"),
        ("iam", "Action=CreateUser&UserName=bob&Tags.member.99999999999.Key=k"),
        ("iam", "Action=CreateUser&UserName=bob&Tags.member.1001.Key=k&Tags.member.1001.Value=v"),
        ("iam", "Action=CreateUser&UserName=bob&Tags.member.%D9%A3.Key=k"),
        ("ec2", "Action=DescribeRegions&RegionName.-1=x"),
        ("ec2", "Action=DescribeRegions&RegionName.1e3=x"),
        ("ec2", "Action=DescribeRegions&Filter.x.Name=x"),
    ],
)
def test_bad_list_indices(service: str, body: str) -> None:
    assert error(service, form(service, body)).code in ("ValidationError", "InvalidParameterValue")


def test_duplicated_keys_first_wins_and_sparse_indices_keep_order() -> None:
    request = form(
        "ec2", "Action=DescribeRegions&RegionName.5=b&RegionName.2=a&RegionName.2=z&AllRegions=true"
    )
    assert parse("ec2", request) == ("DescribeRegions", {"RegionNames": ["a", "b"], "AllRegions": True})


def test_non_utf8_body() -> None:
    err = error("iam", form("iam", b"Action=ListUsers&PathPrefix=\xff\xfe"))
    assert err.code == "MalformedQueryString"
    # Percent-encoded, the same bytes are refused too, not read as U+FFFD (found by the fuzz suite).
    err = error("ec2", form("ec2", b"Action=DeleteKeyPair&KeyName=k&KeyPairId=%FF%FE"))
    assert err.code == "MalformedQueryString"


def test_s3_routing_prefers_the_most_specific_operation() -> None:
    def op(method: str, path: str, query: str = "", headers: tuple[tuple[str, str], ...] = ()) -> str:
        return parse("s3", HttpRequest(method, path, query, Headers(headers), b""))[0]

    assert op("GET", "/b/k") == "GetObject"
    assert op("GET", "/b/k", "uploadId=u") == "ListParts"
    assert op("PUT", "/b/k") == "PutObject"
    assert op("PUT", "/b/k", "partNumber=1&uploadId=u") == "UploadPart"
    assert op("PUT", "/b/k", "", (("x-amz-copy-source", "a/b"),)) == "CopyObject"
    assert op("PUT", "/b/k", "partNumber=1&uploadId=u", (("x-amz-copy-source", "a/b"),)) == "UploadPartCopy"
    assert op("GET", "/b", "list-type=2") == "ListObjectsV2"
    assert op("GET", "/b", "list-type=1") == "ListObjects"
    assert op("GET", "/b", "acl") == "GetBucketAcl"
    assert op("GET", "/b/k", "acl") == "GetObjectAcl"
    assert op("GET", "/b", "tagging") == "GetBucketTagging"
    assert op("GET", "/b", "lifecycle") == "GetBucketLifecycleConfiguration"
    assert op("GET", "/") == "ListBuckets"
    assert op("POST", "/b/k", "uploads") == "CreateMultipartUpload"
    assert op("POST", "/b/k", "uploadId=u") == "CompleteMultipartUpload"
    assert op("DELETE", "/b/k", "uploadId=u") == "AbortMultipartUpload"


def test_s3_errors() -> None:
    def s3(method: str, path: str, query: str = "", body: bytes = b"") -> CloudError:
        return error("s3", HttpRequest(method, path, query, Headers(), body))

    assert s3("PUT", "/b", "tagging", b"<Tagging><TagSet>").code == "MalformedXML"
    assert s3(
        "PUT", "/b", "tagging", b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>"
    ).code == ("MalformedXML")
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Tagging>&a;</Tagging>'
    assert s3("PUT", "/b", "tagging", doctype).code == "MalformedXML"
    assert s3("PUT", "/b", "tagging").code == "MissingRequestBodyError"
    assert s3("POST", "/b/k").code in ("MethodNotAllowed", "NotImplemented")
    assert s3("GET", "/b/%FF%FE").code == "InvalidURI"
    assert s3("GET", "/b/k", "partNumber=abc").code == "InvalidArgument"
    assert s3("PATCH", "/b/k").code == "MethodNotAllowed"


def test_s3_query_and_list_header_enums_are_checked() -> None:
    """Found by the fuzz suite: `encoding-type=NotAnEnumValue` was accepted (S3: InvalidArgument)."""
    err = error("s3", HttpRequest("GET", "/b", "uploads&encoding-type=NotAnEnumValue", Headers(), b""))
    assert err.code == "InvalidArgument" and "encoding-type" in err.message
    headers = Headers([("x-amz-optional-object-attributes", "RestoreStatus, Bogus")])
    err = error("s3", HttpRequest("GET", "/b", "list-type=2", headers, b""))
    assert err.code == "InvalidArgument" and "x-amz-optional-object-attributes" in err.message
    assert (
        parse("s3", HttpRequest("GET", "/b", "uploads&encoding-type=url", Headers(), b""))[1]["EncodingType"]
        == "url"
    )
    headers = Headers([("x-amz-optional-object-attributes", "RestoreStatus")])
    assert parse("s3", HttpRequest("GET", "/b", "list-type=2", headers, b""))[1][
        "OptionalObjectAttributes"
    ] == ["RestoreStatus"]


def test_s3_xml_payload_ignores_namespace_and_reads_attributes() -> None:
    body = (
        b'<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>o</ID></Owner>'
        b'<AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        b'xsi:type="CanonicalUser"><ID>id</ID></Grantee><Permission>READ</Permission></Grant>'
        b"</AccessControlList></AccessControlPolicy>"
    )
    name, params = parse("s3", HttpRequest("PUT", "/b", "acl", Headers(), body))
    assert name == "PutBucketAcl"
    assert params["AccessControlPolicy"] == {
        "Owner": {"ID": "o"},
        "Grants": [{"Grantee": {"ID": "id", "Type": "CanonicalUser"}, "Permission": "READ"}],
    }


# -- fuzz: nothing but CloudError, whatever arrives ----------------------------------------------


def _fuzz_key(rng: random.Random) -> str:
    parts = [
        "Tags",
        "member",
        "Filter",
        "Value",
        "1",
        "0",
        "-1",
        "abc",
        "99999999999",
        "Key",
        "",
        "entry",
        "key",
    ]
    return ".".join(rng.choice(parts) for _ in range(rng.randint(1, 5)))


def test_fuzz_form_protocols_raise_only_cloud_errors() -> None:
    rng = random.Random(1234)
    actions = {
        "ec2": ["DescribeRegions", "RunInstances", "DescribeInstances"],
        "iam": ["CreateUser", "ListUsers"],
    }
    for _ in range(400):
        service = rng.choice(["ec2", "iam"])
        pairs = [("Action", rng.choice(actions[service]))]
        pairs += [
            (_fuzz_key(rng), rng.choice(["", "x", "1", "true", "\u00e9", "-5", "1e99"])) for _ in range(6)
        ]
        body = "&".join(f"{k}={v}" for k, v in pairs).encode()
        if rng.random() < 0.3:
            body += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        with contextlib.suppress(CloudError):  # any other exception fails the test
            parse_request(load_service(service), form(service, body))


def test_fuzz_s3_raises_only_cloud_errors() -> None:
    rng = random.Random(99)
    paths = ["/", "/b", "/b/", "/b/k", "/b/a/b//c", "/%ZZ", "/b/%C3%28"]
    queries = [
        "",
        "acl",
        "tagging",
        "uploads",
        "uploadId=1&partNumber=x",
        "list-type=2&max-keys=abc",
        "delete",
    ]
    for _ in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            body = b"<Delete><Object><Key>" + body + b"</Key></Object></Delete>"
        headers = Headers([("x-amz-copy-source", "x")] if rng.random() < 0.2 else [])
        request = HttpRequest(
            rng.choice(["GET", "PUT", "POST", "DELETE", "HEAD", "BREW"]),
            rng.choice(paths),
            rng.choice(queries),
            headers,
            body,
        )
        with contextlib.suppress(CloudError):  # any other exception fails the test
            parse_request(load_service("s3"), request)
