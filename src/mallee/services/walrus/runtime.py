"""The Walrus process's object-store driver, chosen once at start-up (like its database handle)."""

from __future__ import annotations

from mallee.drivers.objectstore.base import ObjectStore

_store: ObjectStore | None = None


def configure(store: ObjectStore) -> None:
    global _store
    _store = store


def object_store() -> ObjectStore:
    assert _store is not None, "Walrus's app configures the object store at start-up"
    return _store
