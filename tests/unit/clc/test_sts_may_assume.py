"""AssumeRole's decision (sts.may_assume): the trust policy and the caller's own policies, in the
role's account and across accounts, for users, roots and role sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mallee.core.context import Principal
from mallee.core.policy import Decision
from mallee.services.clc.iam.roles import check_trust_policy
from mallee.services.clc.sts import may_assume

OWNER, OTHER = "111111111111", "222222222222"
ROLE = f"arn:aws:iam::{OWNER}:role/app"
ALICE = Principal(OWNER, "own", "AKIA1", "AIDA1", user_name="alice")
BOB = Principal(OTHER, "oth", "AKIA2", "AIDA2", user_name="bob")
ROOT = Principal(OWNER, "own", "AKIA3", OWNER)
SESSION = Principal(
    OWNER,
    "own",
    "ASIA4",
    "AROA9:s",
    session_token="t",
    role_name="first",
    role_path="/ops/",
    role_session_name="s",
)


def _trust(principal: Any, effect: str = "Allow", **condition: Any) -> str:
    statement = {"Effect": effect, "Principal": principal, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _context(caller: Principal, **extra: str) -> dict[str, str | list[str]]:
    return {
        "aws:principalarn": caller.principal_arn,
        "aws:userid": caller.user_id,
        "aws:principalaccount": caller.account_id,
        **extra,
    }


@pytest.mark.parametrize(
    ("trust", "caller", "own", "allowed"),
    [
        # Same account: naming the caller is enough; naming the account needs the caller's Allow.
        (_trust({"AWS": f"arn:aws:iam::{OWNER}:user/alice"}), ALICE, Decision.IMPLICIT_DENY, True),
        (_trust({"AWS": OWNER}), ALICE, Decision.IMPLICIT_DENY, False),
        (_trust({"AWS": OWNER}), ALICE, Decision.ALLOW, True),
        (_trust({"AWS": f"arn:aws:iam::{OWNER}:root"}), ALICE, Decision.ALLOW, True),
        (_trust({"AWS": f"arn:aws:iam::{OWNER}:root"}), ROOT, Decision.ALLOW, True),
        (_trust({"AWS": f"arn:aws:iam::{OWNER}:user/alice"}), ALICE, Decision.DENY, False),
        # Across accounts both sides must allow.
        (_trust({"AWS": OTHER}), BOB, Decision.IMPLICIT_DENY, False),
        (_trust({"AWS": OTHER}), BOB, Decision.ALLOW, True),
        (_trust({"AWS": f"arn:aws:iam::{OTHER}:user/bob"}), BOB, Decision.IMPLICIT_DENY, False),
        (_trust({"AWS": f"arn:aws:iam::{OTHER}:user/bob"}), BOB, Decision.ALLOW, True),
        (_trust({"AWS": OWNER}), BOB, Decision.ALLOW, False),
        (_trust("*"), BOB, Decision.ALLOW, True),
        # A role session chaining: its role's ARN or its own session ARN name it.
        (_trust({"AWS": f"arn:aws:iam::{OWNER}:role/ops/first"}), SESSION, Decision.IMPLICIT_DENY, True),
        (
            _trust({"AWS": f"arn:aws:sts::{OWNER}:assumed-role/first/s"}),
            SESSION,
            Decision.IMPLICIT_DENY,
            True,
        ),
        (_trust({"AWS": f"arn:aws:iam::{OWNER}:role/ops/other"}), SESSION, Decision.ALLOW, False),
        # Service principals are for services, never for a signed caller.
        (_trust({"Service": "ec2.amazonaws.com"}), ROOT, Decision.ALLOW, False),
        (_trust({"AWS": OWNER}, effect="Deny"), ROOT, Decision.ALLOW, False),
    ],
)
def test_who_may_assume(trust: str, caller: Principal, own: Decision, allowed: bool) -> None:
    assert may_assume(check_trust_policy(trust), caller, own, OWNER, ROLE, _context(caller)) is allowed


def test_trust_conditions_read_the_callers_keys() -> None:
    external = check_trust_policy(_trust({"AWS": OTHER}, StringEquals={"sts:ExternalId": "x-1"}))
    assert not may_assume(external, BOB, Decision.ALLOW, OWNER, ROLE, _context(BOB))
    assert not may_assume(
        external, BOB, Decision.ALLOW, OWNER, ROLE, _context(BOB, **{"sts:externalid": "x-2"})
    )
    assert may_assume(external, BOB, Decision.ALLOW, OWNER, ROLE, _context(BOB, **{"sts:externalid": "x-1"}))

    by_role = check_trust_policy(
        _trust({"AWS": OWNER}, ArnEquals={"aws:PrincipalArn": f"arn:aws:iam::{OWNER}:role/ops/first"})
    )
    assert may_assume(by_role, SESSION, Decision.ALLOW, OWNER, ROLE, _context(SESSION))
    assert not may_assume(by_role, ALICE, Decision.ALLOW, OWNER, ROLE, _context(ALICE))
    by_id = check_trust_policy(_trust({"AWS": OWNER}, StringLike={"aws:userid": "AROA9:*"}))
    assert may_assume(by_id, SESSION, Decision.ALLOW, OWNER, ROLE, _context(SESSION))
    assert not may_assume(by_id, ALICE, Decision.ALLOW, OWNER, ROLE, _context(ALICE))


def test_principal_arns_of_each_kind() -> None:
    assert ROOT.arn == f"arn:aws:iam::{OWNER}:root" and ROOT.is_root
    assert ALICE.arn == ALICE.principal_arn == f"arn:aws:iam::{OWNER}:user/alice"
    assert SESSION.arn == f"arn:aws:sts::{OWNER}:assumed-role/first/s" and not SESSION.is_root
    assert SESSION.principal_arn == SESSION.role_arn == f"arn:aws:iam::{OWNER}:role/ops/first"
