"""What the Walrus process sets up once at start-up for its handlers: the object-store driver and
the quota checker (like its database handle)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mallee.drivers.objectstore.base import ObjectStore
from mallee.services.walrus.quota import Quotas

if TYPE_CHECKING:  # access imports tables and identity; runtime stays importable from anywhere
    from mallee.services.walrus.access import S3Access

_store: ObjectStore | None = None
_quotas: Quotas | None = None
_access: S3Access | None = None


def configure(store: ObjectStore, quotas: Quotas, access: S3Access) -> None:
    global _store, _quotas, _access
    _store, _quotas, _access = store, quotas, access


def access() -> S3Access:
    """The gateway's own authorizer, for handlers that check a second resource (a copy source)."""
    assert _access is not None, "Walrus's app configures the authorizer at start-up"
    return _access


def quotas() -> Quotas:
    assert _quotas is not None, "Walrus's app configures the quotas at start-up"
    return _quotas


def object_store() -> ObjectStore:
    assert _store is not None, "Walrus's app configures the object store at start-up"
    return _store
