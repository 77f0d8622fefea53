"""SharedCounter: one value for every process mapping the file; no bump lost to a race."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from mallee.core.interprocess import SharedCounter


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
