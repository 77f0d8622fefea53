"""Blobs the database stops pointing at: queued in the same transaction, deleted after commit.

The transaction that stops pointing at a blob adds its locator to the `garbage` table. Once that
transaction committed, `remove` (given what `queued` read) deletes the blobs it queued and has
the group committer drop their queue rows in a later batch; a crash in between leaves
rows whose blobs `collect` deletes (again: deleting a missing blob succeeds) at the next start or
lifecycle pass.
"""

from __future__ import annotations

import functools
import json
from typing import cast

from sqlalchemy import Table, bindparam, delete, insert, select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.db.group_commit import GroupCommitter
from mallee.db.session import Database
from mallee.drivers.objectstore.base import ObjectStore
from mallee.services.walrus.tables import Garbage, ObjectVersion

_QUEUED = "walrus.garbage"  # Session.info key: the locators this session's transaction queued
_TABLE = cast(Table, Garbage.__table__)
_LISTED = _TABLE.c.locator.in_(bindparam("locators", expanding=True))
_KNOWN = select(_TABLE.c.locator).where(_LISTED)
_FORGET = delete(_TABLE).where(_LISTED)


def discard(s: Session, version: ObjectVersion) -> None:
    """Delete a version row and queue its blobs for deletion."""
    queue(s, blobs_of(version.locator, version.parts))
    s.delete(version)


def blobs_of(locator: str | None, parts: str | None) -> list[str]:
    """The blobs of a version: its own, or its multipart parts' (`parts` as stored)."""
    return ([locator] if locator else []) + [part[0] for part in json.loads(parts or "[]")]


def queue(s: Session, locators: list[str]) -> None:
    """Queue blobs for deletion once the transaction of `s` commits (Core statements: this runs
    for every PUT that replaces an object)."""
    mine: list[str] = s.info.setdefault(_QUEUED, [])
    new = [locator for locator in dict.fromkeys(locators) if locator not in mine]
    if not new:
        return
    conn = s.connection()
    known = set(conn.scalars(_KNOWN, {"locators": new}))
    now = clock.now()
    rows = [{"locator": locator, "queued": now} for locator in new if locator not in known]
    if rows:
        conn.execute(insert(_TABLE), rows)
    mine.extend(new)


def queued(s: Session) -> list[str]:
    """What the transaction of `s` queued (read once it committed; a read-only one queued nothing)."""
    return list(s.info.get(_QUEUED, ()))


def remove(locators: list[str], store: ObjectStore, writer: GroupCommitter) -> None:
    """Delete queued blobs whose transaction committed, then (in a later batch) their queue rows."""
    if not locators:
        return
    for locator in locators:
        store.delete(locator)
    writer.submit(functools.partial(forget, locators=locators))


def forget(s: Session, locators: list[str]) -> None:
    """Drop the queue rows of blobs already deleted."""
    s.connection().execute(_FORGET, {"locators": locators})


def collect(db: Database, store: ObjectStore, limit: int = 1000) -> int:
    """Delete queued blobs from the store, then their queue rows. Safe to run at any time."""
    with db.session() as s:
        locators = list(s.scalars(select(Garbage.locator).limit(limit)))
    for locator in locators:
        store.delete(locator)
    if locators:
        with db.session() as s:
            forget(s, locators)
    return len(locators)
