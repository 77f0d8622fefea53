"""Imports every handler module of Walrus so their operations register in `apis.S3`."""

from __future__ import annotations

from mallee.services.walrus import (  # noqa: F401
    acls,
    bucket_config,
    bucket_encryption,
    bucket_policy,
    buckets,
    copy,
    deletes,
    lifecycle,
    listing,
    multipart,
    multipart_listing,
    object_attributes,
    object_lock,
    objects,
    ownership,
    public_access,
    tagging,
    versioning,
)
from mallee.services.walrus.apis import S3

REGISTRIES = {"s3": S3}
