"""The metrics page: what is counted, how it is rendered, and Walrus's workers summed on one page."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from mallee.core import metrics


def value(page: bytes, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a rendered page (0 when it is not there)."""
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_an_answer_is_counted_by_api_action_and_status_with_its_latency() -> None:
    labels = {"service": "ec2", "action": "DescribeRegions"}
    before = metrics.render()
    metrics.api_requests.observe("ec2", "DescribeRegions", 200, time.perf_counter() - 0.003)
    metrics.api_requests.observe("ec2", "DescribeRegions", 400, time.perf_counter())
    after = metrics.render()
    for status in ("200", "400"):
        counted = value(after, "mallee_api_requests_total", status=status, **labels)
        assert counted == value(before, "mallee_api_requests_total", status=status, **labels) + 1
    assert value(after, "mallee_api_request_seconds_count", **labels) == (
        value(before, "mallee_api_request_seconds_count", **labels) + 2
    )
    # ~3 ms: within the 5 ms bucket, not the 2.5 ms one (the fast one is in both).
    for bound, grew in (("0.0025", 1), ("0.005", 2)):
        assert value(after, "mallee_api_request_seconds_bucket", le=bound, **labels) == (
            value(before, "mallee_api_request_seconds_bucket", le=bound, **labels) + grew
        )


def test_rpc_errors_are_counted_by_operation_and_kind() -> None:
    labels = {"operation": "node.describe", "kind": "unreachable"}
    before = value(metrics.render(), "mallee_rpc_client_errors_total", **labels)
    metrics.rpc_error("node.describe", "unreachable")
    assert value(metrics.render(), "mallee_rpc_client_errors_total", **labels) == before + 1


def test_readings_are_read_each_time_the_page_is_rendered() -> None:
    reads: list[int] = []

    def instances() -> Iterable[Metric]:
        reads.append(1)
        family = GaugeMetricFamily("mallee_instances", "test", labels=("state",))
        family.add_metric(("running",), len(reads))
        yield family

    info = metrics.service_info("cc", "9.9")
    assert value(metrics.render(info, instances), "mallee_instances", state="running") == 1
    page = metrics.render(info, instances)
    assert value(page, "mallee_instances", state="running") == 2
    assert value(page, "mallee_service_info", service="cc", version="9.9") == 1


COUNT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mallee.core import metrics

    metrics.count_into(Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        metrics.api_requests.observe("s3", "PutObject", 200, time.perf_counter())
    metrics.rpc_error("cloud.resolve_key", "timeout")
    if sys.argv[3] == "render":
        sys.stdout.write(metrics.render().decode())
    """
)


def _worker(directory: Path, requests: int, render: bool = False) -> bytes:
    args = [sys.executable, "-c", COUNT, str(directory), str(requests), "render" if render else ""]
    return subprocess.run(args, check=True, capture_output=True).stdout


def test_processes_counting_into_one_directory_show_their_sum_on_one_page(tmp_path: Path) -> None:
    """As Walrus's workers do: any of them answers a scrape with all their counts."""
    directory = metrics.directory(tmp_path, "walrus")
    _worker(directory, 3)
    page = _worker(directory, 4, render=True)  # a later process: its own 4, and the first's 3
    labels = {"service": "s3", "action": "PutObject"}
    assert value(page, "mallee_api_requests_total", status="200", **labels) == 7
    assert value(page, "mallee_api_request_seconds_count", **labels) == 7
    assert value(page, "mallee_rpc_client_errors_total", operation="cloud.resolve_key", kind="timeout") == 2
    assert b"_created" not in page  # the same page whether counted in memory or in files


def test_forgetting_counts_empties_every_services_directory(tmp_path: Path) -> None:
    _worker(metrics.directory(tmp_path, "cc"), 1)
    assert list(metrics.directory(tmp_path, "cc").iterdir())
    metrics.forget_counts(tmp_path)
    page = _worker(metrics.directory(tmp_path, "cc"), 0, render=True)
    assert value(page, "mallee_api_requests_total", service="s3") == 0
    assert value(page, "mallee_rpc_client_errors_total", kind="timeout") == 1  # this run's own
