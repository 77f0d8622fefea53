"""What the Walrus process sets up once at start-up for its handlers: the object-store driver and
the quota checker (like its database handle)."""

from __future__ import annotations

from mallee.drivers.objectstore.base import ObjectStore
from mallee.services.walrus.quota import Quotas

_store: ObjectStore | None = None
_quotas: Quotas | None = None


def configure(store: ObjectStore, quotas: Quotas) -> None:
    global _store, _quotas
    _store, _quotas = store, quotas


def quotas() -> Quotas:
    assert _quotas is not None, "Walrus's app configures the quotas at start-up"
    return _quotas


def object_store() -> ObjectStore:
    assert _store is not None, "Walrus's app configures the object store at start-up"
    return _store
