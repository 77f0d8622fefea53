"""Session policies: a role session's permissions are its role's policies intersected with its
session policies (evaluate_session); a resource policy naming the role grants a session only what
its session policies also allow, one naming the session itself grants without them (evaluate); an
explicit Deny anywhere wins."""

from __future__ import annotations

import json

import pytest

from mallee.core.policy import (
    Decision,
    Policy,
    evaluate,
    evaluate_session,
    parse_policy,
    parse_resource_policy,
)


def _policy(effect: str, *actions: str) -> Policy:
    statement = {"Effect": effect, "Action": list(actions), "Resource": "*"}
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


ROLE = [_policy("Allow", "ec2:Describe*", "s3:GetObject")]


@pytest.mark.parametrize(
    ("session", "action", "decision"),
    [
        (None, "ec2:DescribeRegions", Decision.ALLOW),  # no session policies: the role's own
        (None, "iam:ListUsers", Decision.IMPLICIT_DENY),
        ([_policy("Allow", "ec2:DescribeRegions")], "ec2:DescribeRegions", Decision.ALLOW),
        ([_policy("Allow", "ec2:DescribeRegions")], "ec2:DescribeImages", Decision.IMPLICIT_DENY),
        ([_policy("Allow", "*")], "iam:ListUsers", Decision.IMPLICIT_DENY),  # grants nothing the role lacks
        ([], "ec2:DescribeRegions", Decision.IMPLICIT_DENY),  # session policies that allow nothing
        ([_policy("Allow", "*"), _policy("Deny", "s3:*")], "s3:GetObject", Decision.DENY),
    ],
)
def test_session_policies_narrow_the_role(
    session: list[Policy] | None, action: str, decision: Decision
) -> None:
    assert evaluate_session(ROLE, session, action, "*") is decision


def test_a_deny_in_the_role_wins_over_a_session_allow() -> None:
    role = [*ROLE, _policy("Deny", "ec2:DescribeImages")]
    assert evaluate_session(role, [_policy("Allow", "*")], "ec2:DescribeImages", "*") is Decision.DENY


# -- resource policies and session policies --------------------------------------------------------

ACCOUNT = "111111111111"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ops/reader"
SESSION_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/reader/s1"
OBJECT = "arn:aws:s3:::bucket/key"


def _bucket_policy(principal: object, effect: str = "Allow") -> Policy:
    statement = {"Effect": effect, "Principal": principal, "Action": "s3:GetObject", "Resource": OBJECT}
    return parse_resource_policy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


def _as_session(policy: Policy, session: list[Policy] | None) -> Decision:
    return evaluate(
        [policy],
        "s3:GetObject",
        OBJECT,
        principal_arn=SESSION_ARN,
        principal_account=ACCOUNT,
        role_arn=ROLE_ARN,
        session_policies=session,
    )


ONLY_EC2 = [_policy("Allow", "ec2:*")]
S3_READ = [_policy("Allow", "s3:GetObject")]


@pytest.mark.parametrize(
    ("principal", "session", "decision"),
    [
        # Naming the role: the session gets what its session policies also allow.
        ({"AWS": ROLE_ARN}, None, Decision.ALLOW),
        ({"AWS": ROLE_ARN}, S3_READ, Decision.ALLOW),
        ({"AWS": ROLE_ARN}, ONLY_EC2, Decision.IMPLICIT_DENY),
        ({"AWS": ROLE_ARN}, [], Decision.IMPLICIT_DENY),
        # Naming the account is bounded the same way.
        ({"AWS": ACCOUNT}, ONLY_EC2, Decision.IMPLICIT_DENY),
        ({"AWS": ACCOUNT}, S3_READ, Decision.ALLOW),
        # Naming the session itself, or anyone: granted whatever the session policies say.
        ({"AWS": SESSION_ARN}, ONLY_EC2, Decision.ALLOW),
        ({"AWS": SESSION_ARN}, [], Decision.ALLOW),
        ("*", ONLY_EC2, Decision.ALLOW),
        # Naming neither grants nothing, whatever the session policies allow.
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:role/ops/other"}, S3_READ, Decision.IMPLICIT_DENY),
    ],
)
def test_session_policies_bound_a_resource_policy_naming_the_role_not_the_session(
    principal: object, session: list[Policy] | None, decision: Decision
) -> None:
    assert _as_session(_bucket_policy(principal), session) is decision


@pytest.mark.parametrize("principal", [{"AWS": ROLE_ARN}, {"AWS": SESSION_ARN}, "*"])
def test_an_explicit_deny_in_the_session_policies_wins_over_any_resource_grant(principal: object) -> None:
    denying = [_policy("Allow", "*"), _policy("Deny", "s3:GetObject")]
    assert _as_session(_bucket_policy(principal), denying) is Decision.DENY


def test_a_resource_policy_deny_naming_the_role_denies_its_sessions() -> None:
    policy = _bucket_policy({"AWS": ROLE_ARN}, effect="Deny")
    assert _as_session(policy, S3_READ) is Decision.DENY
    assert _as_session(policy, None) is Decision.DENY


def test_the_most_direct_grant_counts() -> None:
    # One statement names the role, another the session: the session's grant is not bounded.
    both = parse_resource_policy(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": p}, "Action": "s3:GetObject", "Resource": OBJECT}
                    for p in (ROLE_ARN, SESSION_ARN)
                ],
            }
        )
    )
    assert _as_session(both, ONLY_EC2) is Decision.ALLOW
