"""Bucket rows kept in memory: every S3 request reads its bucket (the authorizer, then the handler),
and buckets change rarely.

Exact, not eventually consistent, across all Walrus worker processes of a host: a transaction that
changed the buckets table (an ORM change to a `Bucket`, or an UPDATE/DELETE/INSERT statement on
it; Walrus writes no textual SQL) bumps a generation counter shared by the workers (a mapped file,
`core.interprocess.SharedCounter`) right after it commits, before the request that made it
answers; every lookup first compares the counter with the one its cache was filled under, so the
next request in any worker reads the new row. A load that raced with such a commit (it may have
read the old row) is not kept. (Several hosts' Walrus on one database would need the counter in
the database instead.)

Cached rows are detached `Bucket` instances shared by every thread: read them, never change them
or add them to a session (handlers that change a bucket load it in their session: `get_bucket`).
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from mallee.core.interprocess import SharedCounter
from mallee.db.session import Database
from mallee.services.walrus.tables import Bucket

MAX_ENTRIES = 10_000  # then start over: bounds memory against requests naming many buckets
_CHANGED = "walrus.buckets-changed"  # Session.info key: this transaction wrote the buckets table


class BucketCache:
    def __init__(self, db: Database, generation: SharedCounter) -> None:
        self._db = db
        self._rows: dict[str, Bucket] = {}
        self._shared = generation
        self._seen = generation.value()  # the generation `_rows` belong to
        self._lock = threading.Lock()
        db.listen("after_flush", _note_flushed_changes)
        db.listen("do_orm_execute", _note_statement)
        db.listen("after_commit", self._after_commit)

    def cached(self, name: str) -> Bucket | None:
        """The bucket if it is cached and current, without loading it (None: not known here)."""
        if self._shared.value() != self._seen:
            return None
        return self._rows.get(name)

    def get(self, name: str) -> Bucket | None:
        """The bucket as last committed (None: there is none)."""
        generation = self._shared.value()
        if generation != self._seen:
            with self._lock:
                self._rows, self._seen = {}, generation
        found = self._rows.get(name)
        if found is not None:
            return found
        with self._db.session() as s:
            found = s.get(Bucket, name)
        if found is not None:
            with self._lock:
                # Kept only if no bucket change committed since we read, here or in another worker.
                if self._shared.value() == generation == self._seen:
                    if len(self._rows) >= MAX_ENTRIES:
                        self._rows = {}
                    self._rows[name] = found
        return found

    def clear(self) -> None:
        """Forget every cached row, in every worker."""
        self._shared.bump()

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(_CHANGED, False):
            self.clear()


def _note_flushed_changes(session: Session, _flush: UOWTransaction) -> None:
    # after_flush still sees the flushed objects in new/dirty/deleted.
    if any(isinstance(obj, Bucket) for obj in (*session.new, *session.dirty, *session.deleted)):
        session.info[_CHANGED] = True


def _note_statement(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    table: Any = getattr(state.statement, "table", None)
    if getattr(table, "name", None) == Bucket.__tablename__:
        state.session.info[_CHANGED] = True
