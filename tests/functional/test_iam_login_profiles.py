"""IAM login profiles (console passwords), the account's password policy and ChangePassword,
through boto3, the aws CLI and `mallee console-password`, as a user would call them."""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import status
from support.cloud import VENV_BIN, Cloud, Keys, aws, aws_refusal, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

# Out-of-range values must reach the cloud, not stop in botocore's own checks.
UNCHECKED = BotoConfig(parameter_validation=False, retries={"max_attempts": 1})
STRONG = "Correct-Horse-7"  # meets AWS's default password policy
OTHER = "Battery-Staple-8"


def _user_with_profile(cloud: Cloud, root: Keys, password: str = STRONG, **kwargs: Any) -> str:
    iam = cloud.client("iam", root)
    name = f"u-{secrets.token_hex(3)}"
    iam.create_user(UserName=name)
    iam.create_login_profile(UserName=name, Password=password, **kwargs)
    return name


def _allow(*actions: str, resource: str = "*", effect: str = "Allow") -> str:
    statement = {"Effect": effect, "Action": list(actions), "Resource": resource}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _refused(call: Any, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value


def _code(err: ClientError) -> str:
    return str(err.response["Error"]["Code"])


# -- login profiles --------------------------------------------------------------------------------


def test_login_profile_life_cycle(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="ann")
    made = iam.create_login_profile(UserName="ann", Password=STRONG, PasswordResetRequired=True)
    profile = made["LoginProfile"]
    assert profile["UserName"] == "ann" and profile["PasswordResetRequired"] is True
    assert iam.get_login_profile(UserName="ann")["LoginProfile"] == profile

    iam.update_login_profile(UserName="ann", PasswordResetRequired=False)
    iam.update_login_profile(UserName="ann", Password=OTHER)
    got = iam.get_login_profile(UserName="ann")["LoginProfile"]
    assert got["PasswordResetRequired"] is False
    assert got["CreateDate"] == profile["CreateDate"]  # the first password's date, as AWS answers

    iam.delete_login_profile(UserName="ann")
    err = _refused(iam.get_login_profile, UserName="ann")
    assert _code(err) == "NoSuchEntity"
    assert err.response["Error"]["Message"] == "Login Profile for User ann cannot be found."


def test_login_profile_errors(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    assert _code(_refused(iam.create_login_profile, UserName="nobody", Password=STRONG)) == "NoSuchEntity"
    name = _user_with_profile(cloud, account)
    twice = _refused(iam.create_login_profile, UserName=name, Password=OTHER)
    assert _code(twice) == "EntityAlreadyExists" and status(twice.response) == 409
    iam.create_user(UserName="bare")
    for call in (iam.get_login_profile, iam.update_login_profile, iam.delete_login_profile):
        assert _code(_refused(call, UserName="bare")) == "NoSuchEntity"


def test_unsupported_login_profile_parameters_are_refused_by_name(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="sso")
    err = _refused(iam.create_login_profile, UserName="sso", Password=STRONG, MaxSigninSessionDuration=3600)
    assert _code(err) == "UnsupportedOperation" and "MaxSigninSessionDuration" in str(err)
    assert _code(_refused(iam.get_login_profile, UserName="sso")) == "NoSuchEntity"  # nothing was made


def test_delete_user_with_login_profile_is_delete_conflict(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    name = _user_with_profile(cloud, account)
    err = _refused(iam.delete_user, UserName=name)
    assert _code(err) == "DeleteConflict"
    assert err.response["Error"]["Message"] == "Cannot delete entity, must delete login profile first."
    iam.delete_login_profile(UserName=name)
    iam.delete_user(UserName=name)


def test_weak_passwords_break_the_default_policy_then_the_accounts(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="weak")
    # No policy set: AWS's default one (8 characters, three kinds of character).
    for password in ("Sh0rt-A", "alllowercaseletters", "lowercase-and-dashes"):
        err = _refused(iam.create_login_profile, UserName="weak", Password=password)
        assert _code(err) == "PasswordPolicyViolation" and status(err.response) == 400
    iam.update_account_password_policy(MinimumPasswordLength=12, RequireNumbers=True)
    err = _refused(iam.create_login_profile, UserName="weak", Password="no-numbers-in-here")
    assert _code(err) == "PasswordPolicyViolation" and "number" in err.response["Error"]["Message"]
    assert _code(_refused(iam.create_login_profile, UserName="weak", Password="short-1")) == (
        "PasswordPolicyViolation"
    )
    iam.create_login_profile(UserName="weak", Password="lowercase-is-fine-1")
    err = _refused(iam.update_login_profile, UserName="weak", Password="still-no-numbers")
    assert _code(err) == "PasswordPolicyViolation"


# -- the account's password policy -------------------------------------------------------------------


def test_password_policy_life_cycle(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    err = _refused(iam.get_account_password_policy)
    assert _code(err) == "NoSuchEntity"
    assert err.response["Error"]["Message"] == (
        f"The Password Policy with domain name {account.account_id} cannot be found."
    )
    iam.update_account_password_policy(
        MinimumPasswordLength=14,
        RequireSymbols=True,
        RequireNumbers=True,
        RequireUppercaseCharacters=True,
        RequireLowercaseCharacters=True,
        AllowUsersToChangePassword=True,
        MaxPasswordAge=90,
        PasswordReusePrevention=24,
        HardExpiry=True,
    )
    assert iam.get_account_password_policy()["PasswordPolicy"] == {
        "MinimumPasswordLength": 14,
        "RequireSymbols": True,
        "RequireNumbers": True,
        "RequireUppercaseCharacters": True,
        "RequireLowercaseCharacters": True,
        "AllowUsersToChangePassword": True,
        "ExpirePasswords": True,
        "MaxPasswordAge": 90,
        "PasswordReusePrevention": 24,
        "HardExpiry": True,
    }
    # No partial updates: what is left out goes back to its default.
    iam.update_account_password_policy(MinimumPasswordLength=10)
    assert iam.get_account_password_policy()["PasswordPolicy"] == {
        "MinimumPasswordLength": 10,
        "RequireSymbols": False,
        "RequireNumbers": False,
        "RequireUppercaseCharacters": False,
        "RequireLowercaseCharacters": False,
        "AllowUsersToChangePassword": False,
        "ExpirePasswords": False,
    }
    iam.update_account_password_policy()
    assert iam.get_account_password_policy()["PasswordPolicy"]["MinimumPasswordLength"] == 6
    iam.delete_account_password_policy()
    assert _code(_refused(iam.get_account_password_policy)) == "NoSuchEntity"
    assert _code(_refused(iam.delete_account_password_policy)) == "NoSuchEntity"


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("MinimumPasswordLength", 5),
        ("MinimumPasswordLength", 129),
        ("MaxPasswordAge", 0),
        ("MaxPasswordAge", 1096),
        ("PasswordReusePrevention", 0),
        ("PasswordReusePrevention", 25),
    ],
)
def test_password_policy_out_of_range_is_validation_error(
    cloud: Cloud, account: Keys, member: str, value: int
) -> None:
    iam = cloud.client("iam", account, config=UNCHECKED)
    err = _refused(iam.update_account_password_policy, **{member: value})
    assert _code(err) == "ValidationError"
    assert member[0].lower() + member[1:] in err.response["Error"]["Message"]
    assert _code(_refused(iam.get_account_password_policy)) == "NoSuchEntity"  # nothing was set


# -- ChangePassword ----------------------------------------------------------------------------------


def test_a_user_changes_its_own_password(cloud: Cloud, account: Keys) -> None:
    root = cloud.client("iam", account)
    root.update_account_password_policy(
        MinimumPasswordLength=8,
        RequireNumbers=True,
        AllowUsersToChangePassword=True,
        PasswordReusePrevention=2,
    )
    name = _user_with_profile(cloud, account, "first-pass-1", PasswordResetRequired=True)
    key = root.create_access_key(UserName=name)["AccessKey"]
    me = cloud.client("iam", Keys(key["AccessKeyId"], key["SecretAccessKey"]))

    wrong = _refused(me.change_password, OldPassword="not-my-pass-1", NewPassword="second-pass-2")
    assert _code(wrong) == "AccessDenied" and status(wrong.response) == 403
    weak = _refused(me.change_password, OldPassword="first-pass-1", NewPassword="no-numbers")
    assert _code(weak) == "PasswordPolicyViolation"
    assert root.get_login_profile(UserName=name)["LoginProfile"]["PasswordResetRequired"] is True

    me.change_password(OldPassword="first-pass-1", NewPassword="second-pass-2")
    assert root.get_login_profile(UserName=name)["LoginProfile"]["PasswordResetRequired"] is False
    # The last two passwords (the current one among them) may not come back; older ones may.
    for again in ("second-pass-2", "first-pass-1"):
        reused = _refused(me.change_password, OldPassword="second-pass-2", NewPassword=again)
        assert _code(reused) == "PasswordPolicyViolation" and "last 2" in str(reused)
    me.change_password(OldPassword="second-pass-2", NewPassword="third-pass-3")
    me.change_password(OldPassword="third-pass-3", NewPassword="first-pass-1")
    # A password changed is no longer the old one.
    assert _code(_refused(me.change_password, OldPassword="third-pass-3", NewPassword="fourth-4")) == (
        "AccessDenied"
    )


def test_change_password_needs_a_policy_or_the_accounts_permission(cloud: Cloud, account: Keys) -> None:
    root = cloud.client("iam", account)
    name = _user_with_profile(cloud, account)
    key = root.create_access_key(UserName=name)["AccessKey"]
    me = cloud.client("iam", Keys(key["AccessKeyId"], key["SecretAccessKey"]))

    assert _code(_refused(me.change_password, OldPassword=STRONG, NewPassword=OTHER)) == "AccessDenied"
    # AWS's documented policy: iam:ChangePassword on the user's own ARN.
    own = "arn:aws:iam::*:user/${aws:username}"
    root.put_user_policy(
        UserName=name, PolicyName="self", PolicyDocument=_allow("iam:ChangePassword", resource=own)
    )
    me.change_password(OldPassword=STRONG, NewPassword=OTHER)
    # Or, with no policy, the account's AllowUsersToChangePassword; an explicit Deny still wins.
    root.delete_user_policy(UserName=name, PolicyName="self")
    root.update_account_password_policy(AllowUsersToChangePassword=True)
    me.change_password(OldPassword=OTHER, NewPassword=STRONG)
    deny = _allow("iam:ChangePassword", effect="Deny")
    root.put_user_policy(UserName=name, PolicyName="deny", PolicyDocument=deny)
    assert _code(_refused(me.change_password, OldPassword=STRONG, NewPassword=OTHER)) == "AccessDenied"


def test_change_password_is_for_iam_users_only(cloud: Cloud, account: Keys) -> None:
    root = cloud.client("iam", account)
    root.update_account_password_policy(AllowUsersToChangePassword=True)
    refused = _refused(root.change_password, OldPassword=STRONG, NewPassword=OTHER)
    assert _code(refused) == "InvalidUserType"
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account.account_id}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    arn = root.create_role(RoleName="changer", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    root.put_role_policy(RoleName="changer", PolicyName="all", PolicyDocument=_allow("iam:*"))
    user = user_keys(cloud, account, allow=["sts:AssumeRole"])
    creds = cloud.client("sts", user).assume_role(RoleArn=arn, RoleSessionName="s1")["Credentials"]
    session = Keys(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    err = _refused(cloud.client("iam", session).change_password, OldPassword=STRONG, NewPassword=OTHER)
    assert _code(err) == "InvalidUserType"


# -- secrecy ---------------------------------------------------------------------------------------------


def test_passwords_never_appear_in_any_answer_or_log(cloud: Cloud, account: Keys) -> None:
    secret_words = [f"Secret-{secrets.token_hex(6)}-{i}" for i in range(3)]
    bodies: list[bytes] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(bytes(response_dict["body"]))

    root = cloud.client("iam", account)
    root.meta.events.register("before-parse.iam.*", keep)
    root.update_account_password_policy(AllowUsersToChangePassword=True, PasswordReusePrevention=3)
    root.create_user(UserName="quiet")
    root.create_login_profile(UserName="quiet", Password=secret_words[0])
    root.get_login_profile(UserName="quiet")
    root.get_user(UserName="quiet")
    root.list_users()
    key = root.create_access_key(UserName="quiet")["AccessKey"]
    me = cloud.client("iam", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    me.meta.events.register("before-parse.iam.*", keep)
    _refused(me.change_password, OldPassword=secret_words[1], NewPassword=secret_words[2])  # wrong old
    _refused(me.change_password, OldPassword=secret_words[0], NewPassword=secret_words[0])  # reused
    me.change_password(OldPassword=secret_words[0], NewPassword=secret_words[1])
    _refused(root.create_login_profile, UserName="quiet", Password=secret_words[2])  # exists

    assert len(bodies) == 11
    log = cloud.log()
    for word in secret_words:
        assert not any(word.encode() in body for body in bodies), word
        assert word not in log


# -- the aws CLI and the mallee command --------------------------------------------------------------


def test_aws_cli_login_profile_and_password_policy(cloud: Cloud, account: Keys) -> None:
    aws(cloud, "iam", "create-user", "--user-name", "cli", keys=account)
    made = aws(cloud, "iam", "create-login-profile", "--user-name", "cli", "--password", STRONG, keys=account)
    assert made["LoginProfile"]["UserName"] == "cli"
    assert STRONG not in json.dumps(made)
    assert aws_refusal(cloud, "iam", "get-account-password-policy", keys=account)[0] == "NoSuchEntity"
    aws(
        cloud,
        "iam",
        "update-account-password-policy",
        "--minimum-password-length",
        "12",
        "--require-symbols",
        "--max-password-age",
        "30",
        keys=account,
    )
    policy = aws(cloud, "iam", "get-account-password-policy", keys=account)["PasswordPolicy"]
    assert policy["MinimumPasswordLength"] == 12 and policy["RequireSymbols"] is True
    assert policy["MaxPasswordAge"] == 30 and policy["ExpirePasswords"] is True


def test_mallee_console_password_sets_then_changes_a_users_password(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    iam.create_user(UserName="console")
    account_name = iam.list_account_aliases()["AccountAliases"][0]

    def console_password(password: str, *flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "mallee"), "console-password", account_name, "--user", "console", *flags],
            input=password + "\n",
            env=cloud.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = console_password(STRONG, "--password-stdin", "--reset-required")
    assert made.returncode == 0, made.stderr
    assert STRONG not in made.stdout + made.stderr
    assert iam.get_login_profile(UserName="console")["LoginProfile"]["PasswordResetRequired"] is True
    changed = console_password(OTHER, "--password-stdin")
    assert changed.returncode == 0, changed.stderr
    assert iam.get_login_profile(UserName="console")["LoginProfile"]["PasswordResetRequired"] is False
    # The password set is the one the user now has: ChangePassword takes it as the old one.
    iam.update_account_password_policy(AllowUsersToChangePassword=True)
    key = iam.create_access_key(UserName="console")["AccessKey"]
    me = cloud.client("iam", Keys(key["AccessKeyId"], key["SecretAccessKey"]))
    assert (
        _code(_refused(me.change_password, OldPassword=STRONG, NewPassword="Another-one-9")) == "AccessDenied"
    )
    me.change_password(OldPassword=OTHER, NewPassword="Another-one-9")

    weak = console_password("weak", "--password-stdin")
    assert weak.returncode == 1 and "PasswordPolicyViolation" in weak.stderr
    nobody = subprocess.run(
        [str(VENV_BIN / "mallee"), "console-password", account_name, "--user", "ghost", "--password-stdin"],
        input=STRONG + "\n",
        env=cloud.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nobody.returncode == 1 and "NoSuchEntity" in nobody.stderr
