"""What the Walrus process sets up once at start-up for its handlers: the object layer (which
holds the database, the object store, the group committer and the quotas), the authorizer and the
bucket cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mallee.drivers.objectstore.base import ObjectStore

if TYPE_CHECKING:  # these import tables and identity; runtime stays importable from anywhere
    from mallee.services.walrus.access import S3Access
    from mallee.services.walrus.bucket_cache import BucketCache
    from mallee.services.walrus.object_layer import ObjectLayer

_layer: ObjectLayer | None = None
_access: S3Access | None = None
_buckets: BucketCache | None = None


def configure(layer: ObjectLayer, access: S3Access, buckets: BucketCache) -> None:
    global _layer, _access, _buckets
    _layer, _access, _buckets = layer, access, buckets


def layer() -> ObjectLayer:
    """Where every read and write of object versions goes (see object_layer)."""
    assert _layer is not None, "Walrus's app configures the object layer at start-up"
    return _layer


def object_store() -> ObjectStore:
    """The object layer's blob store, for the bytes themselves (bodies, blob_reads)."""
    return layer().store


def access() -> S3Access:
    """The gateway's own authorizer, for handlers that check a second resource (a copy source)."""
    assert _access is not None, "Walrus's app configures the authorizer at start-up"
    return _access


def buckets() -> BucketCache:
    """Committed bucket rows, for reading only (see bucket_cache)."""
    assert _buckets is not None, "Walrus's app configures the bucket cache at start-up"
    return _buckets
