"""What the Walrus process sets up once at start-up for its handlers: its database, the object-store
driver, the quota checker, the bucket cache and the group committer."""

from __future__ import annotations

import contextvars
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from mallee.db.group_commit import GroupCommitter
from mallee.db.session import Database
from mallee.drivers.objectstore.base import ObjectStore
from mallee.services.walrus.quota import Quotas

if TYPE_CHECKING:  # these import tables and identity; runtime stays importable from anywhere
    from mallee.services.walrus.access import S3Access
    from mallee.services.walrus.bucket_cache import BucketCache

_db: Database | None = None
_store: ObjectStore | None = None
_quotas: Quotas | None = None
_access: S3Access | None = None
_buckets: BucketCache | None = None
_writer: GroupCommitter | None = None
# Set while a request is answered on the event loop: the commits it queues are collected here for
# the app to await (a handler thread waits for them instead; on the loop a wait would stop it).
deferred_commits: contextvars.ContextVar[list[Future[Any]] | None] = contextvars.ContextVar(
    "deferred_commits", default=None
)


def configure(
    db: Database,
    store: ObjectStore,
    quotas: Quotas,
    access: S3Access,
    buckets: BucketCache,
    writer: GroupCommitter,
) -> None:
    global _db, _store, _quotas, _access, _buckets, _writer
    _db, _store, _quotas, _access, _buckets, _writer = db, store, quotas, access, buckets, writer


def database() -> Database:
    """For reads through a connection of their own, outside the request's session (read_version)."""
    assert _db is not None, "Walrus's app configures the database at start-up"
    return _db


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


def buckets() -> BucketCache:
    """Committed bucket rows, for reading only (see bucket_cache)."""
    assert _buckets is not None, "Walrus's app configures the bucket cache at start-up"
    return _buckets


def writer() -> GroupCommitter:
    """Where the hot writes (a PUT's new object version) commit, grouped with others'."""
    assert _writer is not None, "Walrus's app configures the group committer at start-up"
    return _writer
