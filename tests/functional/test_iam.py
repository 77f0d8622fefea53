"""IAM through boto3: users, groups, access keys, inline and managed policies, aliases, summary,
and what an IAM user without permissions is refused."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import code
from support.cloud import Cloud, Keys, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

ALLOW_EC2_DESCRIBE = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}
)


def test_user_life_cycle(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    user = iam.create_user(UserName="alice", Path="/staff/", Tags=[{"Key": "team", "Value": "ops"}])["User"]
    assert user["Arn"] == f"arn:aws:iam::{account.account_id}:user/staff/alice"
    assert user["UserId"].startswith("AIDA")
    assert iam.get_user(UserName="alice")["User"]["Tags"] == [{"Key": "team", "Value": "ops"}]
    iam.update_user(UserName="alice", NewUserName="alicia", NewPath="/")
    assert [u["UserName"] for u in iam.list_users()["Users"]] == ["alicia"]
    iam.delete_user(UserName="alicia")
    with pytest.raises(ClientError) as err:
        iam.get_user(UserName="alicia")
    assert code(err) == "NoSuchEntity"


def test_duplicate_user_is_entity_already_exists(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="bob")
    with pytest.raises(ClientError) as err:
        iam.create_user(UserName="BOB")
    assert code(err) == "EntityAlreadyExists"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_invalid_user_name_is_validation_error(cloud: Cloud, account: Keys) -> None:
    with pytest.raises(ClientError) as err:
        cloud.client("iam", account).create_user(UserName="no spaces allowed")
    assert code(err) == "ValidationError"


def test_list_users_paginates_with_marker(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    for i in range(7):
        iam.create_user(UserName=f"u{i}")
    first = iam.list_users(MaxItems=3)
    assert first["IsTruncated"] and len(first["Users"]) == 3
    names = [
        u["UserName"]
        for page in iam.get_paginator("list_users").paginate(PaginationConfig={"PageSize": 3})
        for u in page["Users"]
    ]
    assert names == [f"u{i}" for i in range(7)]


def test_delete_user_with_keys_is_delete_conflict(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="carol")
    key = iam.create_access_key(UserName="carol")["AccessKey"]
    with pytest.raises(ClientError) as err:
        iam.delete_user(UserName="carol")
    assert code(err) == "DeleteConflict"
    iam.delete_access_key(UserName="carol", AccessKeyId=key["AccessKeyId"])
    iam.delete_user(UserName="carol")


def test_access_key_life_cycle_and_quota(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="dave")
    k1 = iam.create_access_key(UserName="dave")["AccessKey"]
    assert (
        k1["AccessKeyId"].startswith("AKIA") and len(k1["SecretAccessKey"]) == 40 and k1["Status"] == "Active"
    )
    iam.create_access_key(UserName="dave")
    with pytest.raises(ClientError) as err:
        iam.create_access_key(UserName="dave")
    assert code(err) == "LimitExceeded"
    iam.update_access_key(UserName="dave", AccessKeyId=k1["AccessKeyId"], Status="Inactive")
    listed = {
        k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="dave")["AccessKeyMetadata"]
    }
    assert listed[k1["AccessKeyId"]] == "Inactive" and len(listed) == 2
    with pytest.raises(ClientError) as err:
        iam.delete_access_key(UserName="dave", AccessKeyId="AKIAXXXXXXXXXXXXXXXX")
    assert code(err) == "NoSuchEntity"


def test_inactive_and_deleted_keys_are_refused(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    keys = user_keys(cloud, account, "erin")
    iam.put_user_policy(UserName="erin", PolicyName="p", PolicyDocument=ALLOW_EC2_DESCRIBE)
    cloud.client("ec2", keys).describe_regions()
    iam.update_access_key(UserName="erin", AccessKeyId=keys.access_key_id, Status="Inactive")
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", keys).describe_regions()
    assert code(err) == "AuthFailure"
    iam.delete_access_key(UserName="erin", AccessKeyId=keys.access_key_id)
    with pytest.raises(ClientError) as err:
        cloud.client("sts", keys).get_caller_identity()
    assert code(err) == "InvalidClientTokenId"


def test_user_without_policy_is_refused_everywhere(cloud: Cloud, account: Keys) -> None:
    keys = user_keys(cloud, account, "frank")
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", keys).describe_regions()
    assert code(err) == "UnauthorizedOperation"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as err:
        cloud.client("iam", keys).list_users()
    assert code(err) == "AccessDenied"
    assert "iam:ListUsers" in err.value.response["Error"]["Message"]
    # Knowing who you are needs no permission, on AWS as here.
    assert cloud.client("sts", keys).get_caller_identity()["Arn"].endswith(":user/frank")


def test_inline_user_policy_grants_and_explicit_deny_wins(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    keys = user_keys(cloud, account, "gina")
    iam.put_user_policy(UserName="gina", PolicyName="ec2-read", PolicyDocument=ALLOW_EC2_DESCRIBE)
    ec2 = cloud.client("ec2", keys)
    ec2.describe_availability_zones()
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "ec2:DescribeRegions", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="gina", PolicyName="no-regions", PolicyDocument=json.dumps(deny))
    with pytest.raises(ClientError) as err:
        ec2.describe_regions()
    assert code(err) == "UnauthorizedOperation"
    ec2.describe_availability_zones()
    assert sorted(iam.list_user_policies(UserName="gina")["PolicyNames"]) == ["ec2-read", "no-regions"]
    got = iam.get_user_policy(UserName="gina", PolicyName="no-regions")
    assert got["PolicyDocument"] == deny  # boto3 decodes IAM's URL-encoded JSON
    iam.delete_user_policy(UserName="gina", PolicyName="no-regions")
    ec2.describe_regions()


def test_malformed_policy_is_refused(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="hank")
    with pytest.raises(ClientError) as err:
        iam.put_user_policy(
            UserName="hank", PolicyName="bad", PolicyDocument='{"Statement": [{"Effect": "Maybe"}]}'
        )
    assert code(err) == "MalformedPolicyDocument"


def test_group_policy_applies_to_members(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    keys = user_keys(cloud, account, "ivy")
    group = iam.create_group(GroupName="readers")["Group"]
    assert group["GroupId"].startswith("AGPA")
    iam.put_group_policy(GroupName="readers", PolicyName="p", PolicyDocument=ALLOW_EC2_DESCRIBE)
    with pytest.raises(ClientError):
        cloud.client("ec2", keys).describe_regions()
    iam.add_user_to_group(GroupName="readers", UserName="ivy")
    cloud.client("ec2", keys).describe_regions()
    assert [u["UserName"] for u in iam.get_group(GroupName="readers")["Users"]] == ["ivy"]
    assert [g["GroupName"] for g in iam.list_groups()["Groups"]] == ["readers"]
    assert iam.list_group_policies(GroupName="readers")["PolicyNames"] == ["p"]
    assert iam.get_group_policy(GroupName="readers", PolicyName="p")["PolicyDocument"]["Statement"]
    with pytest.raises(ClientError) as err:
        iam.delete_group(GroupName="readers")
    assert code(err) == "DeleteConflict"
    iam.remove_user_from_group(GroupName="readers", UserName="ivy")
    with pytest.raises(ClientError):
        cloud.client("ec2", keys).describe_regions()
    iam.delete_group_policy(GroupName="readers", PolicyName="p")
    iam.delete_group(GroupName="readers")
    assert iam.list_groups()["Groups"] == []


def test_attached_managed_policies(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    keys = user_keys(cloud, account, "jack")
    iam.attach_user_policy(UserName="jack", PolicyArn="arn:aws:iam::aws:policy/AmazonEC2ReadOnlyAccess")
    cloud.client("ec2", keys).describe_instance_types()
    with pytest.raises(ClientError):
        cloud.client("iam", keys).list_users()
    mine = iam.create_policy(
        PolicyName="iam-read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "iam:List*", "Resource": "*"}],
            }
        ),
    )["Policy"]
    iam.create_group(GroupName="auditors")
    iam.add_user_to_group(GroupName="auditors", UserName="jack")
    iam.attach_group_policy(GroupName="auditors", PolicyArn=mine["Arn"])
    cloud.client("iam", keys).list_users()
    attached = iam.list_attached_user_policies(UserName="jack")["AttachedPolicies"]
    assert attached == [
        {
            "PolicyName": "AmazonEC2ReadOnlyAccess",
            "PolicyArn": "arn:aws:iam::aws:policy/AmazonEC2ReadOnlyAccess",
        }
    ]
    assert iam.get_policy(PolicyArn=mine["Arn"])["Policy"]["AttachmentCount"] == 1
    with pytest.raises(ClientError) as err:
        iam.delete_policy(PolicyArn=mine["Arn"])
    assert code(err) == "DeleteConflict"
    iam.detach_group_policy(GroupName="auditors", PolicyArn=mine["Arn"])
    assert iam.list_attached_group_policies(GroupName="auditors")["AttachedPolicies"] == []
    iam.delete_policy(PolicyArn=mine["Arn"])
    local = iam.list_policies(Scope="Local")["Policies"]
    assert local == []


def test_account_alias_and_summary(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    alias = f"alias-{account.access_key_id[-6:].lower()}"
    iam.create_account_alias(AccountAlias=alias)
    assert iam.list_account_aliases()["AccountAliases"] == [alias]
    iam.create_user(UserName="kate")
    summary = iam.get_account_summary()["SummaryMap"]
    assert (
        summary["Users"] == 1
        and summary["AccessKeysPerUserQuota"] == 2
        and summary["AccountAccessKeysPresent"] == 1
    )


def test_account_alias_taken_by_another_account(cloud: Cloud, account: Keys) -> None:
    other = cloud.new_account()
    alias = f"taken-{other.access_key_id[-6:].lower()}"
    cloud.client("iam", other).create_account_alias(AccountAlias=alias)
    with pytest.raises(ClientError) as err:
        cloud.client("iam", account).create_account_alias(AccountAlias=alias)
    assert code(err) == "EntityAlreadyExists"


def test_one_account_never_sees_anothers_users(cloud: Cloud, account: Keys) -> None:
    other = cloud.new_account()
    cloud.client("iam", other).create_user(UserName="secret-user")
    mine = cloud.client("iam", account)
    assert "secret-user" not in [u["UserName"] for u in mine.list_users()["Users"]]
    with pytest.raises(ClientError) as err:
        mine.get_user(UserName="secret-user")
    assert code(err) == "NoSuchEntity"
    with pytest.raises(ClientError):
        mine.delete_user(UserName="secret-user")
    assert [u["UserName"] for u in cloud.client("iam", other).list_users()["Users"]] == ["secret-user"]


def test_only_the_cloud_administrator_creates_accounts(cloud: Cloud, account: Keys) -> None:
    from botocore.credentials import ReadOnlyCredentials

    from mallee.cli.client import AdminClient, ApiError

    outsider = AdminClient(
        ReadOnlyCredentials(account.access_key_id, account.secret_access_key, None),
        cloud.endpoint,
        cloud.region,
    )
    with pytest.raises(ApiError) as err:
        outsider.call("iam", "CreateAccount", {"AccountName": "sneaky"})
    assert err.value.code == "AccessDenied"
    with pytest.raises(ApiError) as err:
        outsider.call("iam", "ListUsers", {"DelegateAccount": "mallee"})
    assert err.value.code == "AccessDenied"


def test_key_change_applies_to_the_next_request(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    keys = user_keys(cloud, account, "liam")
    iam.put_user_policy(UserName="liam", PolicyName="p", PolicyDocument=ALLOW_EC2_DESCRIBE)
    cloud.client("ec2", keys).describe_regions()
    started = time.monotonic()
    iam.delete_user_policy(UserName="liam", PolicyName="p")
    with pytest.raises(ClientError):
        cloud.client("ec2", keys).describe_regions()
    assert time.monotonic() - started < 5  # no waiting for a cache to expire
