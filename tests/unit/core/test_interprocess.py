"""SharedCounter: one value for every process mapping the file; no bump lost to a race. FileLock:
exclusive between processes, and between two locks of one process."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from mallee.core.interprocess import FileLock, SharedCounter


def _bump(path: Path, times: int) -> None:
    counter = SharedCounter(path)
    for _ in range(times):
        counter.bump()
    counter.close()


def test_counters_on_one_file_see_each_others_bumps(tmp_path: Path) -> None:
    a, b = SharedCounter(tmp_path / "n"), SharedCounter(tmp_path / "n")
    assert a.value() == b.value() == 0
    a.bump()
    assert b.value() == 1
    b.bump()
    assert a.value() == 2
    a.close()
    b.close()
    again = SharedCounter(tmp_path / "n")  # the value outlives the processes that mapped it
    assert again.value() == 2
    again.close()


def test_concurrent_bumps_from_processes_all_count(tmp_path: Path) -> None:
    path = tmp_path / "n"
    workers = [multiprocessing.get_context("fork").Process(target=_bump, args=(path, 300)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    counter = SharedCounter(path)
    assert counter.value() == 900
    counter.close()


def test_two_file_locks_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    a, b = FileLock(tmp_path / "lock"), FileLock(tmp_path / "lock")
    assert a.acquire(blocking=False)
    assert not b.acquire(blocking=False)
    a.release()
    assert b.acquire(blocking=False)
    assert not a.acquire(blocking=False)
    b.release()
    a.close()
    b.close()


def _hold_briefly(path: Path, held: Any, release: Any) -> None:
    lock = FileLock(path)
    lock.acquire()
    held.set()
    release.wait(30)
    lock.release()


def test_a_file_lock_held_by_another_process_waits_for_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()
    other = context.Process(target=_hold_briefly, args=(tmp_path / "lock", held, release))
    other.start()
    assert held.wait(30)
    lock = FileLock(tmp_path / "lock")
    assert not lock.acquire(blocking=False)
    release.set()
    assert lock.acquire()  # blocks until the other lets go
    lock.release()
    lock.close()
    other.join(30)
    assert other.exitcode == 0
