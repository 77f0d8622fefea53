"""Walrus's reading for its metrics page: the buckets, objects and bytes it stores, counted when
Prometheus asks from the object table, as quotas count them (`quota.usage`)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from mallee.core.metrics import Reading
from mallee.db.session import Database
from mallee.services.walrus import quota


def stored(db: Database) -> Reading:
    """`mallee_walrus_buckets`, `_objects` (stored versions, not delete markers) and `_bytes`."""

    def read() -> Iterable[Metric]:
        with db.session() as s:
            used = quota.usage(s).values()
        for what, text in (
            ("buckets", "Buckets Walrus holds."),
            ("objects", "Object versions Walrus stores (delete markers not counted)."),
            ("bytes", "Bytes of the object versions Walrus stores."),
        ):
            yield GaugeMetricFamily(f"mallee_walrus_{what}", text, value=sum(u[what] for u in used))

    return read
