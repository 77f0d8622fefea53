"""Signatures as real clients make them: wrong secrets, expired presigned URLs, skewed clocks,
and Signature Version 2 for older tools."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from unittest import mock

import pytest
from botocore.auth import SigV2Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import code
from support.cloud import Cloud, Keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


@contextlib.contextmanager
def client_clock(offset: dt.timedelta) -> Iterator[None]:
    """Sign as a client whose clock is off by `offset` (botocore's own and its CRT signers)."""

    def skewed(remove_tzinfo: bool = True) -> dt.datetime:
        now = dt.datetime.now(dt.UTC) + offset
        return now.replace(tzinfo=None) if remove_tzinfo else now

    with (
        mock.patch("botocore.auth.get_current_datetime", skewed),
        mock.patch("botocore.crt.auth.get_current_datetime", skewed),
    ):
        yield


def fetch(request: AWSRequest) -> tuple[int, str]:
    prepared = request.prepare()
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    req = urllib.request.Request(
        prepared.url, data=body, method=prepared.method, headers=dict(prepared.headers.items())
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_wrong_secret_is_refused_with_each_apis_code(cloud: Cloud) -> None:
    wrong = Keys(cloud.admin.access_key_id, "x" * 40)
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", wrong).describe_regions()
    assert code(err) == "AuthFailure"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    with pytest.raises(ClientError) as err:
        cloud.client("iam", wrong).list_users()
    assert code(err) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as err:
        cloud.client("sts", wrong).get_caller_identity()
    assert code(err) == "SignatureDoesNotMatch"


def test_unknown_access_key_is_invalid_client_token(cloud: Cloud) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("iam", Keys("AKIAAAAAAAAAAAAAAAAA", "x" * 40)).list_users()
    assert code(err) == "InvalidClientTokenId"
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", Keys("AKIAAAAAAAAAAAAAAAAA", "x" * 40)).describe_regions()
    assert code(err) == "AuthFailure"


def test_presigned_url_works_then_expires(cloud: Cloud) -> None:
    url = cloud.client("sts").generate_presigned_url("get_caller_identity", ExpiresIn=2, HttpMethod="GET")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert "<Arn>arn:aws:iam::" in response.read().decode()
    time.sleep(3)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    body = err.value.read().decode()
    assert 400 <= err.value.code < 500
    assert "<Code>RequestExpired</Code>" in body


def test_tampered_presigned_url_is_refused(cloud: Cloud) -> None:
    url = cloud.client("ec2").generate_presigned_url("describe_regions", ExpiresIn=60, HttpMethod="GET")
    tampered = url.replace("DescribeRegions", "DescribeAvailabilityZones")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert "<Code>AuthFailure</Code>" in err.value.read().decode()


@pytest.mark.parametrize("minutes", [-20, 20])
def test_skewed_client_clock_is_refused(cloud: Cloud, minutes: int) -> None:
    with client_clock(dt.timedelta(minutes=minutes)):
        with pytest.raises(ClientError) as err:
            cloud.client("ec2").describe_regions()
        assert code(err) == "RequestExpired"
        with pytest.raises(ClientError) as err:
            cloud.client("iam").list_users()
        assert code(err) == "SignatureDoesNotMatch"
        message = err.value.response["Error"]["Message"]
        assert message.startswith("Signature expired" if minutes < 0 else "Signature not yet current"), (
            message
        )


def test_small_clock_skew_is_tolerated(cloud: Cloud) -> None:
    with client_clock(dt.timedelta(minutes=10)):
        cloud.client("ec2").describe_regions()


def test_signature_version_2_query_requests(cloud: Cloud) -> None:
    """euca2ools-era clients sign EC2 and IAM queries with SigV2 (HmacSHA256)."""
    for params, expect in (
        ({"Action": "DescribeRegions", "Version": "2016-11-15"}, "<regionName>mallee-1</regionName>"),
        ({"Action": "GetAccountSummary", "Version": "2010-05-08"}, "<SummaryMap>"),
    ):
        request = AWSRequest(method="POST", url=cloud.endpoint + "/", data=params)
        SigV2Auth(Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key)).add_auth(request)
        status, body = fetch(request)
        assert status == 200, body
        assert expect in body
    bad = AWSRequest(
        method="POST", url=cloud.endpoint + "/", data={"Action": "DescribeRegions", "Version": "2016-11-15"}
    )
    SigV2Auth(Credentials(cloud.admin.access_key_id, "wrong" * 8)).add_auth(bad)
    status, body = fetch(bad)
    assert status == 401 and "<Code>AuthFailure</Code>" in body


def test_signed_for_the_wrong_service_is_refused(cloud: Cloud) -> None:
    """A body for EC2 signed with IAM's scope is routed to IAM, which knows no such action."""
    request = AWSRequest(
        method="POST",
        url=cloud.endpoint + "/",
        data="Action=DescribeRegions&Version=2016-11-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), "iam", cloud.region
    ).add_auth(request)
    status, body = fetch(request)
    assert status == 400 and "<Code>InvalidAction</Code>" in body


def test_request_body_changed_after_signing_is_refused(cloud: Cloud) -> None:
    request = AWSRequest(
        method="POST",
        url=cloud.endpoint + "/",
        data="Action=DescribeRegions&Version=2016-11-15",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), "ec2", cloud.region
    ).add_auth(request)
    request.data = "Action=DescribeAvailabilityZones&Version=2016-11-15"
    status, body = fetch(request)
    assert status == 401 and "<Code>AuthFailure</Code>" in body


def test_query_string_in_url_is_part_of_the_signature(cloud: Cloud) -> None:
    query = urllib.parse.urlencode({"Action": "DescribeRegions", "Version": "2016-11-15"})
    request = AWSRequest(method="GET", url=f"{cloud.endpoint}/?{query}")
    SigV4Auth(
        Credentials(cloud.admin.access_key_id, cloud.admin.secret_access_key), "ec2", cloud.region
    ).add_auth(request)
    status, body = fetch(request)
    assert status == 200, body
