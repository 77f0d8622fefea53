"""May this caller do this S3 operation? AWS's combined evaluation of the caller's IAM policies,
the bucket policy and the bucket's ACL:

- an explicit Deny in either policy refuses;
- a role session's session policies bound what a bucket policy naming its role grants it (not what
  one naming the session itself grants: `core/policy.evaluate`);
- the bucket owner's account: its root may do anything; its users need an IAM or bucket-policy Allow;
- another account (or anonymous): the bucket policy or ACL must grant it, and an IAM user of that
  account also needs its own IAM Allow. The bucket's ACL grants listing and writing objects; an
  object's own ACL grants reading it and its ACL (given the database to read it from).

The bucket's settings narrow that: under BucketOwnerEnforced ACLs grant nothing (policies only);
under IgnorePublicAcls grants to AllUsers/AuthenticatedUsers grant nothing; under
RestrictPublicBuckets a public bucket policy allows no one outside the owner's account.

Before any of that, a request naming an existing bucket and `x-amz-expected-bucket-owner` is refused
(403 AccessDenied) unless that account owns the bucket: S3's bucket owner condition.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from mallee.core import clock
from mallee.core import policy as iam_policy
from mallee.core.context import Principal, RequestContext
from mallee.core.errors import CloudError
from mallee.core.policy import Decision
from mallee.db.session import Database
from mallee.protocol.dispatch import Operation
from mallee.services.walrus.acl import acls_enabled
from mallee.services.walrus.identity import RemoteIdentity
from mallee.services.walrus.public import ALL_USERS, AUTHENTICATED_USERS, blocks, policy_is_public
from mallee.services.walrus.tables import Bucket, ObjectVersion

# Operation -> IAM action where the names differ (the rest are "s3:" + operation name).
ACTIONS = {
    "ListBuckets": "s3:ListAllMyBuckets",
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "HeadObject": "s3:GetObject",
    "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObjects": "s3:DeleteObject",
    "DeleteBucketTagging": "s3:PutBucketTagging",
    "PutBucketCors": "s3:PutBucketCORS",
    "GetBucketCors": "s3:GetBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "DeleteObjectTagging": "s3:DeleteObjectTagging",
    "DeleteBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
}

# What the cloud administrator's root identity may do in any bucket: read objects, so the CLC can
# hand nodes presigned URLs for the images they boot (on AWS, EC2's own read access).
CLOUD_READS = {"s3:GetObject", "s3:GetObjectVersion"}

# What a bucket's ACL grants: READ lists the bucket, WRITE creates, overwrites and deletes its
# objects, READ_ACP/WRITE_ACP read and change the bucket's ACL. It grants no object reads.
_BUCKET_ACL_NEEDS = {
    "s3:ListBucket": "READ",
    "s3:ListBucketVersions": "READ",
    "s3:ListBucketMultipartUploads": "READ",
    "s3:PutObject": "WRITE",
    "s3:DeleteObject": "WRITE",
    "s3:DeleteObjectVersion": "WRITE",
    "s3:AbortMultipartUpload": "WRITE",
    "s3:GetBucketAcl": "READ_ACP",
    "s3:PutBucketAcl": "WRITE_ACP",
}
# What an object's own ACL grants (its owner's FULL_CONTROL implied): reading it and its ACL.
_OBJECT_ACL_NEEDS = {
    "s3:GetObject": "READ",
    "s3:GetObjectVersion": "READ",
    "s3:GetObjectAttributes": "READ",
    "s3:GetObjectVersionAttributes": "READ",
    "s3:GetObjectAcl": "READ_ACP",
    "s3:GetObjectVersionAcl": "READ_ACP",
    "s3:PutObjectAcl": "WRITE_ACP",
    "s3:PutObjectVersionAcl": "WRITE_ACP",
}
BucketLoader = Callable[[str], Bucket | None]


# Actions with a separate IAM action when the request names a version (s3:GetObjectVersion, ...).
_VERSIONED = frozenset(
    {"s3:GetObject", "s3:GetObjectAcl", "s3:PutObjectAcl", "s3:DeleteObject"}
    | {"s3:GetObjectTagging", "s3:PutObjectTagging", "s3:DeleteObjectTagging"}
    | {"s3:GetObjectAttributes"}
)


def action_of(operation: str, params: dict[str, Any]) -> str:
    action = ACTIONS.get(operation, f"s3:{operation}")
    if params.get("VersionId") and action in _VERSIONED:
        return action.replace("Object", "ObjectVersion", 1)
    return action


def resource_of(params: dict[str, Any]) -> str:
    bucket = params.get("Bucket")
    if not bucket:
        return "*"
    key = params.get("Key")
    return f"arn:aws:s3:::{bucket}/{key}" if key is not None else f"arn:aws:s3:::{bucket}"


def grants_allow(
    stored: str | None, principal: Principal | None, needed: str, ignore_public: bool = False
) -> bool:
    """Does a stored JSON grant list give `principal` (None: anonymous) the `needed` permission?
    `ignore_public`: grants to AllUsers and AuthenticatedUsers count for nothing."""
    for grant in json.loads(stored or "[]"):
        permission = grant.get("Permission")
        if permission not in (needed, "FULL_CONTROL"):
            continue
        grantee = grant.get("Grantee", {})
        uri, account = grantee.get("URI"), grantee.get("ID")
        if ignore_public and uri in (ALL_USERS, AUTHENTICATED_USERS):
            continue
        if uri == ALL_USERS or (uri == AUTHENTICATED_USERS and principal is not None):
            return True
        if principal is not None and account == principal.account_id:
            return True
    return False


def with_owner(owner_account_id: str, stored: str | None) -> str:
    """Stored grants plus the owner's FULL_CONTROL, which S3 gives an object's owner implicitly."""
    owner = {"Grantee": {"Type": "CanonicalUser", "ID": owner_account_id}, "Permission": "FULL_CONTROL"}
    return json.dumps([owner, *json.loads(stored or "[]")])


@functools.lru_cache(maxsize=256)
def _bucket_policy(document: str) -> iam_policy.Policy:
    return iam_policy.parse_resource_policy(document)


class S3Access:
    def __init__(
        self, identity: RemoteIdentity, load_bucket: BucketLoader, db: Database | None = None
    ) -> None:
        self.identity = identity
        self.load_bucket = load_bucket
        self.db = db  # where object ACLs are read from (None: bucket ACLs only)

    def object_acl(self, bucket: str, key: str, version_id: str | None) -> str | None:
        """The JSON grants of the object version a request names (None when there is none),
        its owner's implicit FULL_CONTROL included (see `with_owner`)."""
        if self.db is None:
            return None
        with self.db.session() as s:
            q = select(ObjectVersion.owner_account_id, ObjectVersion.acl).where(
                ObjectVersion.bucket == bucket, ObjectVersion.key == key
            )
            q = (
                q.where(ObjectVersion.version_id == version_id)
                if version_id
                else q.where(ObjectVersion.is_latest)
            )
            row = s.execute(q.where(ObjectVersion.is_delete_marker.is_(False))).first()
            return with_owner(row[0], row[1]) if row is not None else None

    def resolve(self, access_key_id: str, session_token: str | None) -> Any:
        return self.identity.resolve(access_key_id, session_token)

    def authorize(self, ctx: RequestContext, operation: Operation) -> None:
        principal = ctx.principal
        ctx.account_id = principal.account_id if principal else None
        if operation.access == "any":
            return
        params = ctx.params
        # CreateBucket's bucket is one still to make: another account's bucket of that name (its
        # policy, its ACL) has no say in it; the handler answers BucketAlreadyExists.
        named = params.get("Bucket") if operation.name != "CreateBucket" else None
        bucket = self.load_bucket(named) if named else None
        ctx.resource = bucket  # for the handler (buckets.read_bucket)
        expected = params.get("ExpectedBucketOwner")
        if expected is not None and bucket is not None and expected != bucket.owner_account_id:
            raise _denied()  # S3's bucket owner condition: 403 whoever asks
        action = action_of(operation.name, params)
        if (
            principal is not None
            and principal.is_root
            and principal.is_system_admin
            and action in CLOUD_READS
        ):
            return  # the cloud itself fetching images for its nodes (what aws-exec-read grants EC2)
        resource = resource_of(params)
        if principal is None and bucket is not None:
            # An anonymous request that a policy or ACL allows acts for the bucket's owner: what it
            # writes is owned and counted (quotas) there.
            ctx.account_id = bucket.owner_account_id
        evaluated = (bucket is not None and bucket.policy) or (
            principal is not None and not principal.is_root
        )
        context = _condition_context(ctx, params) if evaluated else {}  # only policies read it
        key = None
        if principal is not None and not principal.is_root:
            key = self.identity.lookup(principal.access_key_id, principal.session_token)
        policy_decision = Decision.IMPLICIT_DENY
        if bucket is not None and bucket.policy:
            policy_decision = iam_policy.evaluate(
                [_bucket_policy(bucket.policy)],
                action,
                resource,
                context,
                principal_arn=principal.arn if principal else None,
                principal_account=principal.account_id if principal else None,
                # Naming a role names its sessions, as far as their session policies allow.
                role_arn=principal.role_arn if principal else None,
                session_policies=key.session_policies if key else None,
            )
        iam_decision = Decision.IMPLICIT_DENY
        if key is not None:
            iam_decision = iam_policy.evaluate_session(
                key.policies, key.session_policies, action, resource, context
            )
        if Decision.DENY in (policy_decision, iam_decision):
            raise _denied()
        owner = bucket.owner_account_id if bucket else (principal.account_id if principal else None)
        if principal is not None and principal.account_id == owner:
            if principal.is_root or Decision.ALLOW in (iam_decision, policy_decision):
                return
            raise _denied()
        if (
            policy_decision is Decision.ALLOW
            and bucket is not None
            and bucket.policy
            and blocks(bucket).restrict_public_buckets
            and policy_is_public(bucket.policy)
        ):
            policy_decision = Decision.IMPLICIT_DENY  # RestrictPublicBuckets: the owner's account only
        granted = policy_decision is Decision.ALLOW or (
            bucket is not None and self._acl_grants(bucket, principal, action, params)
        )
        if granted and (principal is None or principal.is_root or iam_decision is Decision.ALLOW):
            return
        raise _denied()

    def _acl_grants(
        self, bucket: Bucket, principal: Principal | None, action: str, params: dict[str, Any]
    ) -> bool:
        """Do the bucket's ACL or the named object's grant this caller the action?"""
        if not acls_enabled(bucket):
            return False  # BucketOwnerEnforced
        ignore_public = blocks(bucket).ignore_public_acls
        if action in _BUCKET_ACL_NEEDS:
            return grants_allow(bucket.acl, principal, _BUCKET_ACL_NEEDS[action], ignore_public)
        if action in _OBJECT_ACL_NEEDS and params.get("Key"):
            stored = self.object_acl(bucket.name, params["Key"], params.get("VersionId"))
            return stored is not None and grants_allow(
                stored, principal, _OBJECT_ACL_NEEDS[action], ignore_public
            )
        return False


def _denied() -> CloudError:
    return CloudError("AccessDenied", "Access Denied")


def _condition_context(ctx: RequestContext, params: dict[str, Any]) -> dict[str, str | list[str]]:
    values: dict[str, str | list[str]] = {
        "aws:currenttime": clock.iso8601(clock.now()),
        "aws:securetransport": "false",
    }
    if ctx.request.remote_addr:
        values["aws:sourceip"] = ctx.request.remote_addr
    if ctx.principal is not None:
        values["aws:principalaccount"] = ctx.principal.account_id
        values["aws:principalarn"] = ctx.principal.principal_arn
        values["aws:userid"] = ctx.principal.user_id
        if ctx.principal.user_name:
            values["aws:username"] = ctx.principal.user_name
    for member, key in (
        ("Prefix", "s3:prefix"),
        ("Delimiter", "s3:delimiter"),
        ("VersionId", "s3:versionid"),
    ):
        if params.get(member) is not None:
            values[key] = str(params[member])
    if params.get("MaxKeys") is not None:
        values["s3:max-keys"] = str(params["MaxKeys"])
    return values
