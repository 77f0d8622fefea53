"""Imports every handler module of Walrus so their operations register in `apis.S3`."""

from __future__ import annotations

from mallee.services.walrus import buckets, objects  # noqa: F401
from mallee.services.walrus.apis import S3

REGISTRIES = {"s3": S3}
