"""Regression tests for the answers a hardened front door never gives (issue 19's "Why"): each case
found by hand or by fuzzing, each now a 4xx AWS error in its service's shape."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.parse

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from functional.test_malformed_input import _conn, assert_alive, signed
from support.cloud import BODY_IDLE_SECONDS, Cloud, Keys
from support.fuzz_post import PostCases
from support.fuzz_post import form as post_form


@pytest.mark.parametrize(
    "action", ["StopInstances", "StartInstances", "TerminateInstances", "RebootInstances"]
)
def test_an_empty_instance_id_list_is_missing_parameter_and_touches_nothing(
    cloud: Cloud, account: Keys, action: str
) -> None:
    ec2 = cloud.client("ec2", account)
    ami = register_tiny_image(cloud, account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    wait_state(ec2, [instance_id], "running")
    request = AWSRequest(
        method="POST",
        url=cloud.endpoint + "/",
        data=f"Action={action}&Version=2016-11-15&InstanceId=",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(account.access_key_id, account.secret_access_key), "ec2", cloud.region).add_auth(
        request
    )
    conn = _conn(cloud)
    conn.request("POST", "/", body=request.body, headers=dict(request.headers.items()))
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 400 and "<Code>MissingParameter</Code>" in text, text
    assert wait_state(ec2, [instance_id], "running")  # an empty list never means "all of them"
    ec2.terminate_instances(InstanceIds=[instance_id])


@pytest.mark.parametrize(
    "body",
    [
        "Action=DescribeRegions&Action=DeleteUser&Version=2016-11-15",
        "Action=DescribeRegions&Version=2016-11-15&Version=2016-11-15",
    ],
)
def test_a_duplicated_action_or_version_is_refused(cloud: Cloud, body: str) -> None:
    status, text = signed(cloud, "ec2", body)
    assert status == 400 and "<Code>InvalidQueryParameter</Code>" in text, text
    assert_alive(cloud)


def test_two_authorization_headers_are_refused(cloud: Cloud) -> None:
    body = "Action=DescribeRegions&Version=2016-11-15"
    request = AWSRequest(
        method="POST",
        url=cloud.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), "ec2", cloud.region
    ).add_auth(request)
    conn = _conn(cloud)
    conn.putrequest("POST", "/", skip_accept_encoding=True)
    for name, value in request.headers.items():
        conn.putheader(name, value)
    conn.putheader(
        "Authorization", "AWS4-HMAC-SHA256 Credential=AKIAOTHER/20260101/mallee-1/ec2/aws4_request"
    )
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body.encode())
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 400 and "<Code>InvalidRequest</Code>" in text, text


@pytest.mark.parametrize("name", ["bad\x00name", "tab\tname", "é-name"])
def test_a_key_pair_name_outside_printable_ascii_is_refused(cloud: Cloud, account: Keys, name: str) -> None:
    ec2 = cloud.client("ec2", account)
    with pytest.raises(ClientError) as err:
        ec2.create_key_pair(KeyName=name)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert ec2.describe_key_pairs()["KeyPairs"] == []


def _s3_request(
    cloud: Cloud, method: str, path: str, headers: dict[str, str], body: bytes = b"x"
) -> tuple[int, str]:
    request = AWSRequest(method=method, url=cloud.endpoint + path, data=body, headers=headers)
    S3SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), "s3", cloud.region
    ).add_auth(request)
    conn = _conn(cloud)
    conn.request(method, path, body=body, headers=dict(request.headers.items()))
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_an_unknown_server_side_encryption_is_refused(cloud: Cloud, s3: object) -> None:
    bucket = "sse-enum-check"
    cloud.client("s3").create_bucket(Bucket=bucket)
    status, text = _s3_request(
        cloud,
        "PUT",
        f"/{bucket}/k",
        {"x-amz-server-side-encryption": "AES256X", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    assert status == 400 and "<Code>InvalidArgument</Code>" in text, text
    cloud.client("s3").delete_bucket(Bucket=bucket)


def test_a_broken_s3_signature_is_answered_in_s3s_shape(cloud: Cloud) -> None:
    conn = _conn(cloud)
    conn.request("GET", "/", headers={"Authorization": "AWS4-HMAC-SHA256"})
    response = conn.getresponse()
    text = response.read().decode()
    assert 400 <= response.status < 500, text
    assert text.lstrip().startswith("<?xml") and "<Error>" in text and "<RequestId>" in text, text


@pytest.mark.parametrize(
    "query",
    [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=nobody%2F20260101%2Fmallee-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "AWSAccessKeyId=nobody&Expires=1&Signature=x",
    ],
)
def test_a_broken_presigned_url_is_answered_in_s3s_shape(cloud: Cloud, query: str) -> None:
    conn = _conn(cloud)
    conn.request("GET", "/some-bucket/some-key?" + query)
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status in (400, 403), text
    assert "<Error><Code>" in text and "<RequestId>" in text, text
    assert response.getheader("x-amz-request-id"), response.getheaders()


def test_an_empty_bucket_segment_is_an_s3_error_not_501(cloud: Cloud) -> None:
    status, text = _s3_request(cloud, "GET", "//key", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert 400 <= status < 500 and "<Error>" in text, text


def _raw(cloud: Cloud, head: bytes, body: bytes, wait: float) -> tuple[int, bytes, float]:
    """Send a request head and part of its body on a raw socket; (status, answer, seconds to it)."""
    parsed = urllib.parse.urlparse(cloud.endpoint)
    started = time.monotonic()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=wait) as s:
        s.sendall(head + body)
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b">"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
    return int(reply.split(b" ", 2)[1]), reply, time.monotonic() - started


def test_a_query_body_declared_too_large_is_refused_at_once(cloud: Cloud) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    status, reply, seconds = _raw(cloud, head + b"Content-Length: 5368709120\r\n\r\n", b"Action=Des", 10)
    assert status == 413 and b"RequestEntityTooLarge" in reply and seconds < 5, reply[:300]
    assert re.search(rb"<RequestID>[0-9a-f-]{36}</RequestID>", reply), reply  # no answer without an id
    assert_alive(cloud)


@pytest.mark.parametrize("where", ["query", "s3-streamed", "s3-small"])
def test_a_body_that_stops_coming_is_answered_request_timeout(cloud: Cloud, where: str) -> None:
    """A client declares more body than it sends: the door answers RequestTimeout (in the
    service's shape) once the body has paused for BODY_IDLE_SECONDS, instead of waiting forever."""
    if where == "query":
        target, length, shape = "/", 100, b"<Response>"
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    else:
        bucket = f"idle-{where}"
        cloud.client("s3").create_bucket(Bucket=bucket)
        # Presigned, so the request is authorised before its body is read (5 GiB: streamed).
        url = cloud.client("s3").generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300
        )
        target = url[len(cloud.endpoint) :]
        length, shape = (5 * 1024**3 if where == "s3-streamed" else 100), b"<Error>"
        host = urllib.parse.urlparse(cloud.endpoint).netloc.encode()
        head = b"PUT " + target.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
    head += b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    status, reply, seconds = _raw(cloud, head, b"0123456789", 30)
    assert status == 400 and b"<Code>RequestTimeout</Code>" in reply and shape in reply, reply[:300]
    assert re.search(rb"<Request(ID|Id)>[0-9a-f-]{36}</Request(ID|Id)>", reply), reply
    assert seconds < BODY_IDLE_SECONDS + 5
    assert_alive(cloud)


@pytest.mark.parametrize("tag", [{"Key": "a\x00b", "Value": "v"}, {"Key": "k", "Value": "v\x01"}])
def test_an_ec2_tag_xml_cannot_carry_is_refused(cloud: Cloud, account: Keys, tag: dict[str, str]) -> None:
    ec2 = cloud.client("ec2", account)
    ec2.create_key_pair(KeyName="tagged")
    key_id = ec2.describe_key_pairs(KeyNames=["tagged"])["KeyPairs"][0]["KeyPairId"]
    with pytest.raises(ClientError) as err:
        ec2.create_tags(Resources=[key_id], Tags=[tag])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert ec2.describe_tags()["Tags"] == []


# -- found by the model-driven fuzz suite (test_fuzz_models.py) ------------------------------------


@pytest.mark.parametrize("version", ["%E2%80%AE%EF%BB%BF%F0%9D%95%8F", "a%00b", "a%01%1B%7Fb"])
def test_a_version_id_no_header_can_carry_is_echoed_rfc2047_encoded(cloud: Cloud, version: str) -> None:
    """DeleteObject echoes the version id in x-amz-version-id: one beyond Latin-1 or with control
    characters was a bare 500 (or a dropped connection) from the HTTP server."""
    bucket = "fuzz-found-version"
    cloud.client("s3").create_bucket(Bucket=bucket)
    status, text = _s3_request(
        cloud, "DELETE", f"/{bucket}/k?versionId={version}", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    )
    assert status == 204, text
    cloud.client("s3").delete_bucket(Bucket=bucket)
    assert_alive(cloud)


@pytest.mark.parametrize("value", ["\xff\xfe\xc0\xaf", "not base64!", "AAAA"])
def test_a_checksum_header_that_is_no_digest_is_invalid_request(cloud: Cloud, value: str) -> None:
    """A non-ASCII x-amz-checksum-crc32 made hmac.compare_digest raise (500); S3 answers
    InvalidRequest for a value that is not a digest of the algorithm at all."""
    bucket = "fuzz-found-checksum"
    cloud.client("s3").create_bucket(Bucket=bucket)
    status, text = _s3_request(
        cloud,
        "PUT",
        f"/{bucket}/k",
        {"x-amz-checksum-crc32": value, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    assert status == 400 and "<Code>InvalidRequest</Code>" in text, text
    assert "x-amz-checksum-crc32" in text
    assert cloud.client("s3").list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    cloud.client("s3").delete_bucket(Bucket=bucket)


def test_percent_encoded_bytes_that_are_not_utf8_are_refused_like_raw_ones(cloud: Cloud) -> None:
    status, text = signed(cloud, "ec2", "Action=DeleteKeyPair&Version=2016-11-15&KeyName=%FF%FE")
    assert status == 404 and "<Code>MalformedQueryString</Code>" in text, text


@pytest.mark.parametrize("signature", ["é-not-hex", "\u202e"])
def test_a_post_upload_signature_that_is_not_ascii_does_not_match(
    cloud: Cloud, account: Keys, signature: str
) -> None:
    """A browser-based upload whose x-amz-signature is not ASCII made hmac.compare_digest raise
    (InternalError); it is a signature that does not match."""
    bucket = f"fuzz-found-post-{account.account_id}"
    cloud.client("s3", account).create_bucket(Bucket=bucket)
    form = PostCases(bucket, account.access_key_id, account.secret_access_key, cloud.region)
    good = form.signed_fields(form.policy())
    case = form.case(
        "x", post_form([(n, signature.encode() if n == "x-amz-signature" else v) for n, v in good])
    )
    conn = _conn(cloud)
    conn.request(case.method, case.target, body=case.body, headers=dict(case.headers))
    response = conn.getresponse()
    text = response.read().decode()
    assert response.status == 403 and "<Code>SignatureDoesNotMatch</Code>" in text, text
    conn = _conn(cloud)
    conn.request(case.method, case.target, body=post_form(good), headers=dict(case.headers))
    response = conn.getresponse()
    assert response.status == 204, response.read()  # the same form, signed, is stored


@pytest.mark.parametrize("declared", ["\xe9" * 64, "z" * 64])
def test_a_presigned_put_with_a_non_hex_content_sha256_is_no_500(cloud: Cloud, declared: str) -> None:
    """A presigned PUT does not sign its x-amz-content-sha256; 64 characters that are not hex were
    taken for a digest and compared as text (non-ASCII: a TypeError, so InternalError)."""
    bucket = "fuzz-found-presigned"
    s3 = cloud.client("s3")
    s3.create_bucket(Bucket=bucket)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    conn = _conn(cloud)
    conn.request("PUT", url[len(cloud.endpoint) :], body=b"data", headers={"x-amz-content-sha256": declared})
    response = conn.getresponse()
    assert response.status == 200, response.read()  # no digest to compare: stored, as with none
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"data"
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize(
    "params",
    ["Host=fuzz%20is%20no%20host&Zone=", "Host=a%00b", "Host=" + "a" * 300, "Host=node-9&Port=70000"],
)
def test_register_node_refuses_what_names_no_node(cloud: Cloud, params: str) -> None:
    """The fuzz suite registered a node named by garbage (an empty Zone means the default zone):
    the cluster keeps and polls what it is given for good."""
    nodes = (cloud.data_dir / "cc-nodes.json").read_text()
    status, text = signed(cloud, "ec2", "Action=RegisterNode&Version=2016-11-15&" + params)
    assert status == 400 and "<Code>InvalidParameterValue</Code>" in text, text
    assert (cloud.data_dir / "cc-nodes.json").read_text() == nodes


def test_an_xml_body_past_the_limit_is_max_message_length_exceeded(cloud: Cloud) -> None:
    bucket = "xml-limit"
    cloud.client("s3").create_bucket(Bucket=bucket)
    tags = "".join(f"<Tag><Key>k{i}</Key><Value>{'v' * 200}</Value></Tag>" for i in range(12_000))
    body = f"<Tagging><TagSet>{tags}</TagSet></Tagging>".encode()  # ~2.8 MiB
    status, text = _s3_request(
        cloud,
        "PUT",
        f"/{bucket}?tagging",
        {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "content-type": "application/xml"},
        body,
    )
    assert status == 400 and "<Code>MaxMessageLengthExceeded</Code>" in text, text[:300]
    cloud.client("s3").delete_bucket(Bucket=bucket)
