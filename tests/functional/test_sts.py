"""STS: caller identity, and temporary credentials that work and then expire."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.cloud import Cloud, Keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def test_caller_identity_of_root_and_user(cloud: Cloud, account: Keys) -> None:
    ident = cloud.client("sts", account).get_caller_identity()
    assert (
        ident["Account"] == account.account_id and ident["Arn"] == f"arn:aws:iam::{account.account_id}:root"
    )
    iam = cloud.client("iam", account)
    iam.create_user(UserName="mona")
    key = iam.create_access_key(UserName="mona")["AccessKey"]
    user = cloud.client("sts", Keys(key["AccessKeyId"], key["SecretAccessKey"])).get_caller_identity()
    assert user["Arn"] == f"arn:aws:iam::{account.account_id}:user/mona" and user["UserId"].startswith("AIDA")


def test_session_token_works_then_expires(cloud: Cloud, account: Keys) -> None:
    creds = cloud.client("sts", account).get_session_token(DurationSeconds=900)["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    remaining = creds["Expiration"] - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=14) < remaining <= dt.timedelta(minutes=15)
    temp = Keys(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert cloud.client("sts", temp).get_caller_identity()["Account"] == account.account_id
    cloud.client("ec2", temp).describe_regions()

    # Without its token the temporary key is worthless.
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", Keys(temp.access_key_id, temp.secret_access_key)).describe_regions()
    assert err.value.response["Error"]["Code"] == "AuthFailure"

    # Move the expiry into the past in the database of record (waiting 15 minutes is no test).
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    cloud.set_key_expiry(temp.access_key_id, past)
    deadline = time.monotonic() + 10
    while True:
        try:
            cloud.client("sts", temp).get_caller_identity()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ExpiredToken"
            break
        assert time.monotonic() < deadline, "temporary credentials still accepted after expiry"
        time.sleep(0.5)
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", temp).describe_regions()
    assert err.value.response["Error"]["Code"] == "RequestExpired"


def test_session_credentials_cannot_call_iam_or_get_another_session(cloud: Cloud, account: Keys) -> None:
    creds = cloud.client("sts", account).get_session_token()["Credentials"]
    temp = Keys(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    with pytest.raises(ClientError) as err:
        cloud.client("iam", temp).list_users()
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as err:
        cloud.client("sts", temp).get_session_token()
    assert err.value.response["Error"]["Code"] == "AccessDenied"


def test_session_duration_out_of_range_is_validation_error(cloud: Cloud, account: Keys) -> None:
    unchecked = BotoConfig(parameter_validation=False, retries={"max_attempts": 1})  # let the server judge
    with pytest.raises(ClientError) as err:
        cloud.client("sts", account, config=unchecked).get_session_token(DurationSeconds=60)
    assert err.value.response["Error"]["Code"] == "ValidationError"
