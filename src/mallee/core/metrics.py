"""What every service counts for Prometheus (`GET /metrics`), and the one way its page is made.

Counters live here (API requests and their latency, rpc client errors); what is better read when
scraped (instances per state, node capacity, objects stored) is a `Reading` the service hands to
`render`. A service process (`mallee serve`) counts into files of a directory the service's
processes on the host share (prometheus_client's multiprocess mode, `count_into`), so a scrape of
any of Walrus's workers shows the sum of all; a process not told a directory (an app a test made)
counts in its own memory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

# The text format every Prometheus server reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"

# A scrape-time reading: the metric families it yields are made when the page is asked for.
Reading = Callable[[], Iterable[Metric]]

# `_created` series exist only in one-process mode; without them the page looks the same whether
# a service runs one process or several.
disable_created_metrics()  # type: ignore[no-untyped-call]

_OWN = CollectorRegistry()  # this process's counters, when they are not counted into files
_directory: Path | None = None

# Latency buckets from a small GET answered on the event loop (~0.3 ms) to a slow launch.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

API_REQUESTS = Counter(
    "mallee_api_requests",
    "Public API requests answered, by API, action and HTTP status.",
    ("service", "action", "status"),
    registry=_OWN,
)
API_SECONDS = Histogram(
    "mallee_api_request_seconds",
    "Time the request chain took to answer, by API and action (a streamed answer's body is sent after it).",
    ("service", "action"),
    buckets=_SECONDS,
    registry=_OWN,
)
RPC_ERRORS = Counter(
    "mallee_rpc_client_errors",
    "Internal rpc calls that failed, by operation and kind (unreachable, timeout, or the code "
    "the callee answered).",
    ("operation", "kind"),
    registry=_OWN,
)


def count_into(directory: Path) -> None:
    """Count this process's metrics into files under `directory`, shared with the other processes
    of its service (and its earlier runs: a restarted process's counts add to them). Call before
    anything is counted: what was counted before stays in this process's memory."""
    global _directory
    directory.mkdir(parents=True, exist_ok=True)
    # prometheus_client chooses its multiprocess mode by this variable when it is imported, and its
    # file-backed values read it when they open their files: set it, and choose again.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _directory = directory


def directory(data_dir: Path, service: str) -> Path:
    """Where a service's processes on this host count."""
    return data_dir / "metrics" / service


def forget_counts(data_dir: Path) -> None:
    """Remove what every service of this host counted (`mallee up`, before it starts them)."""
    shutil.rmtree(data_dir / "metrics", ignore_errors=True)


def render(*readings: Reading) -> bytes:
    """The page: this service's counters (summed over its processes) and what `readings` read now."""
    return generate_latest(_Page(readings))


class _Page:
    def __init__(self, readings: tuple[Reading, ...]) -> None:
        self.readings = readings

    def collect(self) -> Iterable[Metric]:
        if _directory is not None:
            files = MultiProcessCollector(None, str(_directory))  # type: ignore[no-untyped-call]
            yield from files.collect()  # type: ignore[no-untyped-call]
        else:
            yield from _OWN.collect()
        for reading in self.readings:
            yield from reading()


def service_info(service: str, version: str) -> Reading:
    """`mallee_service_info{service, version} 1`: which service answers on this port."""

    def read() -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "mallee_service_info",
            "The service answering here, and its version.",
            labels=("service", "version"),
        )
        info.add_metric((service, version), 1)
        yield info

    return read


class ApiRequests:
    """Counts each answered request. Label children are kept by their values: prometheus_client's
    `labels()` takes a lock and checks its arguments on every call."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, service: str, action: str, status: int, started: float) -> None:
        """One answer: `started` is the `time.perf_counter()` of the request's start."""
        seconds = time.perf_counter() - started
        key = (service, action, status)
        children = self._children.get(key)
        if children is None:
            children = (
                API_REQUESTS.labels(service, action, str(status)),
                API_SECONDS.labels(service, action),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


api_requests = ApiRequests()


def rpc_error(operation: str, kind: str) -> None:
    RPC_ERRORS.labels(operation, kind).inc()
