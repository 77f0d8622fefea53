"""Per-account object storage usage (`mallee usage`) and quotas (`mallee quota set`)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from support.cloud import Cloud


def _account_name(cloud: Cloud, account_id: str) -> str:
    root = cloud.admin_api().call("iam", "ListAccounts")
    return next(
        m.findtext("AccountName", "")
        for m in root.iterfind(".//Accounts/member")
        if m.findtext("AccountId") == account_id
    )


def test_usage_counts_buckets_objects_and_bytes(cloud: Cloud) -> None:
    keys = cloud.new_account("usage")
    s3 = cloud.client("s3", keys)
    s3.create_bucket(Bucket=f"u-{keys.account_id}")
    s3.put_object(Bucket=f"u-{keys.account_id}", Key="a", Body=b"x" * 1000)
    s3.put_object(Bucket=f"u-{keys.account_id}", Key="b", Body=b"y" * 24)
    result = cloud.run("mallee", "usage")
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if keys.account_id in line)
    assert row[2:5] == ["1", "2", "1024"]


def test_quota_refuses_writes_past_the_limit(cloud: Cloud) -> None:
    keys = cloud.new_account("quota")
    name = _account_name(cloud, keys.account_id)
    set_ = cloud.run("mallee", "quota", "set", name, "--objects", "2", "--bytes", "100")
    assert set_.returncode == 0, set_.stderr
    s3 = cloud.client("s3", keys)
    bucket = f"q-{keys.account_id}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="one", Body=b"1" * 60)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="two", Body=b"2" * 60)  # 120 bytes > 100
    assert err.value.response["Error"]["Code"] == "QuotaExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    s3.put_object(Bucket=bucket, Key="two", Body=b"2" * 10)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="three", Body=b"3")  # a third object
    assert err.value.response["Error"]["Code"] == "QuotaExceeded"
    assert cloud.run("mallee", "quota", "set", name).returncode == 0  # lift it
    import time

    time.sleep(6)  # Walrus caches quotas for a few seconds
    s3.put_object(Bucket=bucket, Key="three", Body=b"3")


def test_only_the_administrator_sets_quotas(cloud: Cloud, account: object) -> None:
    from botocore.credentials import ReadOnlyCredentials

    from mallee.cli.client import AdminClient, ApiError

    keys = cloud.new_account("nosy")
    outsider = AdminClient(
        ReadOnlyCredentials(keys.access_key_id, keys.secret_access_key, None), cloud.endpoint, cloud.region
    )
    with pytest.raises(ApiError) as err:
        outsider.call("iam", "PutAccountQuota", {"AccountName": "mallee", "MaxObjects": "1"})
    assert err.value.code == "AccessDenied"
