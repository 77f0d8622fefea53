"""What S3 calls public, and a bucket's Block Public Access settings (S3 User Guide, "Blocking
public access to your Amazon S3 storage" and its section "The meaning of 'public'"):

- an ACL is public when it grants anything to the AllUsers or AuthenticatedUsers group;
- a bucket policy is public unless every Allow statement in it is limited to fixed principals
  (accounts, users, roles, services: no `*`, no Federated provider) or by a fixed value of a
  narrowing condition key (aws:SourceIp no wider than /8 for IPv4 or /32 for IPv6, aws:SourceVpc,
  aws:SourceAccount, aws:PrincipalAccount, ...) under a positive operator;
- `blocks(bucket)` is the bucket's PublicAccessBlockConfiguration, all off when it has none. New
  buckets start with all four on (`ALL_BLOCKED`), as on S3 since April 2023.

No handlers here: the ACL code, the authorizer and the bucket handlers all read it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from mallee.core import policy as iam_policy
from mallee.core.policy_conditions import Condition, Template
from mallee.services.walrus.tables import Bucket

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
PUBLIC_GROUPS = frozenset({ALL_USERS, AUTHENTICATED_USERS})

FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
ALL_BLOCKED = json.dumps(dict.fromkeys(FLAGS, True))  # a new bucket's configuration


@dataclass(frozen=True)
class Blocks:
    block_public_acls: bool = False  # Put*Acl, PutObject, CreateBucket... with a public ACL: 403
    ignore_public_acls: bool = False  # public grants count for nothing
    block_public_policy: bool = False  # PutBucketPolicy of a public policy: 403
    restrict_public_buckets: bool = False  # a public policy allows the owner's account only


NO_BLOCKS = Blocks()


def blocks(bucket: Bucket) -> Blocks:
    return _parsed(bucket.public_access_block) if bucket.public_access_block else NO_BLOCKS


@functools.lru_cache(maxsize=64)
def _parsed(stored: str) -> Blocks:
    found = json.loads(stored)
    return Blocks(*(bool(found.get(flag)) for flag in FLAGS))


def public_grant(grant: dict[str, Any]) -> bool:
    return (grant.get("Grantee") or {}).get("URI") in PUBLIC_GROUPS


def acl_is_public(stored: str | None) -> bool:
    """Does a stored JSON grant list grant anything to everyone (or to every signed-in caller)?"""
    return any(public_grant(grant) for grant in json.loads(stored or "[]"))


# Condition keys whose fixed value limits who a statement lets in ("The meaning of 'public'").
_NARROWING_KEYS = frozenset(
    {"aws:sourceip", "aws:sourcearn", "aws:sourcevpc", "aws:sourcevpce", "aws:sourceowner"}
    | {"aws:sourceaccount", "aws:principalaccount", "aws:principalarn", "aws:principalorgid"}
    | {"aws:userid", "s3:x-amz-server-side-encryption-aws-kms-key-id"}
    | {"s3:dataaccesspointarn", "s3:dataaccesspointaccount"}
)
# Operators under which such a value lets in only what it names (negated ones let in the rest).
_LIMITING = frozenset(
    {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike", "IpAddress"}
)
# aws:SourceIp ranges wider than these are public all the same.
_WIDEST_PREFIX = {4: 8, 6: 32}


@functools.lru_cache(maxsize=256)
def policy_is_public(document: str) -> bool:
    """Is a (valid) bucket policy public, as S3's PolicyStatus and Block Public Access judge it?"""
    return any(_public(s) for s in iam_policy.parse_resource_policy(document).statements)


def _public(statement: iam_policy.Statement) -> bool:
    if statement.effect != "Allow":
        return False  # a Deny lets no one in
    if not statement.not_principal and all(_fixed_principal(p) for p in statement.principals or ()):
        return False
    return not any(_narrows(condition) for condition in statement.conditions)


def _fixed_principal(principal: iam_policy.Principal) -> bool:
    # "*" is anyone; a Federated identity provider's users are anyone it lets sign in.
    wildcard = "*" in principal.value or "?" in principal.value
    return principal.kind in ("AWS", "Service", "CanonicalUser") and not wildcard


def _narrows(condition: Condition) -> bool:
    if (
        condition.key not in _NARROWING_KEYS
        or condition.operator not in _LIMITING
        or condition.if_exists  # true when the request lacks the key
        or condition.set_operator == "ForAllValues"  # likewise
        or not condition.values
        or not all(_fixed(value) for value in condition.values)
    ):
        return False
    if condition.key == "aws:sourceip":
        return all(_narrow_network(_text(value)) for value in condition.values)
    return True


def _fixed(value: Template) -> bool:
    return all(token.kind == "lit" for token in value.tokens)  # no wildcard, no policy variable


def _text(value: Template) -> str:
    return "".join(token.text for token in value.tokens)


def _narrow_network(text: str) -> bool:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return network.prefixlen >= _WIDEST_PREFIX[network.version]
