"""STS AssumeRole through boto3 and the aws CLI: who may assume a role (trust policy and the caller's
own policies, in one account and across two; never an account's root user), trust conditions, role
sessions' identity and permissions (the role's, narrowed by session policies), durations, expiry,
and S3 with a session."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import code
from support.cloud import Cloud, Keys, aws, aws_refusal, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

UNCHECKED = BotoConfig(parameter_validation=False, retries={"max_attempts": 1})


def _trust(*principals: str, condition: dict[str, Any] | None = None) -> str:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": list(principals)},
        "Action": "sts:AssumeRole",
    }
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _allow(*actions: str, resource: str = "*", effect: str = "Allow") -> str:
    statement = {"Effect": effect, "Action": list(actions), "Resource": resource}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _role(cloud: Cloud, root: Keys, trust: str, *allow: str, **kwargs: Any) -> str:
    """A new role of `root`'s account trusting as `trust` says, allowed `allow` on everything; its ARN."""
    iam = cloud.client("iam", root)
    name = f"r-{secrets.token_hex(3)}"
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, **kwargs)["Role"]["Arn"]
    if allow:
        iam.put_role_policy(RoleName=name, PolicyName="allow", PolicyDocument=_allow(*allow))
    return arn


def _assume(cloud: Cloud, keys: Keys, role_arn: str, **kwargs: Any) -> dict[str, Any]:
    answer: dict[str, Any] = cloud.client("sts", keys, config=UNCHECKED).assume_role(
        RoleArn=role_arn, RoleSessionName=kwargs.pop("RoleSessionName", "s1"), **kwargs
    )
    return answer


def _session(answer: dict[str, Any]) -> Keys:
    creds = answer["Credentials"]
    return Keys(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


def _refused(cloud: Cloud, keys: Keys, role_arn: str, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as err:
        _assume(cloud, keys, role_arn, **kwargs)
    return err.value


def _user_arn(cloud: Cloud, keys: Keys) -> str:
    return str(cloud.client("sts", keys).get_caller_identity()["Arn"])


# -- who may assume a role -----------------------------------------------------------------------


def _assumer(cloud: Cloud, root: Keys) -> Keys:
    """A new IAM user of `root`'s account allowed sts:AssumeRole on every role (AWS refuses the
    operation to an account's root user: its users assume roles)."""
    return user_keys(cloud, root, allow=["sts:AssumeRole"])


def test_user_named_in_trust_policy_assumes_without_a_policy_of_its_own(cloud: Cloud, account: Keys) -> None:
    user = user_keys(cloud, account)
    role_arn = _role(cloud, account, _trust(_user_arn(cloud, user)), "ec2:Describe*")
    role_id = cloud.client("iam", account).get_role(RoleName=role_arn.rsplit("/", 1)[1])["Role"]["RoleId"]
    answer = _assume(cloud, user, role_arn, RoleSessionName="alice@example.com")
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SessionToken"]
    remaining = creds["Expiration"] - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < remaining <= dt.timedelta(hours=1)  # the default hour
    session_arn = (
        f"arn:aws:sts::{account.account_id}:assumed-role/{role_arn.rsplit('/', 1)[1]}/alice@example.com"
    )
    assert answer["AssumedRoleUser"] == {"AssumedRoleId": f"{role_id}:alice@example.com", "Arn": session_arn}
    assert "PackedPolicySize" not in answer

    me = cloud.client("sts", _session(answer)).get_caller_identity()
    assert (me["Arn"], me["UserId"], me["Account"]) == (
        session_arn,
        f"{role_id}:alice@example.com",
        account.account_id,
    )
    cloud.client("ec2", _session(answer)).describe_regions()  # what the role allows
    with pytest.raises(ClientError) as err:
        cloud.client("iam", _session(answer)).list_users()  # and nothing more
    assert code(err) == "AccessDenied" and session_arn in err.value.response["Error"]["Message"]


def test_trust_naming_the_account_needs_the_callers_own_policy(cloud: Cloud, account: Keys) -> None:
    role_arn = _role(cloud, account, _trust(account.account_id))
    bare = user_keys(cloud, account)
    err = _refused(cloud, bare, role_arn)
    assert err.response["Error"]["Code"] == "AccessDenied"
    assert err.response["Error"]["Message"] == (
        f"User: {_user_arn(cloud, bare)} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
    )
    # An Allow on another role's ARN is no Allow on this one.
    other = user_keys(cloud, account)
    cloud.client("iam", account).put_user_policy(
        UserName=_user_arn(cloud, other).rsplit("/", 1)[1],
        PolicyName="p",
        PolicyDocument=_allow("sts:AssumeRole", resource=role_arn + "-not"),
    )
    assert _refused(cloud, other, role_arn).response["Error"]["Code"] == "AccessDenied"
    allowed = user_keys(cloud, account)
    cloud.client("iam", account).put_user_policy(
        UserName=_user_arn(cloud, allowed).rsplit("/", 1)[1],
        PolicyName="p",
        PolicyDocument=_allow("sts:AssumeRole", resource=role_arn),
    )
    _assume(cloud, allowed, role_arn)


def test_the_root_user_may_not_assume_a_role_whatever_the_trust_policy_says(
    cloud: Cloud, account: Keys
) -> None:
    by_account = _role(cloud, account, _trust(account.account_id))
    by_root_arn = _role(cloud, account, _trust(f"arn:aws:iam::{account.account_id}:root"))
    for role_arn in (by_account, by_root_arn):
        err = _refused(cloud, account, role_arn)
        assert (err.response["Error"]["Code"], err.response["Error"]["Message"]) == (
            "AccessDenied",
            "Roles may not be assumed by root accounts.",
        )
        _assume(cloud, _assumer(cloud, account), role_arn)  # the account's users get in


def test_a_missing_role_is_refused_like_a_forbidden_one(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    missing = f"arn:aws:iam::{account.account_id}:role/nobody"
    assert _refused(cloud, assumer, missing).response["Error"]["Code"] == "AccessDenied"
    assert _refused(cloud, assumer, "arn:aws:iam::123:role/x").response["Error"]["Code"] == "ValidationError"


def test_service_principals_never_match_a_signed_caller(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    role_arn = _role(cloud, account, trust)
    assert _refused(cloud, assumer, role_arn).response["Error"]["Code"] == "AccessDenied"


def test_cross_account_needs_both_the_trust_policy_and_the_callers_policy(cloud: Cloud) -> None:
    owner, other = cloud.new_account("own"), cloud.new_account("oth")
    trusting = _role(cloud, owner, _trust(other.account_id), "ec2:Describe*")
    distrusting = _role(cloud, owner, _trust(owner.account_id), "ec2:Describe*")
    bare = user_keys(cloud, other)
    assert _refused(cloud, bare, trusting).response["Error"]["Code"] == "AccessDenied"
    allowed = user_keys(cloud, other, allow=["sts:AssumeRole"])
    session = _session(_assume(cloud, allowed, trusting))
    me = cloud.client("sts", session).get_caller_identity()
    assert me["Account"] == owner.account_id  # the session acts in the role's account
    cloud.client("ec2", session).describe_regions()
    assert _refused(cloud, allowed, distrusting).response["Error"]["Code"] == "AccessDenied"
    admin = user_keys(cloud, other, allow=["*"])
    assert _refused(cloud, admin, distrusting).response["Error"]["Code"] == "AccessDenied"
    # An administrator of the other account, trusted through its account, has its own permissions.
    _assume(cloud, admin, trusting)
    # A trust policy naming the user itself still needs the user's own Allow across accounts.
    named = _role(cloud, owner, _trust(_user_arn(cloud, bare)))
    assert _refused(cloud, bare, named).response["Error"]["Code"] == "AccessDenied"


def test_trust_conditions_external_id_and_principal_arn(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(
        cloud, account, _trust(account.account_id, condition={"StringEquals": {"sts:ExternalId": "ext-42"}})
    )
    assert _refused(cloud, assumer, role_arn).response["Error"]["Code"] == "AccessDenied"
    assert _refused(cloud, assumer, role_arn, ExternalId="ext-43").response["Error"]["Code"] == "AccessDenied"
    _assume(cloud, assumer, role_arn, ExternalId="ext-42")

    ops = user_keys(cloud, account, name=f"ops-{secrets.token_hex(2)}", allow=["sts:AssumeRole"])
    dev = user_keys(cloud, account, name=f"dev-{secrets.token_hex(2)}", allow=["sts:AssumeRole"])
    by_arn = _role(
        cloud,
        account,
        _trust(
            account.account_id,
            condition={
                "ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{account.account_id}:user/ops-*"},
                "StringEquals": {"aws:PrincipalAccount": account.account_id},
            },
        ),
    )
    _assume(cloud, ops, by_arn)
    assert _refused(cloud, dev, by_arn).response["Error"]["Code"] == "AccessDenied"


def test_explicit_deny_in_the_trust_policy_wins(cloud: Cloud, account: Keys) -> None:
    user = user_keys(cloud, account, allow=["sts:AssumeRole"])
    trust = json.loads(_trust(account.account_id))
    trust["Statement"].append(
        {"Effect": "Deny", "Principal": {"AWS": _user_arn(cloud, user)}, "Action": "sts:AssumeRole"}
    )
    role_arn = _role(cloud, account, json.dumps(trust))
    assert _refused(cloud, user, role_arn).response["Error"]["Code"] == "AccessDenied"
    _assume(cloud, _assumer(cloud, account), role_arn)  # a user the Deny does not name


def test_unsupported_parameters_are_refused_by_name(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(cloud, account, _trust(account.account_id))
    err = _refused(cloud, assumer, role_arn, Tags=[{"Key": "k", "Value": "v"}])
    assert (
        err.response["Error"]["Code"] == "UnsupportedOperation" and "Tags" in err.response["Error"]["Message"]
    )
    err = _refused(cloud, assumer, role_arn, SourceIdentity="me")
    assert "SourceIdentity" in err.response["Error"]["Message"]


# -- what a session may do -------------------------------------------------------------------------


def test_session_policy_narrows_what_the_role_allows(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(cloud, account, _trust(account.account_id), "ec2:Describe*", "iam:List*")
    answer = _assume(cloud, assumer, role_arn, Policy=_allow("ec2:DescribeRegions", "s3:*"))
    assert 0 < answer["PackedPolicySize"] <= 100
    narrowed = _session(answer)
    cloud.client("ec2", narrowed).describe_regions()
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", narrowed).describe_key_pairs()  # the role allows it; the session does not
    assert code(err) == "UnauthorizedOperation"
    with pytest.raises(ClientError) as err:
        cloud.client("s3", narrowed).list_buckets()  # the session allows it; the role does not
    assert code(err) == "AccessDenied"

    # Managed session policies too, and a session without them has the role's permissions.
    managed = _session(
        _assume(cloud, assumer, role_arn, PolicyArns=[{"arn": "arn:aws:iam::aws:policy/IAMReadOnlyAccess"}])
    )
    cloud.client("iam", managed).list_roles()
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", managed).describe_regions()
    assert code(err) == "UnauthorizedOperation"
    whole = _session(_assume(cloud, assumer, role_arn))
    cloud.client("ec2", whole).describe_key_pairs()
    cloud.client("iam", whole).list_roles()  # a role session may call IAM, unlike GetSessionToken's


def test_explicit_deny_in_role_or_session_policy_wins(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(cloud, account, _trust(account.account_id), "ec2:*")
    name = role_arn.rsplit("/", 1)[1]
    cloud.client("iam", account).put_role_policy(
        RoleName=name, PolicyName="deny", PolicyDocument=_allow("ec2:DescribeKeyPairs", effect="Deny")
    )
    session = _session(_assume(cloud, assumer, role_arn, Policy=_allow("ec2:*")))
    cloud.client("ec2", session).describe_regions()
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", session).describe_key_pairs()
    assert code(err) == "UnauthorizedOperation"
    denying = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "ec2:DescribeRegions", "Resource": "*"},
            ],
        }
    )
    session = _session(_assume(cloud, assumer, role_arn, Policy=denying))
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", session).describe_regions()
    assert code(err) == "UnauthorizedOperation"


def test_session_policies_are_validated(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(cloud, account, _trust(account.account_id))
    assert _refused(cloud, assumer, role_arn, Policy="{not json").response["Error"]["Code"] == (
        "MalformedPolicyDocument"
    )
    big = _allow(*[f"ec2:Describe{i:04d}Thing" for i in range(120)])
    assert _refused(cloud, assumer, role_arn, Policy=big).response["Error"]["Code"] == "PackedPolicyTooLarge"
    missing = f"arn:aws:iam::{account.account_id}:policy/none"
    assert _refused(cloud, assumer, role_arn, PolicyArns=[{"arn": missing}]).response["Error"]["Code"] == (
        "ValidationError"
    )


def test_role_session_cannot_get_a_session_token_or_manage_keys_of_its_own(
    cloud: Cloud, account: Keys
) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(cloud, account, _trust(account.account_id), "iam:*")
    session = _session(_assume(cloud, assumer, role_arn))
    with pytest.raises(ClientError) as err:
        cloud.client("sts", session).get_session_token()
    assert code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:
        cloud.client("iam", session).create_access_key()  # no root keys through a role
    assert code(err) == "ValidationError"


# -- durations and expiry --------------------------------------------------------------------------


def test_duration_is_bounded_by_the_role_and_by_role_chaining(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    short = _role(cloud, account, _trust(account.account_id))
    err = _refused(cloud, assumer, short, DurationSeconds=3601)
    assert (err.response["Error"]["Code"], err.response["Error"]["Message"]) == (
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    )
    assert _refused(cloud, assumer, short, DurationSeconds=899).response["Error"]["Code"] == "ValidationError"
    long = _role(cloud, account, _trust(account.account_id), "sts:AssumeRole", MaxSessionDuration=7200)
    creds = _assume(cloud, assumer, long, DurationSeconds=7200)["Credentials"]
    assert creds["Expiration"] - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=119)

    # Role chaining: a session of `long` assumes `chained` (whose trust names `long`), for an hour at most.
    chained = _role(cloud, account, _trust(long), MaxSessionDuration=7200)
    first = _session(_assume(cloud, assumer, long))
    err = _refused(cloud, first, chained, DurationSeconds=3601)
    assert (
        err.response["Error"]["Code"] == "ValidationError"
        and "role chaining" in err.response["Error"]["Message"]
    )
    second = _assume(cloud, first, chained, RoleSessionName="hop", DurationSeconds=900)
    assert second["AssumedRoleUser"]["Arn"].endswith(f"assumed-role/{chained.rsplit('/', 1)[1]}/hop")


def test_role_session_expires(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    role_arn = _role(cloud, account, _trust(account.account_id), "ec2:Describe*")
    session = _session(_assume(cloud, assumer, role_arn, DurationSeconds=900))
    cloud.client("ec2", session).describe_regions()
    with pytest.raises(ClientError) as err:  # without its token the key is worthless
        cloud.client("sts", Keys(session.access_key_id, session.secret_access_key)).get_caller_identity()
    assert code(err) == "InvalidClientTokenId"
    # Move the expiry into the past in the database of record (waiting 15 minutes is no test).
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    cloud.set_key_expiry(session.access_key_id, past)
    deadline = time.monotonic() + 10
    while True:
        try:
            cloud.client("sts", session).get_caller_identity()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ExpiredToken"
            break
        assert time.monotonic() < deadline, "role session still accepted after expiry"
        time.sleep(0.5)


def test_assume_role_with_the_aws_cli(cloud: Cloud, account: Keys) -> None:
    role_arn = _role(cloud, account, _trust(account.account_id), "ec2:Describe*")
    role_id = cloud.client("iam", account).get_role(RoleName=role_arn.rsplit("/", 1)[1])["Role"]["RoleId"]
    answer = aws(
        cloud, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "cli",
        "--duration-seconds", "900", "--policy", _allow("ec2:DescribeRegions"),
        keys=_assumer(cloud, account),
    )  # fmt: skip
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SecretAccessKey"] and creds["SessionToken"]
    remaining = dt.datetime.fromisoformat(creds["Expiration"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=14) < remaining <= dt.timedelta(minutes=15)
    session_arn = f"arn:aws:sts::{account.account_id}:assumed-role/{role_arn.rsplit('/', 1)[1]}/cli"
    assert answer["AssumedRoleUser"] == {"AssumedRoleId": f"{role_id}:cli", "Arn": session_arn}
    assert 0 < answer["PackedPolicySize"] <= 100

    # The session's keys in the environment, as a user exports them.
    assert aws(cloud, "sts", "get-caller-identity", keys=_session(answer)) == {
        "UserId": f"{role_id}:cli",
        "Account": account.account_id,
        "Arn": session_arn,
    }
    # And the CLI prints AWS's refusal of the root user.
    assert aws_refusal(
        cloud, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "root", keys=account
    ) == ("AccessDenied", "Roles may not be assumed by root accounts.")


# -- S3 with a role session ------------------------------------------------------------------------


def test_s3_with_a_role_session_follows_the_roles_policies(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    s3 = cloud.client("s3", account)
    mine, other = f"rs-{secrets.token_hex(4)}", f"rs-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=mine)
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="k", Body=b"other")
    role_arn = _role(cloud, account, _trust(account.account_id))
    cloud.client("iam", account).put_role_policy(
        RoleName=role_arn.rsplit("/", 1)[1],
        PolicyName="bucket",
        PolicyDocument=_allow("s3:PutObject", "s3:GetObject", resource=f"arn:aws:s3:::{mine}/*"),
    )
    session = cloud.client("s3", _session(_assume(cloud, assumer, role_arn)))
    session.put_object(Bucket=mine, Key="k", Body=b"mine")
    assert session.get_object(Bucket=mine, Key="k")["Body"].read() == b"mine"
    with pytest.raises(ClientError) as err:
        session.get_object(Bucket=other, Key="k")
    assert code(err) == "AccessDenied"
    # A session policy narrows S3 too.
    narrowed = cloud.client("s3", _session(_assume(cloud, assumer, role_arn, Policy=_allow("s3:GetObject"))))
    assert narrowed.get_object(Bucket=mine, Key="k")["Body"].read() == b"mine"
    with pytest.raises(ClientError) as err:
        narrowed.put_object(Bucket=mine, Key="k2", Body=b"no")
    assert code(err) == "AccessDenied"


def test_bucket_policy_naming_the_role_or_the_session_applies_to_it(cloud: Cloud) -> None:
    owner, other = cloud.new_account("bown"), cloud.new_account("brol")
    s3 = cloud.client("s3", owner)
    bucket = f"rp-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"shared")
    role_arn = _role(cloud, other, _trust(other.account_id), "s3:GetObject")
    assumer = _assumer(cloud, other)
    session_keys = _session(_assume(cloud, assumer, role_arn, RoleSessionName="reader"))
    reader = cloud.client("s3", session_keys)
    with pytest.raises(ClientError) as err:
        reader.get_object(Bucket=bucket, Key="k")  # its own Allow is not enough in another account
    assert code(err) == "AccessDenied"

    def grant(principal: str) -> None:
        statement = {
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        s3.put_bucket_policy(
            Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        )

    def reads() -> bool:
        deadline = time.monotonic() + 10
        while True:
            try:
                return bool(reader.get_object(Bucket=bucket, Key="k")["Body"].read() == b"shared")
            except ClientError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.3)

    grant(role_arn)
    assert reads()
    grant(cloud.client("sts", session_keys).get_caller_identity()["Arn"])
    assert reads()
    grant(f"arn:aws:iam::{other.account_id}:role/someone-else")
    with pytest.raises(ClientError) as err:
        reader.get_object(Bucket=bucket, Key="k")
    assert code(err) == "AccessDenied"


def _bucket_policy(s3: Any, bucket: str, *statements: tuple[str, str | list[str]]) -> None:
    """Set the bucket's policy: one s3:GetObject statement per (effect, principals) given."""
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": effect,
                        "Principal": {"AWS": principals},
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                    }
                    for effect, principals in statements
                ],
            }
        ),
    )


def _reads(s3: Any, bucket: str) -> bool:
    try:
        return bool(s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"shared")
    except ClientError as err:
        assert err.response["Error"]["Code"] == "AccessDenied"
        return False


def test_session_policies_bound_a_bucket_policy_naming_the_role_not_one_naming_the_session(
    cloud: Cloud, account: Keys
) -> None:
    assumer = _assumer(cloud, account)
    s3 = cloud.client("s3", account)
    bucket = f"sp-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"shared")
    role_arn = _role(cloud, account, _trust(account.account_id), "ec2:Describe*")  # no S3 of its own
    session_arn = f"arn:aws:sts::{account.account_id}:assumed-role/{role_arn.rsplit('/', 1)[1]}/narrow"
    whole = cloud.client("s3", _session(_assume(cloud, assumer, role_arn, RoleSessionName="whole")))
    narrow = cloud.client(
        "s3", _session(_assume(cloud, assumer, role_arn, RoleSessionName="narrow", Policy=_allow("ec2:*")))
    )

    # Naming the role: its sessions get what their session policies also allow.
    _bucket_policy(s3, bucket, ("Allow", role_arn))
    assert _reads(whole, bucket)
    assert not _reads(narrow, bucket)
    # Naming the session itself: granted despite the session policy.
    _bucket_policy(s3, bucket, ("Allow", session_arn))
    assert _reads(narrow, bucket)
    assert not _reads(whole, bucket)  # another session of the role is not named
    # An explicit Deny still wins: in the bucket policy ...
    _bucket_policy(s3, bucket, ("Allow", session_arn), ("Deny", role_arn))
    assert not _reads(narrow, bucket)
    # ... and in the session policy, whatever the bucket policy grants the session.
    denying = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"},
            ],
        }
    )
    denied = cloud.client(
        "s3", _session(_assume(cloud, assumer, role_arn, RoleSessionName="narrow", Policy=denying))
    )
    _bucket_policy(s3, bucket, ("Allow", [session_arn, role_arn]))
    assert _reads(narrow, bucket) and not _reads(denied, bucket)


def test_session_policies_bound_a_cross_account_bucket_policy(cloud: Cloud) -> None:
    owner, other = cloud.new_account("spown"), cloud.new_account("sprol")
    s3 = cloud.client("s3", owner)
    bucket = f"sx-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"shared")
    role_arn = _role(cloud, other, _trust(other.account_id), "s3:GetObject")
    assumer = _assumer(cloud, other)
    whole = cloud.client("s3", _session(_assume(cloud, assumer, role_arn, RoleSessionName="whole")))
    narrow_keys = _session(
        _assume(cloud, assumer, role_arn, RoleSessionName="narrow", Policy=_allow("ec2:*"))
    )
    narrow = cloud.client("s3", narrow_keys)
    session_arn = cloud.client("sts", narrow_keys).get_caller_identity()["Arn"]

    # Across accounts the bucket policy and the session's own permissions (its role's within its
    # session policies) must both allow, whichever of the role or the session the policy names.
    for named in (role_arn, session_arn, other.account_id):
        _bucket_policy(s3, bucket, ("Allow", [named]))
        assert not _reads(narrow, bucket), named
    _bucket_policy(s3, bucket, ("Allow", role_arn))
    assert _reads(whole, bucket)


def test_chained_session_policies_bound_a_trust_policy_naming_the_role(cloud: Cloud, account: Keys) -> None:
    assumer = _assumer(cloud, account)
    first = _role(cloud, account, _trust(account.account_id), "sts:AssumeRole")
    second = _role(cloud, account, _trust(first))
    narrow = _session(_assume(cloud, assumer, first, Policy=_allow("ec2:*")))
    assert _refused(cloud, narrow, second).response["Error"]["Code"] == "AccessDenied"
    _assume(cloud, _session(_assume(cloud, assumer, first, Policy=_allow("sts:AssumeRole"))), second)
