"""IAM policy documents: validation (parse_policy) and AWS evaluation logic (evaluate)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mallee.core.errors import CloudError
from mallee.core.policy import (
    Decision,
    Policy,
    evaluate,
    parse_policy,
    parse_policy_cached,
    parse_resource_policy,
)

ALLOW, DENY, IMPLICIT = Decision.ALLOW, Decision.DENY, Decision.IMPLICIT_DENY


def stmt(
    effect: str | None = "Allow", action: Any = "*", resource: Any = "*", **extra: Any
) -> dict[str, Any]:
    """A statement; pass NotAction/NotResource/Condition/Principal... as keywords (None drops a key)."""
    body: dict[str, Any] = {"Effect": effect, "Action": action, "Resource": resource, **extra}
    return {key: value for key, value in body.items() if value is not None}


def doc(*statements: dict[str, Any], version: str | None = "2012-10-17") -> str:
    body: dict[str, Any] = {"Statement": list(statements)}
    if version is not None:
        body["Version"] = version
    return json.dumps(body)


def decide(
    *statements: dict[str, Any],
    action: str = "ec2:DescribeRegions",
    resource: str = "*",
    context: dict[str, Any] | None = None,
    version: str | None = "2012-10-17",
) -> Decision:
    return evaluate([parse_policy(doc(*statements, version=version))], action, resource, context)


# --- evaluation order ---


def test_matching_allow_allows() -> None:
    assert decide(stmt(action="ec2:DescribeRegions")) is ALLOW


def test_nothing_matching_is_implicit_deny() -> None:
    assert decide(stmt(action="iam:CreateUser")) is IMPLICIT


def test_no_policies_is_implicit_deny() -> None:
    assert evaluate([], "ec2:DescribeRegions", "*") is IMPLICIT


def test_explicit_deny_beats_allow_in_same_policy() -> None:
    assert decide(stmt(), stmt("Deny", "ec2:Describe*")) is DENY


def test_explicit_deny_in_another_policy_beats_allow() -> None:
    allow, deny = parse_policy(doc(stmt())), parse_policy(doc(stmt("Deny", "ec2:*")))
    assert evaluate([allow, deny], "ec2:DescribeRegions", "*") is DENY
    assert evaluate([allow, deny], "iam:ListUsers", "*") is ALLOW


def test_non_matching_deny_does_not_deny() -> None:
    assert decide(stmt(), stmt("Deny", "iam:*")) is ALLOW


# --- actions ---


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("ec2:Describe*", "ec2:DescribeRegions", True),
        ("ec2:Describe*", "ec2:RunInstances", False),
        ("iam:*", "iam:CreateUser", True),
        ("iam:*", "ec2:DescribeRegions", False),
        ("*", "s3:GetObject", True),
        ("EC2:Describe*", "ec2:describeregions", True),  # actions are case-insensitive
        ("ec2:describeregions", "EC2:DescribeRegions", True),
        ("ec2:Describe?mages", "ec2:DescribeImages", True),
        ("ec2:Describe?mages", "ec2:DescribeIImages", False),  # ? is exactly one character
        ("ec2:DescribeImages", "ec2:DescribeImagesAttribute", False),  # whole-name match
        (["iam:Get*", "ec2:Run*"], "ec2:RunInstances", True),
    ],
)
def test_action_matching(pattern: Any, action: str, expected: bool) -> None:
    assert (decide(stmt(action=pattern), action=action) is ALLOW) is expected


def test_not_action_allows_everything_but_the_listed_actions() -> None:
    statement = stmt(action=None, NotAction="iam:*")
    assert decide(statement, action="ec2:RunInstances") is ALLOW
    assert decide(statement, action="iam:CreateUser") is IMPLICIT


def test_deny_with_not_action_denies_everything_else() -> None:
    statements = (stmt(), stmt("Deny", action=None, NotAction=["ec2:Describe*", "sts:*"]))
    assert decide(*statements, action="ec2:DescribeImages") is ALLOW
    assert decide(*statements, action="ec2:TerminateInstances") is DENY


# --- resources ---


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b.txt", True),
        ("arn:aws:s3:::bucket/*", "arn:aws:s3:::other/a", False),
        ("arn:aws:iam::*:user/*", "arn:aws:iam::123456789012:user/alice", True),
        ("arn:aws:ec2:*", "arn:aws:ec2:us-east-1:123456789012:instance/i-1", True),  # * spans ':'
        ("arn:aws:s3:::Bucket", "arn:aws:s3:::bucket", False),  # resources are case-sensitive
        ("arn:aws:s3:::b?", "arn:aws:s3:::b1", True),
        ("arn:aws:s3:::b?", "arn:aws:s3:::b12", False),
        ("arn:aws:s3:::a.b", "arn:aws:s3:::axb", False),  # regex characters are literal
    ],
)
def test_resource_matching(pattern: str, resource: str, expected: bool) -> None:
    assert (decide(stmt(resource=pattern), resource=resource) is ALLOW) is expected


def test_not_resource_excludes_the_listed_resources() -> None:
    statement = stmt(action="s3:*", resource=None, NotResource="arn:aws:s3:::secret/*")
    assert decide(statement, action="s3:GetObject", resource="arn:aws:s3:::public/x") is ALLOW
    assert decide(statement, action="s3:GetObject", resource="arn:aws:s3:::secret/x") is IMPLICIT


# --- conditions ---


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        # strings
        ({"StringEquals": {"aws:username": "alice"}}, {"aws:username": "alice"}, True),
        ({"StringEquals": {"aws:username": "alice"}}, {"aws:username": "Alice"}, False),
        ({"StringEquals": {"aws:username": "alice"}}, {}, False),  # missing key: positive op false
        ({"StringEquals": {"AWS:UserName": "alice"}}, {"aws:USERNAME": "alice"}, True),  # keys any case
        ({"StringEquals": {"aws:username": ["bob", "alice"]}}, {"aws:username": "alice"}, True),  # OR
        ({"StringNotEquals": {"aws:username": ["bob", "carol"]}}, {"aws:username": "alice"}, True),
        ({"StringNotEquals": {"aws:username": ["bob", "alice"]}}, {"aws:username": "alice"}, False),
        ({"StringNotEquals": {"aws:username": "bob"}}, {}, True),  # missing key: negated op true
        ({"StringEqualsIgnoreCase": {"aws:username": "ALICE"}}, {"aws:username": "alice"}, True),
        ({"StringNotEqualsIgnoreCase": {"aws:username": "ALICE"}}, {"aws:username": "alice"}, False),
        ({"StringLike": {"s3:prefix": "home/*"}}, {"s3:prefix": "home/alice/x"}, True),
        ({"StringLike": {"s3:prefix": "home/?"}}, {"s3:prefix": "home/ab"}, False),
        ({"StringNotLike": {"s3:prefix": ["home/*", "tmp/*"]}}, {"s3:prefix": "etc/x"}, True),
        ({"StringNotLike": {"s3:prefix": ["home/*", "tmp/*"]}}, {"s3:prefix": "tmp/x"}, False),
        # numbers
        ({"NumericEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "10.0"}, True),
        ({"NumericEquals": {"s3:max-keys": 10}}, {"s3:max-keys": "11"}, False),
        ({"NumericNotEquals": {"s3:max-keys": ["10", "20"]}}, {"s3:max-keys": "15"}, True),
        ({"NumericLessThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "9"}, True),
        ({"NumericLessThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "10"}, False),
        ({"NumericLessThanEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "10"}, True),
        ({"NumericGreaterThan": {"s3:max-keys": "10"}}, {"s3:max-keys": "10.5"}, True),
        ({"NumericGreaterThanEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "9"}, False),
        ({"NumericEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "ten"}, False),  # unparseable
        # dates (ISO 8601 and epoch seconds)
        (
            {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
            {"aws:CurrentTime": "2029-12-31T23:59:59Z"},
            True,
        ),
        (
            {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}},
            {"aws:CurrentTime": "2030-01-01T00:00:01Z"},
            False,
        ),
        (
            {"DateGreaterThan": {"aws:CurrentTime": "1700000000"}},
            {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
            True,
        ),
        (
            {"DateEquals": {"aws:CurrentTime": "2024-01-01T01:00:00+01:00"}},
            {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
            True,
        ),
        (
            {"DateNotEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
            {"aws:CurrentTime": "2024-01-02T00:00:00Z"},
            True,
        ),
        (
            {"DateLessThanEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
            {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
            True,
        ),
        (
            {"DateGreaterThanEquals": {"aws:CurrentTime": "2024-01-01T00:00:00Z"}},
            {"aws:CurrentTime": "2023-12-31T00:00:00Z"},
            False,
        ),
        # booleans
        ({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "True"}, True),
        ({"Bool": {"aws:MultiFactorAuthPresent": True}}, {"aws:MultiFactorAuthPresent": "false"}, False),
        # IP addresses
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "10.1.2.3"}, True),
        (
            {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}},
            {"aws:SourceIp": "192.168.4.5"},
            True,
        ),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "11.0.0.1"}, False),
        ({"IpAddress": {"aws:SourceIp": "203.0.113.7"}}, {"aws:SourceIp": "203.0.113.7"}, True),
        ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "2001:db8::1"}, True),
        ({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}, {"aws:SourceIp": "10.0.0.1"}, False),
        (
            {"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "172.16.0.0/12"]}},
            {"aws:SourceIp": "8.8.8.8"},
            True,
        ),
        (
            {"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "172.16.0.0/12"]}},
            {"aws:SourceIp": "172.16.0.9"},
            False,
        ),
        # ARNs: field by field, wildcards stay within a field
        (
            {"ArnEquals": {"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:topic"}},
            {"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:topic"},
            True,
        ),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::bucket/*"}},
            {"aws:SourceArn": "arn:aws:s3:::bucket/a/b"},
            True,
        ),
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:topic"}},
            {"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:topic"},
            False,
        ),
        (
            {"ArnNotLike": {"aws:SourceArn": "arn:aws:sns:*:*:*"}},
            {"aws:SourceArn": "arn:aws:sqs:r:1:q"},
            True,
        ),
        (
            {"ArnNotEquals": {"aws:SourceArn": "arn:aws:sqs:r:1:q"}},
            {"aws:SourceArn": "arn:aws:sqs:r:1:q"},
            False,
        ),
        # Null
        ({"Null": {"aws:TokenIssueTime": "true"}}, {}, True),
        ({"Null": {"aws:TokenIssueTime": "true"}}, {"aws:TokenIssueTime": "2024-01-01T00:00:00Z"}, False),
        ({"Null": {"aws:TokenIssueTime": False}}, {"aws:TokenIssueTime": "2024-01-01T00:00:00Z"}, True),
        # ...IfExists
        ({"StringEqualsIfExists": {"ec2:InstanceType": "t2.micro"}}, {}, True),
        ({"StringEqualsIfExists": {"ec2:InstanceType": "t2.micro"}}, {"ec2:InstanceType": "m5.large"}, False),
        ({"NumericLessThanIfExists": {"s3:max-keys": "10"}}, {"s3:max-keys": "5"}, True),
        # set qualifiers
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b", "c"]}}, {"aws:TagKeys": ["a", "c"]}, True),
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["a", "z"]}, False),
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {}, True),  # vacuously true
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {"aws:TagKeys": []}, True),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["z", "b"]}, True),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["y", "z"]}, False),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, {}, False),
        ({"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}, {"aws:TagKeys": ["key2:audit"]}, True),
        (
            {"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}},
            {"aws:TagKeys": ["key1:hr", "key2"]},
            False,
        ),
        ({"ForAnyValue:StringLike": {"aws:TagKeys": "env*"}}, {"aws:TagKeys": ["team", "environment"]}, True),
        # several keys and operators AND together
        (
            {"StringEquals": {"aws:username": "alice", "aws:PrincipalAccount": "123456789012"}},
            {"aws:username": "alice", "aws:PrincipalAccount": "999999999999"},
            False,
        ),
        (
            {"StringEquals": {"aws:username": "alice"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            {"aws:username": "alice", "aws:SourceIp": "10.9.9.9"},
            True,
        ),
        (
            {"StringEquals": {"aws:username": "alice"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            {"aws:username": "alice", "aws:SourceIp": "192.0.2.1"},
            False,
        ),
        # operator names are matched case-insensitively
        ({"stringequals": {"aws:username": "alice"}}, {"aws:username": "alice"}, True),
    ],
)
def test_condition_operators(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    assert (decide(stmt(Condition=condition), context=context) is ALLOW) is expected


def test_condition_on_deny_statement() -> None:
    statements = (stmt(), stmt("Deny", Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    assert decide(*statements, context={"aws:SourceIp": "10.0.0.1"}) is ALLOW
    assert decide(*statements, context={"aws:SourceIp": "198.51.100.1"}) is DENY
    assert decide(*statements, context={}) is DENY  # missing key: the negated operator is true


# --- policy variables ---

HOME = "arn:aws:s3:::home/${aws:username}/*"


@pytest.mark.parametrize(
    ("pattern", "resource", "context", "expected"),
    [
        (HOME, "arn:aws:s3:::home/alice/notes.txt", {"aws:username": "alice"}, True),
        (HOME, "arn:aws:s3:::home/bob/notes.txt", {"aws:username": "alice"}, False),
        (HOME, "arn:aws:s3:::home/alice/notes.txt", {}, False),  # unresolvable: matches nothing
        (HOME, "arn:aws:s3:::home/alice/x", {"AWS:UserName": "alice"}, True),  # variable names any case
        (HOME, "arn:aws:s3:::home/a/x", {"aws:username": ["a", "b"]}, False),  # multivalued: not a variable
        (HOME, "arn:aws:s3:::home/anything/x", {"aws:username": "*"}, False),  # values are literal
        (HOME, "arn:aws:s3:::home/*/x", {"aws:username": "*"}, True),
        ("arn:aws:s3:::u/${aws:userid}", "arn:aws:s3:::u/AIDAEXAMPLE", {"aws:userid": "AIDAEXAMPLE"}, True),
        (
            "arn:aws:iam::${aws:PrincipalAccount}:user/*",
            "arn:aws:iam::123456789012:user/x",
            {"aws:PrincipalAccount": "123456789012"},
            True,
        ),
        (
            "arn:aws:iam::${aws:PrincipalAccount}:user/*",
            "arn:aws:iam::999999999999:user/x",
            {"aws:PrincipalAccount": "123456789012"},
            False,
        ),
        ("arn:aws:s3:::b/${*}", "arn:aws:s3:::b/*", {}, True),  # ${*} is a literal star
        ("arn:aws:s3:::b/${*}", "arn:aws:s3:::b/x", {}, False),
        ("arn:aws:s3:::b/${?}", "arn:aws:s3:::b/?", {}, True),
        ("arn:aws:s3:::b/${?}", "arn:aws:s3:::b/x", {}, False),
        ("arn:aws:s3:::b/${$}x", "arn:aws:s3:::b/$x", {}, True),
        ("arn:aws:s3:::b/${aws:username, 'guest'}", "arn:aws:s3:::b/guest", {}, True),
        ("arn:aws:s3:::b/${aws:username, 'guest'}", "arn:aws:s3:::b/alice", {"aws:username": "alice"}, True),
    ],
)
def test_policy_variables_in_resources(
    pattern: str, resource: str, context: dict[str, Any], expected: bool
) -> None:
    assert (decide(stmt(resource=pattern), resource=resource, context=context) is ALLOW) is expected


def test_variables_are_literal_text_in_2008_policies() -> None:
    statement = stmt(resource=HOME)
    literal = "arn:aws:s3:::home/${aws:username}/x"
    context = {"aws:username": "alice"}
    assert decide(statement, resource="arn:aws:s3:::home/alice/x", context=context, version=None) is IMPLICIT
    assert decide(statement, resource=literal, context=context, version="2008-10-17") is ALLOW


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        (
            {"StringLike": {"s3:prefix": "home/${aws:username}/*"}},
            {"aws:username": "al", "s3:prefix": "home/al/x"},
            True,
        ),
        (
            {"StringLike": {"s3:prefix": "home/${aws:username}/*"}},
            {"aws:username": "al", "s3:prefix": "home/bo/x"},
            False,
        ),
        ({"StringEquals": {"s3:prefix": "${aws:username}"}}, {"s3:prefix": "al"}, False),  # unresolvable
        (
            {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:${aws:PrincipalAccount}:*"}},
            {"aws:PrincipalAccount": "123456789012", "aws:SourceArn": "arn:aws:sns:r:123456789012:t"},
            True,
        ),
    ],
)
def test_policy_variables_in_condition_values(
    condition: dict[str, Any], context: dict[str, Any], expected: bool
) -> None:
    assert (decide(stmt(Condition=condition), context=context) is ALLOW) is expected


# --- validation ---

VALID = stmt(action="ec2:DescribeRegions")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "Syntax errors in policy."),
        ("[]", "Syntax errors in policy."),
        ('{"Version": "2012-10-17"}', "Syntax errors in policy."),  # no Statement
        (doc(version="2012-10-17"), "Syntax errors in policy."),  # empty Statement list
        (doc(VALID, version="2020-01-01"), "Syntax errors in policy."),
        (json.dumps({"Version": "2012-10-17", "Statement": [VALID], "Extra": 1}), "Syntax errors in policy."),
        (doc(stmt(effect=None)), "Syntax errors in policy."),
        (doc(stmt(effect="Maybe")), "Syntax errors in policy."),
        (doc(stmt(effect="allow")), "Syntax errors in policy."),
        (doc(stmt(Principal="*")), "Policy document should not specify a principal."),
        (doc(stmt(NotPrincipal={"AWS": "123456789012"})), "Policy document should not specify a principal."),
        (doc(stmt(Condition={"StringEqualz": {"aws:username": "a"}})), "Syntax errors in policy."),
        (doc(stmt(Condition={"NullIfExists": {"aws:username": "true"}})), "Syntax errors in policy."),
        (doc(stmt(Condition={"StringEquals": {"username": "a"}})), "must be prefaced by a vendor"),
        (doc(stmt(Condition={"NumericEquals": {"s3:max-keys": "ten"}})), "Syntax errors in policy."),
        (doc(stmt(Condition={"DateLessThan": {"aws:CurrentTime": "yesterday"}})), "Syntax errors in policy."),
        (doc(stmt(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}})), "Syntax errors in policy."),
        (doc(stmt(Condition={"Null": {"aws:username": "maybe"}})), "Syntax errors in policy."),
        (doc(stmt(Condition={"StringEquals": {"aws:username": {"nested": 1}}})), "Syntax errors in policy."),
        (doc(stmt(action="DescribeRegions")), "must be prefaced by a vendor"),
        (doc(stmt(action="ec2:Describe:Regions")), "Actions/Condition can contain only one colon."),
        (doc(stmt(action="e c2:DescribeRegions")), "Vendor e c2 is not valid"),
        (doc(stmt(action=None)), "Policy statement must contain actions."),
        (doc(stmt(action=[])), "Policy statement must contain actions."),
        (doc(stmt(NotAction="iam:*")), "Syntax errors in policy."),  # Action and NotAction
        (doc(stmt(action=["ec2:X", 5])), "Syntax errors in policy."),
        (doc(stmt(resource=None)), "Policy statement must contain resources."),
        (doc(stmt(resource="my-bucket")), 'Resource my-bucket must be in ARN format or "*".'),
        (doc(stmt(Unknown="x")), "Syntax errors in policy."),
        (doc(stmt(Sid="One"), stmt(Sid="One")), "Statement IDs (SID) in a single policy must be unique."),
        (
            '{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": NaN}}',
            "Syntax errors in policy.",
        ),
        # Found by the fuzz suite: nested deeper than Python recurses, yet under 2 KB (was a 500).
        ('{"Statement": ' + "[" * 1000 + "]" * 1000 + "}", "Syntax errors in policy."),
    ],
)
def test_malformed_documents(document: str, message: str) -> None:
    with pytest.raises(CloudError) as caught:
        parse_policy(document)
    assert caught.value.code == "MalformedPolicyDocument"
    assert message in caught.value.message


def test_size_limit_counts_non_whitespace_characters() -> None:
    compact = doc(VALID)
    limit = sum(1 for c in compact if not c.isspace())
    assert parse_policy(json.dumps(json.loads(compact), indent=8), max_size=limit)  # whitespace is free
    with pytest.raises(CloudError) as caught:
        parse_policy(compact, max_size=limit - 1)
    assert caught.value.code == "MalformedPolicyDocument"
    assert "PolicySize" in caught.value.message


def test_valid_shapes_are_accepted() -> None:
    single = json.dumps(
        {
            "Statement": {
                "Effect": "Deny",
                "NotAction": "iam:*",
                "NotResource": ["arn:aws:s3:::x"],
                "Sid": "S1",
            }
        }
    )
    policy = parse_policy(single)
    assert policy.version == "2008-10-17"  # the default when Version is absent
    assert policy.statements[0].effect == "Deny"
    assert policy.statements[0].not_action and policy.statements[0].not_resource


def test_parsed_policies_are_cached_and_hashable() -> None:
    text = doc(stmt(Condition={"ForAnyValue:StringLike": {"aws:TagKeys": ["a*"]}}))
    first, second = parse_policy_cached(text), parse_policy_cached(text)
    assert first is second
    assert isinstance(first, Policy)
    assert hash(first) == hash(parse_policy(text)) and first == parse_policy(text)


# --- resource policies ---

ACCOUNT = "123456789012"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
STRANGER = "arn:aws:iam::999999999999:user/mallory"
OBJECT = "arn:aws:s3:::bucket/key"


def bucket_decision(
    principal: Any,
    arn: str | None,
    account: str | None = None,
    *,
    effect: str = "Allow",
    element: str = "Principal",
) -> Decision:
    statement = stmt(effect, "s3:GetObject", "arn:aws:s3:::bucket/*", **{element: principal})
    policy = parse_resource_policy(doc(statement))
    return evaluate([policy], "s3:GetObject", OBJECT, principal_arn=arn, principal_account=account)


@pytest.mark.parametrize(
    ("principal", "arn", "account", "expected"),
    [
        ("*", None, None, ALLOW),  # anonymous
        ({"AWS": "*"}, STRANGER, None, ALLOW),
        ({"AWS": ACCOUNT}, ALICE, None, ALLOW),  # bare account id: every principal of the account
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, BOB, ACCOUNT, ALLOW),
        ({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, STRANGER, None, IMPLICIT),
        ({"AWS": ACCOUNT}, None, None, IMPLICIT),  # anonymous is not in the account
        ({"AWS": ALICE}, ALICE, ACCOUNT, ALLOW),
        ({"AWS": ALICE}, BOB, ACCOUNT, IMPLICIT),
        ({"AWS": [BOB, ALICE]}, ALICE, None, ALLOW),
        ({"Service": "ec2.amazonaws.com"}, "ec2.amazonaws.com", None, ALLOW),
    ],
)
def test_resource_policy_principals(
    principal: Any, arn: str | None, account: str | None, expected: Decision
) -> None:
    assert bucket_decision(principal, arn, account) is expected


def test_not_principal_deny_denies_everyone_else() -> None:
    allow_all = parse_resource_policy(doc(stmt("Allow", "s3:*", "arn:aws:s3:::bucket/*", Principal="*")))
    deny_others = parse_resource_policy(
        doc(stmt("Deny", "s3:*", "arn:aws:s3:::bucket/*", NotPrincipal={"AWS": ALICE}))
    )
    assert evaluate([allow_all, deny_others], "s3:GetObject", OBJECT, principal_arn=ALICE) is ALLOW
    assert evaluate([allow_all, deny_others], "s3:GetObject", OBJECT, principal_arn=BOB) is DENY
    assert evaluate([allow_all, deny_others], "s3:GetObject", OBJECT) is DENY


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (stmt(), "Missing required field Principal."),
        (stmt(Principal={"AWS": "bob"}), "Invalid principal in policy."),
        (stmt(Principal={"Robot": "x"}), "Invalid principal in policy."),
        (stmt(Principal="*", NotPrincipal="*"), "Syntax errors in policy."),
    ],
)
def test_malformed_resource_policies(statement: dict[str, Any], message: str) -> None:
    with pytest.raises(CloudError) as caught:
        parse_resource_policy(doc(statement))
    assert caught.value.code == "MalformedPolicyDocument"
    assert caught.value.message == message


def test_identity_policies_ignore_principal_arguments() -> None:
    policy = parse_policy(doc(stmt()))
    assert evaluate([policy], "s3:GetObject", OBJECT, principal_arn=STRANGER) is ALLOW
