"""rpc and Prometheus: failed calls are counted, and an rpc component serves its metrics page."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from mallee.core import metrics
from mallee.rpc import node
from mallee.rpc.component import component_app
from mallee.rpc.contract import Handlers
from mallee.rpc.transport import Client

KEY = b"k" * 32


def samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page.decode())
        for s in family.samples
    }


def test_a_call_to_a_component_that_does_not_answer_is_counted_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = ("mallee_rpc_client_errors_total", (("kind", "unreachable"), ("operation", "node.describe")))
    before = samples(metrics.render()).get(key, 0.0)
    with pytest.raises(OSError):
        Client(f"http://127.0.0.1:{port}", KEY, timeout=2).call(node.DESCRIBE, node.DescribeNode())
    assert samples(metrics.render())[key] == before + 1


def _get(app: Any, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_a_component_serves_its_counters_and_readings_on_metrics() -> None:
    def nodes() -> Iterable[Metric]:
        yield GaugeMetricFamily("mallee_node_up", "test", value=1)

    app = component_app(KEY, Handlers(), readings=(metrics.service_info("cc", "1.0"), nodes))
    status, headers, page = _get(app, "/metrics")
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    found = samples(page)
    assert found[("mallee_service_info", (("service", "cc"), ("version", "1.0")))] == 1
    assert found[("mallee_node_up", ())] == 1
    assert _get(app, "/metricsx")[0] == 404
