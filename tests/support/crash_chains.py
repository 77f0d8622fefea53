"""Crash tests' clouds: clouds whose services kill themselves at armed crash points
(core/crashpoints.py), and a module's crash points run in chains — each chain's points one after
the other on a cloud of its own, the chains at once — for each parametrized test to report its own
point's outcome.

A cloud's supervisor waits longer before each restart of a service that keeps crashing (0.5 s,
1 s, 2 s, … until it has run a minute), and most of a crash test is waiting for the cloud to
repair itself: a few clouds at once get through the same points in a fraction of the time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from support.cloud import Cloud, start_cloud, stop_cloud

P = TypeVar("P")
S = TypeVar("S")


def start_crashy(tmp_path_factory: pytest.TempPathFactory, name: str) -> Cloud:
    """A new cloud whose crash points are armed by touching files in MALLEE_CRASH_POINTS_DIR."""
    base = tmp_path_factory.mktemp(name)
    (base / "crash").mkdir()
    return start_cloud(base, {"MALLEE_CRASH_POINTS_DIR": str(base / "crash")})


def selected(request: pytest.FixtureRequest, name: str) -> set[Any]:
    """The values of parameter `name` of the requesting module's tests that this session runs."""
    found = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and name in params:
            found.add(params[name])
    return found


@contextmanager
def chains(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    points: Sequence[P],
    count: int,
    setup: Callable[[Cloud], S],
    crash: Callable[[S, P], None],
) -> Iterator[list[Future[None]]]:
    """Each point's outcome (in `points`' order), as `crash(state, point)` returns or raises: the
    points are dealt in turn to `count` chains, each of which runs its points one after the other
    on a cloud of its own, set up by `setup(cloud)` (which gives the `state`); the chains run at
    once. A chain's cloud stops when its points are done; leaving the block waits for every
    chain."""
    outcomes: list[Future[None]] = [Future() for _ in points]
    for outcome in outcomes:
        outcome.set_running_or_notify_cancel()
    dealt = [list(range(first, len(points), count)) for first in range(min(count, len(points)))]

    def run(chain: int) -> None:
        indexes = dealt[chain]
        try:
            cloud = start_crashy(tmp_path_factory, name)
        except BaseException as exc:
            for i in indexes:
                outcomes[i].set_exception(exc)
            return
        try:
            try:
                state = setup(cloud)
            except BaseException as exc:
                for i in indexes:
                    outcomes[i].set_exception(exc)
                return
            for i in indexes:
                try:
                    crash(state, points[i])
                except BaseException as exc:  # pytest.fail's too: the point's test raises it
                    outcomes[i].set_exception(exc)
                else:
                    outcomes[i].set_result(None)
        finally:
            stop_cloud(cloud)

    threads = [
        threading.Thread(target=run, args=(chain,), name=f"{name}-{chain}") for chain in range(len(dealt))
    ]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        for thread in threads:
            thread.join()


@contextmanager
def outcomes_by_point(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    kill_points: Sequence[Any],
    count: int,
    setup: Callable[[Cloud], S],
    crash: Callable[[S, Any], None],
) -> Iterator[dict[str, Future[None]]]:
    """A crash module's outcomes by point name: of its `kill_points` ((service, point, ...)
    tuples), those this session runs (`-k` is honoured), in `count` chains (see `chains`)."""
    wanted = selected(request, "point")
    points = [p for p in kill_points if p[1] in wanted]
    with chains(tmp_path_factory, name, points, count, setup, crash) as done:
        yield {p[1]: outcome for p, outcome in zip(points, done, strict=True)}
