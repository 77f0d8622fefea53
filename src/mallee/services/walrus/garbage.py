"""Blobs the database stops pointing at: queued in the same transaction, deleted after commit."""

from __future__ import annotations

import json

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.db.session import Database
from mallee.drivers.objectstore.base import ObjectStore
from mallee.services.walrus.tables import Garbage, ObjectVersion


def discard(s: Session, version: ObjectVersion) -> None:
    """Delete a version row and queue its blobs for deletion."""
    locators = [version.locator] if version.locator else []
    locators += [part[0] for part in json.loads(version.parts or "[]")]
    queue(s, locators)
    s.delete(version)


def queue(s: Session, locators: list[str]) -> None:
    now = clock.now()
    for locator in locators:
        if s.get(Garbage, locator) is None:
            s.add(Garbage(locator=locator, queued=now))


def collect(db: Database, store: ObjectStore, limit: int = 1000) -> int:
    """Delete queued blobs from the store, then their queue rows. Safe to run at any time."""
    with db.session() as s:
        locators = list(s.scalars(select(Garbage.locator).limit(limit)))
    for locator in locators:
        store.delete(locator)
    if locators:
        with db.session() as s:
            s.execute(delete(Garbage).where(Garbage.locator.in_(locators)))
    return len(locators)
