"""Per-account object storage: what each account uses, and the quotas the CLC sets on it.

Usage is counted from the object table when needed (an indexed scan of the account's buckets);
quotas come from the CLC and are cached briefly.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mallee.core import open_transactions
from mallee.core.errors import CloudError
from mallee.db.session import Database
from mallee.rpc import cloud
from mallee.rpc.transport import Client
from mallee.services.walrus.tables import Bucket, ObjectVersion

CACHE_SECONDS = 5.0


def usage(s: Session, account_id: str | None = None) -> dict[str, dict[str, int]]:
    """account id -> buckets, objects (stored versions, not delete markers) and bytes."""
    buckets = select(Bucket.owner_account_id, func.count(Bucket.name)).group_by(Bucket.owner_account_id)
    objects = (
        select(
            Bucket.owner_account_id,
            func.count(ObjectVersion.id),
            func.coalesce(func.sum(ObjectVersion.size), 0),
        )
        .join(ObjectVersion, ObjectVersion.bucket == Bucket.name)
        .where(ObjectVersion.is_delete_marker.is_(False))
        .group_by(Bucket.owner_account_id)
    )
    if account_id is not None:
        buckets = buckets.where(Bucket.owner_account_id == account_id)
        objects = objects.where(Bucket.owner_account_id == account_id)
    result: dict[str, dict[str, int]] = {}
    for owner, count in s.execute(buckets):
        result[owner] = {"buckets": int(count), "objects": 0, "bytes": 0}
    for owner, count, size in s.execute(objects):
        result.setdefault(owner, {"buckets": 0, "objects": 0, "bytes": 0}).update(
            objects=int(count), bytes=int(size)
        )
    return result


class Quotas:
    def __init__(self, clc: Client, db: Database) -> None:
        self.clc = clc
        self.db = db
        self._cache: dict[str, tuple[float, dict[str, int | None]]] = {}
        self._lock = threading.Lock()

    def unlimited(self, account_id: str) -> bool:
        """Known here, without asking the CLC, to have no quota (so `check` needs no count)."""
        cached = self._cache.get(account_id)
        if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
            return False
        return not any(cached[1].values())

    def limits(self, account_id: str) -> dict[str, int | None]:
        """The account's limits, asked of the CLC when not cached lately. Inside a transaction the
        cached ones serve however old (no rpc inside a transaction: callers ask before one opens)."""
        cached = self._cache.get(account_id)
        if cached is not None and open_transactions.held_here():
            return cached[1]
        if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
            quota = self.clc.call(cloud.ACCOUNT_QUOTA, cloud.AccountRef(account_id=account_id))
            cached = (time.monotonic(), {"max_objects": quota.max_objects, "max_bytes": quota.max_bytes})
            with self._lock:
                self._cache[account_id] = cached
        return cached[1]

    def check(self, account_id: str, new_objects: int, new_bytes: int) -> None:
        """Refuse a write that would take the account past its quota (counted, when it has one, in
        a session of its own: a PutObject opens none)."""
        limits = self.limits(account_id)
        max_objects, max_bytes = limits.get("max_objects"), limits.get("max_bytes")
        if not max_objects and not max_bytes:
            return
        with self.db.session() as s:
            used = usage(s, account_id).get(account_id, {"objects": 0, "bytes": 0})
        if max_objects and used["objects"] + new_objects > max_objects:
            raise CloudError(
                "QuotaExceeded", f"The account's quota of {max_objects} objects would be exceeded.", 403
            )
        if max_bytes and used["bytes"] + new_bytes > max_bytes:
            raise CloudError(
                "QuotaExceeded", f"The account's quota of {max_bytes} bytes would be exceeded.", 403
            )
