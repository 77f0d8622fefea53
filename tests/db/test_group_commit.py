"""The group committer (mallee.db.group_commit) on SQLite and PostgreSQL: jobs queued while the
writer is busy share one transaction, batched items share one call, a failing job fails alone,
`after_commit` runs before the callers return, and `close` runs what is queued. Items an event
loop defers are committed by that loop, together, when no other writer has the turn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mallee.core.interprocess import FileLock
from mallee.db.group_commit import GroupCommitter
from mallee.db.session import BUSY_TIMEOUT_MS, Database

METADATA = MetaData()
ROWS = Table("gc_rows", METADATA, Column("name", String(32), primary_key=True))


@pytest.fixture
def db(blank_database: Database) -> Database:
    METADATA.create_all(blank_database.engine)
    return blank_database


@pytest.fixture
def commits() -> list[int]:
    return []  # how many jobs each committed batch had (filled by after_commit)


def _committer(db: Database, commits: list[int], lock: Path | None = None) -> GroupCommitter:
    """A group committer whose after_commit notes in `commits` how many names each batch added."""

    def after_commit(s: Session) -> None:
        commits.append(len(s.info.get("names", [])))

    return GroupCommitter(db, after_commit=after_commit, lock=lock)


@pytest.fixture
def writer(db: Database, commits: list[int]) -> Iterator[GroupCommitter]:
    committer = _committer(db, commits)
    yield committer
    committer.close()


def _add(name: str) -> Callable[[Session], str]:
    def job(s: Session) -> str:
        s.connection().execute(insert(ROWS), {"name": name})
        s.info.setdefault("names", []).append(name)
        return f"added {name}"

    return job


def _names(db: Database) -> set[str]:
    with db.session() as s:
        return set(s.scalars(select(ROWS.c.name)))


def _hold(writer: GroupCommitter) -> tuple[threading.Event, Future[object]]:
    """Keep the writer busy until the event is set, so that what is queued meanwhile batches."""
    release, started = threading.Event(), threading.Event()

    def blocking(_s: Session) -> None:
        started.set()
        release.wait(10)

    held = writer.submit(blocking)
    assert started.wait(10)
    return release, held


def test_run_returns_the_jobs_result_once_committed(db: Database, writer: GroupCommitter) -> None:
    assert writer.run(_add("one")) == "added one"
    assert _names(db) == {"one"}


def test_jobs_queued_while_the_writer_is_busy_share_one_commit(
    db: Database, writer: GroupCommitter, commits: list[int]
) -> None:
    release, held = _hold(writer)
    futures = [writer.submit(_add(f"n{i}")) for i in range(10)]
    assert not any(f.done() for f in futures)  # nothing is acknowledged before its commit
    release.set()
    assert [f.result(10) for f in futures] == [f"added n{i}" for i in range(10)]
    held.result(10)
    assert commits == [0, 10]  # the blocking job's own batch, then one batch of ten
    assert _names(db) == {f"n{i}" for i in range(10)}


def test_a_failing_job_fails_alone(db: Database, writer: GroupCommitter) -> None:
    writer.run(_add("taken"))
    release, _held = _hold(writer)
    good = writer.submit(_add("a"))
    bad = writer.submit(_add("taken"))  # primary key already used
    good2 = writer.submit(_add("b"))
    release.set()
    assert good.result(10) == "added a"
    assert good2.result(10) == "added b"
    with pytest.raises(IntegrityError):
        bad.result(10)
    assert _names(db) == {"taken", "a", "b"}


def test_a_job_exception_reaches_its_caller(writer: GroupCommitter) -> None:
    def failing(_s: Session) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        writer.run(failing)


def test_after_commit_runs_before_the_caller_returns(db: Database) -> None:
    seen: list[set[str]] = []
    committer = GroupCommitter(db, after_commit=lambda _s: seen.append(_names(db)))
    try:
        committer.run(_add("x"))
        assert seen == [{"x"}]  # it ran after the commit (it saw the row), before run() returned
    finally:
        committer.close()


def test_close_runs_what_is_queued_then_refuses_more(db: Database, writer: GroupCommitter) -> None:
    release, _held = _hold(writer)
    queued = writer.submit(_add("late"))
    threading.Timer(0.2, release.set).start()
    writer.close()
    assert queued.result(0) == "added late"
    with pytest.raises(RuntimeError):
        writer.submit(_add("after"))
    assert _names(db) == {"late"}


def _add_all(calls: list[list[str]]) -> Callable[[Session, list[str]], list[str]]:
    def batched(s: Session, names: list[str]) -> list[str]:
        calls.append(list(names))
        s.connection().execute(insert(ROWS), [{"name": name} for name in names])
        s.info.setdefault("names", []).extend(names)
        return [f"added {name}" for name in names]

    return batched


def test_batched_items_queued_together_share_one_call(db: Database, writer: GroupCommitter) -> None:
    calls: list[list[str]] = []
    add_all = _add_all(calls)
    release, held = _hold(writer)
    futures = [writer.submit_batched(add_all, f"b{i}") for i in range(5)]
    plain = writer.submit(_add("plain"))
    futures.append(writer.submit_batched(add_all, "b5"))
    release.set()
    assert [f.result(10) for f in futures] == [f"added b{i}" for i in range(6)]
    assert plain.result(10) == "added plain"
    held.result(10)
    assert calls == [[f"b{i}" for i in range(6)]]  # one call, in queue order
    assert _names(db) == {f"b{i}" for i in range(6)} | {"plain"}


def test_a_failing_batched_item_fails_alone(db: Database, writer: GroupCommitter) -> None:
    calls: list[list[str]] = []
    add_all = _add_all(calls)
    writer.run(_add("taken"))
    release, _held = _hold(writer)
    good, bad = writer.submit_batched(add_all, "a"), writer.submit_batched(add_all, "taken")
    release.set()
    assert good.result(10) == "added a"
    with pytest.raises(IntegrityError):
        bad.result(10)
    assert calls == [["a", "taken"], ["a"], ["taken"]]  # the batch, then each item alone
    assert _names(db) == {"taken", "a"}


# -- deferred by an event loop -------------------------------------------------------------------


def test_items_a_loop_defers_in_one_pass_commit_together_on_the_loop(
    db: Database, commits: list[int]
) -> None:
    writer = _committer(db, commits)
    calls: list[list[str]] = []
    add_all = _add_all(calls)
    threads: set[str] = set()

    async def request(name: str) -> str:
        threads.add(threading.current_thread().name)
        result: str = await asyncio.wrap_future(writer.defer(add_all, name))
        return result

    async def main() -> list[str]:
        return list(await asyncio.gather(*(request(f"d{i}") for i in range(4))))

    assert asyncio.run(main()) == [f"added d{i}" for i in range(4)]
    assert calls == [["d0", "d1", "d2", "d3"]] and commits == [4]
    assert writer._thread is None  # no writer thread was needed
    assert _names(db) == {"d0", "d1", "d2", "d3"}
    writer.close()


def test_a_loops_commits_keep_one_connection_and_start_afresh(db: Database, commits: list[int]) -> None:
    """The loop's batches run on one held connection (no session and pool check-out each), and
    each transaction's `info` is its own (after_commit sees this batch's names only)."""
    writer = _committer(db, commits)
    add_all = _add_all([])
    checkouts: list[object] = []

    def checked_out(*args: object) -> None:
        checkouts.append(args)

    event.listen(db.engine, "checkout", checked_out)

    async def main() -> None:
        for names in (["a", "b"], ["c"], ["d"]):  # one pass each
            await asyncio.gather(*(asyncio.wrap_future(writer.defer(add_all, n)) for n in names))

    try:
        asyncio.run(main())
    finally:
        event.remove(db.engine, "checkout", checked_out)
    assert commits == [2, 1, 1]
    assert len(checkouts) == 1
    assert _names(db) == {"a", "b", "c", "d"}
    writer.close()


def test_a_loop_never_waits_for_another_writers_turn(
    db: Database, commits: list[int], tmp_path: Path
) -> None:
    """While another writer (another worker) holds the turn, the loop goes on serving, and what it
    defers meanwhile joins the batch it commits once the turn is free."""
    writer = _committer(db, commits, lock=tmp_path / "writer.lock")
    other = FileLock(tmp_path / "writer.lock")
    assert other.acquire()
    calls: list[list[str]] = []
    add_all = _add_all(calls)

    async def main() -> None:
        first = asyncio.wrap_future(writer.defer(add_all, "first"))
        ticks = 0
        for _ in range(20):  # the loop runs on: nothing committed, nothing blocked
            await asyncio.sleep(0.001)
            ticks += 1
        assert not first.done() and ticks == 20
        second = asyncio.wrap_future(writer.defer(add_all, "second"))
        await asyncio.sleep(0.005)
        other.release()
        assert await first == "added first" and await second == "added second"

    asyncio.run(main())
    assert calls == [["first", "second"]] and commits == [2]
    writer.close()
    other.close()


def test_a_loop_never_sleeps_in_sqlites_busy_handler(
    db: Database, commits: list[int], tmp_path: Path
) -> None:
    """A writer that takes no turn (a request's own session) holds SQLite's write lock: the loop
    goes on serving instead of sleeping in SQLite's busy handler, and commits once it is free."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock and busy handler")
    writer = _committer(db, commits, lock=tmp_path / "writer.lock")
    calls: list[list[str]] = []
    add_all = _add_all(calls)
    with db.engine.connect() as other:
        other.exec_driver_sql("BEGIN IMMEDIATE")

        async def main() -> None:
            first = asyncio.wrap_future(writer.defer(add_all, "first"))
            started = asyncio.get_running_loop().time()
            for _ in range(20):
                await asyncio.sleep(0.001)
            assert asyncio.get_running_loop().time() - started < 1  # no busy-handler sleeps
            assert not first.done()
            other.exec_driver_sql("COMMIT")
            assert await asyncio.wait_for(first, 10) == "added first"

        asyncio.run(main())
    assert calls == [["first"]] and commits == [1]
    writer.close()
    with db.engine.connect() as conn:  # the pooled connection waits again like any other
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS


def test_a_failing_deferred_item_fails_alone(db: Database, commits: list[int]) -> None:
    writer = _committer(db, commits)
    writer.run(_add("taken"))
    calls: list[list[str]] = []
    add_all = _add_all(calls)

    async def main() -> tuple[str, BaseException | None]:
        good = asyncio.wrap_future(writer.defer(add_all, "a"))
        bad = asyncio.wrap_future(writer.defer(add_all, "taken"))
        results = await asyncio.gather(good, bad, return_exceptions=True)
        return str(results[0]), results[1] if isinstance(results[1], BaseException) else None

    good, bad = asyncio.run(main())
    assert good == "added a" and isinstance(bad, IntegrityError)
    assert calls == [["a", "taken"], ["a"], ["taken"]]
    assert _names(db) == {"taken", "a"}
    writer.close()


def test_close_commits_what_a_stopped_loop_deferred(db: Database, commits: list[int], tmp_path: Path) -> None:
    writer = _committer(db, commits, lock=tmp_path / "writer.lock")
    other = FileLock(tmp_path / "writer.lock")
    assert other.acquire()
    futures: list[Future[str]] = []

    async def main() -> None:
        futures.append(writer.defer(_add_all([]), "late"))
        await asyncio.sleep(0.01)  # the loop stops while another writer has the turn

    asyncio.run(main())
    assert not futures[0].done()
    other.release()
    writer.close()
    assert futures[0].result(0) == "added late"
    assert _names(db) == {"late"}
    other.close()


def test_a_deferred_item_whose_caller_gave_up_still_commits_and_spares_the_others(
    db: Database, commits: list[int]
) -> None:
    """A request cancelled while it awaits its commit (its wrapped future cancels the item's):
    the batch commits, the others hear of it."""
    writer = _committer(db, commits)
    add_all = _add_all([])

    async def main() -> str:
        writer.defer(add_all, "gone").cancel()
        result: str = await asyncio.wait_for(asyncio.wrap_future(writer.defer(add_all, "kept")), 10)
        return result

    assert asyncio.run(main()) == "added kept"
    assert _names(db) == {"gone", "kept"}
    writer.close()
