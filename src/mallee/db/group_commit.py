"""Group commit: small write transactions from many threads, run by one writer thread several to a
database transaction, so that they share one commit.

Why: SQLite has one write lock. Request threads that each commit their own transaction queue for
it by sleeping and retrying (SQLite's busy handler: waits of up to 100 ms, hence seconds of tail
latency under load), and each commit pays its own fsync when commits are power-safe. The writer
takes every job waiting when it is free, runs them in order in one transaction and commits once.

A job is a function of the writer's Session that does only database work in it (no files, no
other side effects): when a job fails, the writer rolls its whole batch back and runs each job of
it again alone, so that the failure is that job's only. A job may therefore run twice, and its
caller hears of it only once its own transaction committed (or failed).

A batched job (`run_batched(fn, item)`) goes further: the items queued for the same `fn` are
handed to one call `fn(session, items)`, so that the batch costs a few statements rather than a few
per item. Each statement releases Python's lock and must win it back from the request threads:
statements, not rows, are what a busy writer pays for.

Several processes may each run a group committer on one database (Walrus's workers): each batch
holds the database's write lock from its first read (`Database.write_session`), and, given a
`lock` file, an flock around it, so that the writers take turns at once rather than through
SQLite's sleeping busy handler.

An event loop that answers requests itself defers their batched items instead (`defer`): the
loop commits them, after every request it had ready, when its process can have the turn at once,
else a little later (what it defers meanwhile joins the batch); so too if a writer that takes no
turn (a request's own session) holds SQLite's lock: the loop never sleeps in SQLite's busy
handler. No thread hand-off: a writer thread must win Python's lock back from the busy loop after
each statement, which tripled the time the turn was held. The loop is blocked by its own commit
only (about a millisecond here, the fsync included), never by another process's.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from mallee.core.interprocess import FileLock
from mallee.db.session import Database, WriteLockBusy

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[Session], Any]
# fn(session, items) -> one result per item, in order
Batched = Callable[[Session, list[Any]], list[Any]]
AfterCommit = Callable[[Session], None]
# How soon a loop that found another writer's turn tries again (seconds).
TURN_RETRY = 0.0003


@dataclass
class _Queued:
    job: Job | None = None
    batched: Batched | None = None
    item: Any = None
    future: Future[Any] = field(default_factory=Future)


class GroupCommitter:
    """`run(job)` from any thread. `after_commit(session)` runs on the writer after each commit,
    before the batch's callers return (the session is closed by then; its `info` tells what the
    jobs did)."""

    def __init__(
        self,
        db: Database,
        *,
        after_commit: AfterCommit | None = None,
        max_batch: int = 64,
        lock: Path | None = None,
    ) -> None:
        self.db = db
        self.after_commit = after_commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # The turn at the database, for the writer thread and for the deferring loop: one flock
        # each, so that they exclude each other as they exclude other processes' writers.
        self._turn = FileLock(lock) if lock else None
        self._loop_turn = FileLock(lock) if lock else None
        self._deferred: list[_Queued] = []
        self._commit_scheduled = False
        self._loop_session: Session | None = None  # the loop's commits' (Database.held_session)

    def run(self, job: Callable[[Session], T]) -> T:
        """Run `job` in the writer's next transaction; its result once that committed."""
        result: T = self.submit(job).result()
        return result

    def run_batched(self, fn: Batched, item: Any) -> Any:
        """Run `fn(session, items)` once for all the items queued for `fn` that the writer's next
        transaction takes (in queue order); this item's result once that committed."""
        return self.submit_batched(fn, item).result()

    def submit_batched(self, fn: Batched, item: Any) -> Future[Any]:
        """Queue `item` for `fn` without waiting for it."""
        return self._put(_Queued(batched=fn, item=item))

    def defer(self, fn: Batched, item: Any) -> Future[Any]:
        """From the thread of a running event loop: queue `item` for `fn`, to be committed by that
        loop soon after (see the module's doc); the loop awaits the future (`asyncio.wrap_future`).
        One loop defers to a committer."""
        queued = _Queued(batched=fn, item=item)
        self._deferred.append(queued)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_deferred)
        return queued.future

    def _commit_deferred(self) -> None:
        self._commit_scheduled = False
        if not self._deferred:
            return
        if not self._commit_deferred_batch(blocking=False):
            # Another writer's turn (or SQLite's lock, taken by a writer outside the turns): the
            # batch grows meanwhile.
            self._commit_scheduled = True
            asyncio.get_running_loop().call_later(TURN_RETRY, self._commit_deferred)

    def _commit_deferred_batch(self, *, blocking: bool) -> bool:
        """Commit what is deferred if the turn is ours now (or, blocking, once it is)."""
        if self._loop_turn is not None and not self._loop_turn.acquire(blocking=blocking):
            return False
        try:
            batch, self._deferred = self._deferred, []
            if self._loop_session is None:
                self._loop_session = self.db.held_session()
            try:
                self._commit(batch, wait=blocking, held=self._loop_session)
            except WriteLockBusy:  # a writer outside the turns (a request's own session) has SQLite's
                self._deferred = batch + self._deferred
                return False
        finally:
            if self._loop_turn is not None:
                self._loop_turn.release()
        return True

    def submit(self, job: Job) -> Future[Any]:
        """Queue `job` without waiting for it. After `close()`, only the writer itself may (its
        `after_commit` work), and what it queues still runs before it stops."""
        return self._put(_Queued(job=job))

    def _put(self, queued: _Queued) -> Future[Any]:
        with self._lock:
            if self._closed and threading.current_thread() is not self._thread:
                raise RuntimeError("the group committer is closed")
            if self._thread is None:  # started on first use: nothing runs for a process that never writes
                self._thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)
                self._thread.start()
            self._queue.put(queued)
        return queued.future

    def close(self) -> None:
        """Commit what a loop deferred (call it from that loop's thread, or once it stopped), run
        what is queued, then stop the writer."""
        if self._deferred:
            self._commit_deferred_batch(blocking=True)
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()
        for turn in (self._turn, self._loop_turn):
            if turn is not None:
                turn.close()
        if self._loop_session is not None:
            self.db.release_held(self._loop_session)

    def _loop(self) -> None:
        stopping = False
        while True:
            try:  # wait for a first job only while open; then take what is already queued
                first = self._queue.get_nowait() if stopping else self._queue.get()
            except queue.Empty:
                return
            if first is None:
                stopping = True
                continue
            # Our turn may wait for another writer: what queues meanwhile joins this batch.
            if self._turn is not None:
                self._turn.acquire()
            try:
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                    else:
                        batch.append(item)
                self._commit(batch)
            finally:
                if self._turn is not None:
                    self._turn.release()

    def _commit(self, batch: list[_Queued], *, wait: bool = True, held: Session | None = None) -> None:
        """`wait=False`: WriteLockBusy (nothing run) rather than wait for SQLite's write lock.
        `held`: in a transaction of that held session (Database.held_session)."""
        try:
            with (
                self.db.write_session(wait=wait) if held is None else self.db.held_write(held, wait=wait) as s
            ):
                results = _run(s, batch)
        except WriteLockBusy:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the job's caller
            if len(batch) == 1:
                if not batch[0].future.cancelled():
                    batch[0].future.set_exception(exc)
            else:  # find whose failure it was: each job again, in a transaction of its own
                for queued in batch:
                    self._commit([queued])
            return
        if self.after_commit is not None:  # before the callers hear back, so they see its effects
            try:
                self.after_commit(s)
            except Exception:
                log.exception("after-commit work failed")
        for queued, result in zip(batch, results, strict=True):
            if not queued.future.cancelled():  # its caller gave up waiting; the commit stands
                queued.future.set_result(result)


def _run(s: Session, batch: list[_Queued]) -> list[Any]:
    """Every job of the batch, and each batched function once for its items; a function runs
    where its first item was queued (jobs of different kinds are independent)."""
    results: list[Any] = [None] * len(batch)
    groups: dict[Batched, list[int]] = {}
    for number, queued in enumerate(batch):
        if queued.batched is not None:
            groups.setdefault(queued.batched, []).append(number)
    for number, queued in enumerate(batch):
        if queued.job is not None:
            results[number] = queued.job(s)
        elif queued.batched is not None and groups[queued.batched][0] == number:
            numbers = groups[queued.batched]
            answers = queued.batched(s, [batch[n].item for n in numbers])
            for n, answer in zip(numbers, answers, strict=True):
                results[n] = answer
    return results
