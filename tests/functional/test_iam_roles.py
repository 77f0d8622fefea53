"""IAM roles and instance profiles through boto3 and the aws CLI: their life cycles, policies and
tags, the refusals AWS answers, concurrent creates of one name, and that accounts stay apart."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError

from functional import test_ec2_instance_profiles as instances
from functional.conftest import on_both_databases
from mallee.cli.client import ApiError
from support.answers import code
from support.cloud import Cloud, Keys, aws, aws_refusal, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
ALLOW_S3_READ = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}
)
EC2_READ_ONLY = "arn:aws:iam::aws:policy/AmazonEC2ReadOnlyAccess"
UNCHECKED = BotoConfig(parameter_validation=False, retries={"max_attempts": 1})


def _role(iam: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    role: dict[str, Any] = iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST), **kwargs
    )["Role"]
    return role


def _refused(call: Callable[..., Any], **kwargs: Any) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return code(err)


# -- roles ---------------------------------------------------------------------------------------


def test_role_life_cycle(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    role = _role(
        iam,
        "app",
        Path="/service/",
        Description="runs the app",
        MaxSessionDuration=7200,
        Tags=[{"Key": "team", "Value": "ops"}],
    )
    assert role["Arn"] == f"arn:aws:iam::{account.account_id}:role/service/app"
    assert role["RoleId"].startswith("AROA") and len(role["RoleId"]) == 21
    assert role["AssumeRolePolicyDocument"] == TRUST  # answered URL-encoded; boto3 decodes it
    assert role["MaxSessionDuration"] == 7200 and role["Description"] == "runs the app"

    got = iam.get_role(RoleName="app")["Role"]
    assert got["RoleId"] == role["RoleId"] and got["Tags"] == [{"Key": "team", "Value": "ops"}]
    assert [r["RoleName"] for r in iam.list_roles(PathPrefix="/service/")["Roles"]] == ["app"]
    assert iam.list_roles(PathPrefix="/other/")["Roles"] == []

    iam.update_role(RoleName="app", Description="runs it", MaxSessionDuration=43200)
    got = iam.get_role(RoleName="app")["Role"]
    assert got["Description"] == "runs it" and got["MaxSessionDuration"] == 43200
    assert iam.update_role_description(RoleName="app", Description="new")["Role"]["Description"] == "new"
    trust = {**TRUST, "Statement": [{**TRUST["Statement"][0], "Principal": {"AWS": account.account_id}}]}
    iam.update_assume_role_policy(RoleName="app", PolicyDocument=json.dumps(trust))
    assert iam.get_role(RoleName="app")["Role"]["AssumeRolePolicyDocument"] == trust

    iam.delete_role(RoleName="app")
    assert _refused(iam.get_role, RoleName="app") == "NoSuchEntity"
    assert _refused(iam.delete_role, RoleName="app") == "NoSuchEntity"


def test_duplicate_role_name_is_entity_already_exists_in_any_case(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    _role(iam, "worker")
    with pytest.raises(ClientError) as err:
        _role(iam, "WORKER")
    assert code(err) == "EntityAlreadyExists"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_an_underscore_in_a_name_is_no_wildcard(cloud: Cloud, account: Keys) -> None:
    # The name check once compared with LIKE, where "_" matches any character.
    iam = cloud.client("iam", account)
    _role(iam, "axb")
    _role(iam, "a_b")  # the pattern "a_b" matched "axb"
    iam.create_user(UserName="cxd")
    iam.create_user(UserName="c_d")
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["a_b", "axb"]


@pytest.mark.parametrize(
    "document",
    [
        "{not json",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}),
        json.dumps({**TRUST, "Statement": [{**TRUST["Statement"][0], "Resource": "*"}]}),
        json.dumps({**TRUST, "Statement": [{**TRUST["Statement"][0], "Action": "s3:GetObject"}]}),
        json.dumps({**TRUST, "Statement": [{**TRUST["Statement"][0], "Effect": "Maybe"}]}),
    ],
    ids=["not-json", "no-principal", "resource", "not-sts", "bad-effect"],
)
def test_malformed_trust_policy_is_refused(cloud: Cloud, account: Keys, document: str) -> None:
    iam = cloud.client("iam", account)
    assert _refused(iam.create_role, RoleName="bad", AssumeRolePolicyDocument=document) == (
        "MalformedPolicyDocument"
    )
    _role(iam, "good")
    assert _refused(iam.update_assume_role_policy, RoleName="good", PolicyDocument=document) == (
        "MalformedPolicyDocument"
    )
    assert iam.get_role(RoleName="good")["Role"]["AssumeRolePolicyDocument"] == TRUST


def test_max_session_duration_outside_one_to_twelve_hours_is_validation_error(
    cloud: Cloud, account: Keys
) -> None:
    iam = cloud.client("iam", account, config=UNCHECKED)  # the server judges, not botocore
    for seconds in (3599, 43201):
        with pytest.raises(ClientError) as err:
            _role(iam, "short", MaxSessionDuration=seconds)
        assert code(err) == "ValidationError"
    _role(iam, "short")
    assert _refused(iam.update_role, RoleName="short", MaxSessionDuration=100) == "ValidationError"
    assert iam.get_role(RoleName="short")["Role"]["MaxSessionDuration"] == 3600


def test_permissions_boundary_is_refused_as_unsupported(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    with pytest.raises(ClientError) as err:
        _role(iam, "bounded", PermissionsBoundary=EC2_READ_ONLY)
    assert "PermissionsBoundary" in err.value.response["Error"]["Message"]
    assert _refused(iam.get_role, RoleName="bounded") == "NoSuchEntity"


def test_list_roles_paginates_with_marker(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    for i in range(5):
        _role(iam, f"r{i}")
    first = iam.list_roles(MaxItems=2)
    assert first["IsTruncated"] and [r["RoleName"] for r in first["Roles"]] == ["r0", "r1"]
    assert "Tags" not in first["Roles"][0] and first["Roles"][0]["AssumeRolePolicyDocument"] == TRUST
    names = [
        r["RoleName"]
        for page in iam.get_paginator("list_roles").paginate(PaginationConfig={"PageSize": 2})
        for r in page["Roles"]
    ]
    assert names == [f"r{i}" for i in range(5)]


def test_role_inline_policies(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    _role(iam, "reader")
    iam.put_role_policy(RoleName="reader", PolicyName="s3", PolicyDocument=ALLOW_S3_READ)
    got = iam.get_role_policy(RoleName="reader", PolicyName="s3")
    assert got["RoleName"] == "reader" and got["PolicyDocument"] == json.loads(ALLOW_S3_READ)
    assert iam.list_role_policies(RoleName="reader")["PolicyNames"] == ["s3"]
    assert _refused(iam.delete_role, RoleName="reader") == "DeleteConflict"
    assert _refused(iam.put_role_policy, RoleName="reader", PolicyName="x", PolicyDocument="{") == (
        "MalformedPolicyDocument"
    )
    assert _refused(iam.put_role_policy, RoleName="ghost", PolicyName="x", PolicyDocument=ALLOW_S3_READ) == (
        "NoSuchEntity"
    )
    iam.delete_role_policy(RoleName="reader", PolicyName="s3")
    assert _refused(iam.get_role_policy, RoleName="reader", PolicyName="s3") == "NoSuchEntity"
    assert iam.list_role_policies(RoleName="reader")["PolicyNames"] == []
    iam.delete_role(RoleName="reader")


def test_role_managed_policies(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    _role(iam, "ops")
    mine = iam.create_policy(PolicyName="s3-read", Path="/team/", PolicyDocument=ALLOW_S3_READ)["Policy"]
    iam.attach_role_policy(RoleName="ops", PolicyArn=EC2_READ_ONLY)
    iam.attach_role_policy(RoleName="ops", PolicyArn=mine["Arn"])
    attached = iam.list_attached_role_policies(RoleName="ops")["AttachedPolicies"]
    assert sorted(a["PolicyName"] for a in attached) == ["AmazonEC2ReadOnlyAccess", "s3-read"]
    only_team = iam.list_attached_role_policies(RoleName="ops", PathPrefix="/team/")["AttachedPolicies"]
    assert only_team == [{"PolicyName": "s3-read", "PolicyArn": mine["Arn"]}]
    assert iam.get_policy(PolicyArn=mine["Arn"])["Policy"]["AttachmentCount"] == 1
    assert _refused(iam.delete_policy, PolicyArn=mine["Arn"]) == "DeleteConflict"
    assert _refused(iam.delete_role, RoleName="ops") == "DeleteConflict"
    ghost = f"arn:aws:iam::{account.account_id}:policy/ghost"
    assert _refused(iam.attach_role_policy, RoleName="ops", PolicyArn=ghost) == "NoSuchEntity"
    for arn in (EC2_READ_ONLY, mine["Arn"]):
        iam.detach_role_policy(RoleName="ops", PolicyArn=arn)
    assert _refused(iam.detach_role_policy, RoleName="ops", PolicyArn=EC2_READ_ONLY) == "NoSuchEntity"
    assert iam.list_attached_role_policies(RoleName="ops")["AttachedPolicies"] == []
    iam.delete_role(RoleName="ops")
    iam.delete_policy(PolicyArn=mine["Arn"])


def test_role_tags(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    _role(iam, "tagged", Tags=[{"Key": "a", "Value": "1"}])
    iam.tag_role(RoleName="tagged", Tags=[{"Key": "a", "Value": "2"}, {"Key": "b", "Value": "3"}])
    assert iam.list_role_tags(RoleName="tagged")["Tags"] == [
        {"Key": "a", "Value": "2"},
        {"Key": "b", "Value": "3"},
    ]
    iam.untag_role(RoleName="tagged", TagKeys=["a", "never-there"])
    assert iam.get_role(RoleName="tagged")["Role"]["Tags"] == [{"Key": "b", "Value": "3"}]
    many = [{"Key": f"k{i}", "Value": ""} for i in range(50)]
    assert _refused(iam.tag_role, RoleName="tagged", Tags=many) == "LimitExceeded"
    assert _refused(iam.tag_role, RoleName="ghost", Tags=many[:1]) == "NoSuchEntity"
    assert _refused(iam.list_role_tags, RoleName="ghost") == "NoSuchEntity"


def test_role_last_used_is_empty_until_a_session_of_it_is_made(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    trust = {**TRUST, "Statement": [{**TRUST["Statement"][0], "Principal": {"AWS": account.account_id}}]}
    arn = iam.create_role(RoleName="used", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    assert iam.get_role(RoleName="used")["Role"]["RoleLastUsed"] == {}  # as AWS answers a new role

    user = user_keys(cloud, account, allow=["sts:AssumeRole"])  # AWS refuses the root user
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cloud.client("sts", user).assume_role(RoleArn=arn, RoleSessionName="s1")
    used = iam.get_role(RoleName="used")["Role"]["RoleLastUsed"]
    assert used["Region"] == cloud.region
    assert before <= used["LastUsedDate"] <= dt.datetime.now(dt.UTC)
    # ListRoles leaves it out, as AWS does (GetRole has it).
    listed = [r for r in iam.list_roles()["Roles"] if r["RoleName"] == "used"]
    assert len(listed) == 1 and "RoleLastUsed" not in listed[0]

    # A refused AssumeRole is no use of the role.
    stranger = user_keys(cloud, cloud.new_account("lu"), allow=["sts:AssumeRole"])
    with pytest.raises(ClientError):
        cloud.client("sts", stranger).assume_role(RoleArn=arn, RoleSessionName="x1")
    assert iam.get_role(RoleName="used")["Role"]["RoleLastUsed"] == used


def test_instance_role_credentials_are_a_use_of_the_role(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    created = instances.profile(iam, "runner")
    instance = instances.launch(cloud, account, IamInstanceProfile={"Arn": created["Arn"]})
    assert iam.get_role(RoleName="runner")["Role"]["RoleLastUsed"] == {}  # not until they are read
    path = "/latest/meta-data/iam/security-credentials/runner"
    assert instances.metadata(cloud, instance, path, with_token=False)[0] == 200
    used = iam.get_role(RoleName="runner")["Role"]["RoleLastUsed"]
    assert used["Region"] == instance["Placement"]["AvailabilityZone"][:-1] and used["LastUsedDate"]


# -- instance profiles ---------------------------------------------------------------------------


def test_instance_profile_holds_one_role(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    role = _role(iam, "web", Tags=[{"Key": "tier", "Value": "front"}])
    _role(iam, "db")
    profile = iam.create_instance_profile(InstanceProfileName="web", Path="/apps/")["InstanceProfile"]
    assert profile["Arn"] == f"arn:aws:iam::{account.account_id}:instance-profile/apps/web"
    assert profile["InstanceProfileId"].startswith("AIPA") and profile["Roles"] == []

    iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="web")
    held = iam.get_instance_profile(InstanceProfileName="web")["InstanceProfile"]["Roles"]
    assert held == [{**role, "Tags": [{"Key": "tier", "Value": "front"}]}]  # the role's own fields
    assert _refused(iam.add_role_to_instance_profile, InstanceProfileName="web", RoleName="db") == (
        "LimitExceeded"
    )
    assert _refused(iam.add_role_to_instance_profile, InstanceProfileName="web", RoleName="web") == (
        "LimitExceeded"
    )
    for_role = iam.list_instance_profiles_for_role(RoleName="web")["InstanceProfiles"]
    assert [p["InstanceProfileName"] for p in for_role] == ["web"]
    assert iam.list_instance_profiles_for_role(RoleName="db")["InstanceProfiles"] == []
    assert _refused(iam.delete_instance_profile, InstanceProfileName="web") == "DeleteConflict"
    assert _refused(iam.delete_role, RoleName="web") == "DeleteConflict"

    assert _refused(iam.remove_role_from_instance_profile, InstanceProfileName="web", RoleName="db") == (
        "NoSuchEntity"
    )
    iam.remove_role_from_instance_profile(InstanceProfileName="web", RoleName="web")
    assert iam.get_instance_profile(InstanceProfileName="web")["InstanceProfile"]["Roles"] == []
    iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="db")
    iam.remove_role_from_instance_profile(InstanceProfileName="web", RoleName="db")
    iam.delete_instance_profile(InstanceProfileName="web")
    iam.delete_role(RoleName="web")
    assert _refused(iam.get_instance_profile, InstanceProfileName="web") == "NoSuchEntity"
    assert _refused(iam.add_role_to_instance_profile, InstanceProfileName="web", RoleName="db") == (
        "NoSuchEntity"
    )


def test_instance_profile_names_listing_and_tags(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    for i in range(3):
        iam.create_instance_profile(InstanceProfileName=f"p{i}", Tags=[{"Key": "n", "Value": str(i)}])
    assert _refused(iam.create_instance_profile, InstanceProfileName="P0") == "EntityAlreadyExists"
    first = iam.list_instance_profiles(MaxItems=2)
    assert first["IsTruncated"] and [p["InstanceProfileName"] for p in first["InstanceProfiles"]] == [
        "p0",
        "p1",
    ]
    rest = iam.list_instance_profiles(Marker=first["Marker"])
    assert [p["InstanceProfileName"] for p in rest["InstanceProfiles"]] == ["p2"] and not rest["IsTruncated"]
    assert iam.list_instance_profiles(PathPrefix="/nowhere/")["InstanceProfiles"] == []

    iam.tag_instance_profile(InstanceProfileName="p0", Tags=[{"Key": "env", "Value": "prod"}])
    iam.untag_instance_profile(InstanceProfileName="p0", TagKeys=["n"])
    assert iam.list_instance_profile_tags(InstanceProfileName="p0")["Tags"] == [
        {"Key": "env", "Value": "prod"}
    ]
    assert iam.get_instance_profile(InstanceProfileName="p0")["InstanceProfile"]["Tags"] == [
        {"Key": "env", "Value": "prod"}
    ]
    assert _refused(iam.list_instance_profile_tags, InstanceProfileName="ghost") == "NoSuchEntity"
    assert _refused(iam.delete_instance_profile, InstanceProfileName="ghost") == "NoSuchEntity"


def test_roles_and_instance_profiles_with_the_aws_cli(cloud: Cloud, account: Keys) -> None:
    created = aws(
        cloud,
        "iam",
        "create-role",
        "--role-name",
        "cli-role",
        "--assume-role-policy-document",
        json.dumps(TRUST),
        "--max-session-duration",
        "3600",
        keys=account,
    )["Role"]
    assert created["Arn"] == f"arn:aws:iam::{account.account_id}:role/cli-role"
    assert created["RoleId"].startswith("AROA") and created["Path"] == "/"
    assert created["AssumeRolePolicyDocument"] == TRUST and created["MaxSessionDuration"] == 3600
    aws(cloud, "iam", "update-role", "--role-name", "cli-role", "--description", "runs the cli",
        "--max-session-duration", "7200", keys=account)  # fmt: skip
    trust = {**TRUST, "Statement": [{**TRUST["Statement"][0], "Principal": {"AWS": account.account_id}}]}
    aws(cloud, "iam", "update-assume-role-policy", "--role-name", "cli-role",
        "--policy-document", json.dumps(trust), keys=account)  # fmt: skip
    got = aws(cloud, "iam", "get-role", "--role-name", "cli-role", keys=account)["Role"]
    assert (got["RoleName"], got["RoleId"], got["Description"], got["MaxSessionDuration"]) == (
        "cli-role",
        created["RoleId"],
        "runs the cli",
        7200,
    )
    assert got["AssumeRolePolicyDocument"] == trust
    listed = aws(cloud, "iam", "list-roles", keys=account)["Roles"]
    assert [(r["RoleName"], r["Arn"]) for r in listed] == [("cli-role", created["Arn"])]

    aws(cloud, "iam", "tag-role", "--role-name", "cli-role", "--tags", "Key=team,Value=ops",
        "Key=tier,Value=back", keys=account)  # fmt: skip
    aws(cloud, "iam", "untag-role", "--role-name", "cli-role", "--tag-keys", "tier", keys=account)
    assert aws(cloud, "iam", "list-role-tags", "--role-name", "cli-role", keys=account) == {
        "Tags": [{"Key": "team", "Value": "ops"}]
    }

    aws(cloud, "iam", "put-role-policy", "--role-name", "cli-role", "--policy-name", "p",
        "--policy-document", ALLOW_S3_READ, keys=account)  # fmt: skip
    assert aws(
        cloud, "iam", "get-role-policy", "--role-name", "cli-role", "--policy-name", "p", keys=account
    ) == {
        "RoleName": "cli-role",
        "PolicyName": "p",
        "PolicyDocument": json.loads(ALLOW_S3_READ),
    }
    assert aws(cloud, "iam", "list-role-policies", "--role-name", "cli-role", keys=account) == {
        "PolicyNames": ["p"]
    }
    aws(cloud, "iam", "attach-role-policy", "--role-name", "cli-role", "--policy-arn", EC2_READ_ONLY,
        keys=account)  # fmt: skip
    assert aws(cloud, "iam", "list-attached-role-policies", "--role-name", "cli-role", keys=account) == {
        "AttachedPolicies": [{"PolicyName": "AmazonEC2ReadOnlyAccess", "PolicyArn": EC2_READ_ONLY}]
    }

    profile = aws(
        cloud, "iam", "create-instance-profile", "--instance-profile-name", "cli-profile", keys=account
    )["InstanceProfile"]
    assert profile["Arn"] == f"arn:aws:iam::{account.account_id}:instance-profile/cli-profile"
    assert profile["InstanceProfileId"].startswith("AIPA") and profile["Roles"] == []
    aws(cloud, "iam", "add-role-to-instance-profile", "--instance-profile-name", "cli-profile",
        "--role-name", "cli-role", keys=account)  # fmt: skip
    got_profile = aws(
        cloud, "iam", "get-instance-profile", "--instance-profile-name", "cli-profile", keys=account
    )["InstanceProfile"]
    assert got_profile["InstanceProfileId"] == profile["InstanceProfileId"]
    assert [r["RoleName"] for r in got_profile["Roles"]] == ["cli-role"]
    assert got_profile["Roles"][0]["AssumeRolePolicyDocument"] == trust
    listed_profiles = aws(cloud, "iam", "list-instance-profiles", keys=account)["InstanceProfiles"]
    assert [(p["InstanceProfileName"], [r["RoleName"] for r in p["Roles"]]) for p in listed_profiles] == [
        ("cli-profile", ["cli-role"])
    ]
    for_role = aws(cloud, "iam", "list-instance-profiles-for-role", "--role-name", "cli-role", keys=account)
    assert [p["Arn"] for p in for_role["InstanceProfiles"]] == [profile["Arn"]]

    # The CLI prints AWS's error code and message for a role still in use.
    assert aws_refusal(cloud, "iam", "delete-role", "--role-name", "cli-role", keys=account) == (
        "DeleteConflict",
        "Cannot delete entity, must remove roles from instance profile first.",
    )
    aws(cloud, "iam", "remove-role-from-instance-profile", "--instance-profile-name", "cli-profile",
        "--role-name", "cli-role", keys=account)  # fmt: skip
    aws(cloud, "iam", "delete-instance-profile", "--instance-profile-name", "cli-profile", keys=account)
    aws(cloud, "iam", "delete-role-policy", "--role-name", "cli-role", "--policy-name", "p", keys=account)
    assert aws_refusal(cloud, "iam", "delete-role", "--role-name", "cli-role", keys=account) == (
        "DeleteConflict",
        "Cannot delete entity, must remove attached policies first.",
    )
    aws(cloud, "iam", "detach-role-policy", "--role-name", "cli-role", "--policy-arn", EC2_READ_ONLY,
        keys=account)  # fmt: skip
    aws(cloud, "iam", "delete-role", "--role-name", "cli-role", keys=account)
    assert aws(cloud, "iam", "list-roles", keys=account)["Roles"] == []
    assert cloud.client("iam", account).list_instance_profiles()["InstanceProfiles"] == []


def test_another_account_sees_no_roles_or_profiles(cloud: Cloud, account: Keys) -> None:
    mine = cloud.client("iam", account)
    _role(mine, "private")
    mine.create_instance_profile(InstanceProfileName="private")
    mine.add_role_to_instance_profile(InstanceProfileName="private", RoleName="private")
    other = cloud.client("iam", cloud.new_account())
    assert other.list_roles()["Roles"] == [] and other.list_instance_profiles()["InstanceProfiles"] == []
    assert _refused(other.get_role, RoleName="private") == "NoSuchEntity"
    assert _refused(other.get_instance_profile, InstanceProfileName="private") == "NoSuchEntity"
    assert _refused(other.list_instance_profiles_for_role, RoleName="private") == "NoSuchEntity"
    assert _refused(
        other.put_role_policy, RoleName="private", PolicyName="p", PolicyDocument=ALLOW_S3_READ
    ) == ("NoSuchEntity")
    assert _refused(
        other.remove_role_from_instance_profile, InstanceProfileName="private", RoleName="private"
    ) == ("NoSuchEntity")
    _role(other, "private")  # names are per account
    assert mine.get_role(RoleName="private")["Role"]["Arn"].startswith(f"arn:aws:iam::{account.account_id}:")


def test_delete_account_needs_recursive_while_it_has_roles(cloud: Cloud) -> None:
    doomed = cloud.new_account()
    iam = cloud.client("iam", doomed)
    _role(iam, "r")
    iam.put_role_policy(RoleName="r", PolicyName="p", PolicyDocument=ALLOW_S3_READ)
    iam.attach_role_policy(RoleName="r", PolicyArn=EC2_READ_ONLY)
    iam.create_instance_profile(InstanceProfileName="ip")
    iam.add_role_to_instance_profile(InstanceProfileName="ip", RoleName="r")
    api = cloud.admin_api()
    with pytest.raises(ApiError) as err:
        api.call("iam", "DeleteAccount", {"AccountName": doomed.account_id})
    assert err.value.code == "DeleteConflict"
    api.call("iam", "DeleteAccount", {"AccountName": doomed.account_id, "Recursive": "true"})
    listed = api.call("iam", "ListAccounts", {})
    assert doomed.account_id not in [e.text for e in listed.iter() if e.tag.endswith("AccountId")]


# -- races ---------------------------------------------------------------------------------------


def _race(cloud: Cloud, keys: Keys, params: dict[str, str], n: int = 8) -> list[int]:
    """One IAM request sent `n` times at once, each on a connection of its own; the HTTP statuses.
    Signed and connected beforehand: boto3 signs each call under the GIL, which spaces the calls
    out enough that they would rarely meet in the server."""
    body = urlencode({"Version": "2010-05-08", **params})
    request = AWSRequest(
        method="POST",
        url=cloud.endpoint.rstrip("/") + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    credentials = ReadOnlyCredentials(keys.access_key_id, keys.secret_access_key, None)
    SigV4Auth(credentials, "iam", cloud.region).add_auth(request)
    headers = dict(request.prepare().headers.items())
    endpoint = urlsplit(cloud.endpoint)
    connections = [
        http.client.HTTPConnection(endpoint.hostname or "", endpoint.port, timeout=60) for _ in range(n)
    ]
    start = threading.Barrier(n)
    statuses: list[int] = []

    def send(connection: http.client.HTTPConnection) -> None:
        connection.connect()
        start.wait()
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        connection.close()

    threads = [threading.Thread(target=send, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


ONE_WINNER = [200] + [409] * 7  # 409: EntityAlreadyExists; never a 500 from the unique constraint


@pytest.mark.parametrize(
    ("action", "member"),
    [
        ("CreateRole", "RoleName"),
        ("CreateInstanceProfile", "InstanceProfileName"),
        ("CreateUser", "UserName"),
        ("CreateGroup", "GroupName"),
    ],
)
def test_concurrent_creates_of_one_name_give_one_entity(
    cloud: Cloud, account: Keys, action: str, member: str
) -> None:
    extra = {"AssumeRolePolicyDocument": json.dumps(TRUST)} if action == "CreateRole" else {}
    for i in range(4):  # a few rounds: one alone does not always meet in the server
        assert _race(cloud, account, {"Action": action, member: f"racer{i}", **extra}) == ONE_WINNER
    names = {
        "CreateRole": lambda iam: [r["RoleName"] for r in iam.list_roles()["Roles"]],
        "CreateInstanceProfile": lambda iam: [
            p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
        ],
        "CreateUser": lambda iam: [u["UserName"] for u in iam.list_users()["Users"]],
        "CreateGroup": lambda iam: [g["GroupName"] for g in iam.list_groups()["Groups"]],
    }[action]
    assert names(cloud.client("iam", account)) == [f"racer{i}" for i in range(4)]


def test_concurrent_create_account_of_one_name_gives_one_account(cloud: Cloud, account: Keys) -> None:
    for i in range(4):
        name = f"race{i}-{account.access_key_id[-8:].lower()}"
        assert _race(cloud, cloud.admin, {"Action": "CreateAccount", "AccountName": name}) == ONE_WINNER
