"""evaluate_session: a role session's permissions are its role's policies intersected with its
session policies, and an explicit Deny in either wins."""

from __future__ import annotations

import json

import pytest

from mallee.core.policy import Decision, Policy, evaluate_session, parse_policy


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
