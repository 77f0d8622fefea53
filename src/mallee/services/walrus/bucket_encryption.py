"""Bucket default encryption: Put/Get/DeleteBucketEncryption.

A bucket's configuration says how new objects that ask for nothing are encrypted at rest. SSE-S3
(AES256) is the one algorithm Walrus has; KMS (aws:kms, aws:kms:dsse) is refused by name. When the
cloud encrypts by default (`Config.walrus_default_encryption`, on as on S3 since 2023), a bucket
without a configuration answers S3's default one and DeleteBucketEncryption returns the bucket to
it; when it does not, such a bucket has none (ServerSideEncryptionConfigurationNotFoundError).
"""

from __future__ import annotations

import json
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.checks import malformed_xml
from mallee.services.walrus.encryption import check_algorithm
from mallee.services.walrus.runtime import layer

_DEFAULT_RULE = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}


def _checked(config: Any) -> list[dict[str, Any]]:
    rules = (config or {}).get("Rules")
    if not isinstance(rules, list) or len(rules) != 1:
        raise malformed_xml()
    rule = rules[0] or {}
    default = rule.get("ApplyServerSideEncryptionByDefault")
    if not default or not default.get("SSEAlgorithm"):
        raise malformed_xml()
    algorithm = check_algorithm(default["SSEAlgorithm"])
    if default.get("KMSMasterKeyID"):
        raise CloudError(
            "InvalidArgument",
            "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
        )
    kept: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm}}
    kept["BucketKeyEnabled"] = bool(rule.get("BucketKeyEnabled"))  # S3 Bucket Keys are a KMS cost saving
    return [kept]


@S3.operation()
def put_bucket_encryption(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    bucket.encryption = json.dumps(_checked(p.get("ServerSideEncryptionConfiguration")))
    return None


@S3.operation()
def get_bucket_encryption(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    if bucket.encryption is not None:
        rules = json.loads(bucket.encryption)
    elif layer().default_encryption:
        rules = [_DEFAULT_RULE]
    else:
        raise CloudError(
            "ServerSideEncryptionConfigurationNotFoundError",
            "The server side encryption configuration was not found",
            404,
            details={"BucketName": bucket.name},
        )
    return {"ServerSideEncryptionConfiguration": {"Rules": rules}}


@S3.operation()
def delete_bucket_encryption(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).encryption = None
    return None
