"""The CLC's reading for its metrics page: how many instances are in each state, counted when
Prometheus asks (one grouped count in a short read of its own)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from mallee.core.metrics import Reading
from mallee.db.session import Database
from mallee.services.clc.ec2.instance_views import STATE_CODES
from mallee.services.clc.tables import Instance


def instances_by_state(db: Database) -> Reading:
    """`mallee_instances{state}` for every EC2 state (0 when none is in it; terminated instances
    are counted until they are purged, an hour after they ended)."""

    def read() -> Iterable[Metric]:
        with db.session() as s:
            rows = s.execute(select(Instance.state, func.count()).group_by(Instance.state))
            counted: dict[str, int] = {state: n for state, n in rows}
        family = GaugeMetricFamily(
            "mallee_instances", "Instances the CLC records, by state.", labels=("state",)
        )
        for state in STATE_CODES:
            family.add_metric((state,), counted.get(state, 0))
        yield family

    return read
