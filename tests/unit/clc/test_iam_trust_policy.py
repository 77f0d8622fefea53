"""A role's trust policy (AssumeRolePolicyDocument): what IAM accepts and what it refuses."""

from __future__ import annotations

import json

import pytest

from mallee.core.errors import CloudError
from mallee.services.clc.iam.roles import TRUST_POLICY_MAX, check_trust_policy


def _doc(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ASSUME = {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}


@pytest.mark.parametrize(
    "document",
    [
        _doc(ASSUME),
        json.dumps({"Statement": ASSUME}),  # one statement, not in a list; no Version
        _doc(
            {**ASSUME, "Principal": {"AWS": "123456789012"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}
        ),
        _doc(
            {
                **ASSUME,
                "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/x"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {"x:aud": "sts.amazonaws.com"}},
            }
        ),  # fmt: skip
        _doc({**ASSUME, "Effect": "Deny", "Principal": "*"}),
    ],
)
def test_trust_policies_iam_accepts(document: str) -> None:
    check_trust_policy(document)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[]", "Syntax errors in policy."),
        (_doc({**ASSUME, "NotResource": "*"}), "Has prohibited field Resource."),
        (_doc({**ASSUME, "Action": "*"}), "AssumeRole policy may only specify STS AssumeRole actions."),
        (
            _doc({k: v for k, v in ASSUME.items() if k != "Action"} | {"NotAction": "s3:*"}),
            "AssumeRole policy may only specify STS AssumeRole actions.",
        ),  # fmt: skip
        (_doc({**ASSUME, "Principal": {"AWS": "alice"}}), "Invalid principal in policy."),
        (
            _doc(*[{**ASSUME, "Sid": f"s{i}"} for i in range(40)]),
            f"Cannot exceed quota for ACLSizePerRole: {TRUST_POLICY_MAX}",
        ),
    ],
)
def test_trust_policies_iam_refuses(document: str, message: str) -> None:
    with pytest.raises(CloudError) as err:
        check_trust_policy(document)
    assert (err.value.code, err.value.message) == ("MalformedPolicyDocument", message)
