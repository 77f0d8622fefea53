"""Role chaining with session policies (sts.may_assume): a trust policy naming the caller's role
grants its session only what the session's policies also allow; one naming the session does not
depend on them."""

from __future__ import annotations

import json

import pytest

from mallee.core.context import Principal
from mallee.core.policy import Decision, Policy, parse_policy
from mallee.services.clc.iam.roles import check_trust_policy
from mallee.services.clc.sts import may_assume

OWNER = "111111111111"
TARGET = f"arn:aws:iam::{OWNER}:role/next"
SESSION = Principal(
    OWNER, "own", "ASIA4", "AROA9:s", session_token="t", role_name="first", role_session_name="s"
)
CONTEXT: dict[str, str | list[str]] = {"aws:principalarn": f"arn:aws:iam::{OWNER}:role/first"}


def _trust(principal: str) -> Policy:
    statement = {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}
    return check_trust_policy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


def _session_policy(*actions: str) -> list[Policy]:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    return [parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))]


@pytest.mark.parametrize(
    ("named", "session", "allowed"),
    [
        (f"arn:aws:iam::{OWNER}:role/first", None, True),
        (f"arn:aws:iam::{OWNER}:role/first", _session_policy("sts:AssumeRole"), True),
        (f"arn:aws:iam::{OWNER}:role/first", _session_policy("s3:*"), False),
        (f"arn:aws:sts::{OWNER}:assumed-role/first/s", _session_policy("s3:*"), True),
    ],
)
def test_session_policies_bound_a_trust_policy_naming_the_callers_role(
    named: str, session: list[Policy] | None, allowed: bool
) -> None:
    # The caller's own policies (its role's, within its session policies) do not allow it.
    own = Decision.IMPLICIT_DENY
    assert (
        may_assume(_trust(named), SESSION, own, OWNER, TARGET, CONTEXT, session_policies=session) is allowed
    )
