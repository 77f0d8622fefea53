"""The registry of running components: each service heartbeats to the CLC, which derives its state
(ENABLED while heartbeats arrive, NOTREADY when they stop) as euca-describe-services shows it."""

from __future__ import annotations

import datetime as _dt
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.rpc.cloud import ServiceDescription
from mallee.services.clc.tables import Cluster, ServiceRecord


def record(s: Session, beat: ServiceDescription) -> None:
    row = s.get(ServiceRecord, beat.name)
    if row is None:
        row = ServiceRecord(name=beat.name)
        s.add(row)
    row.type, row.partition, row.host, row.port = beat.type, beat.partition, beat.host, beat.port
    row.version, row.detail = beat.version, json.dumps(beat.detail)
    row.state = "ENABLED"
    row.last_seen = clock.now()


STALE_AFTER = 15.0  # seconds without a heartbeat before a service counts as NOTREADY


def state_of(row: ServiceRecord, stale_after: float = STALE_AFTER) -> str:
    if row.last_seen is None:
        return "NOTREADY"
    if clock.now() - row.last_seen > _dt.timedelta(seconds=stale_after):
        return "NOTREADY"
    return row.state


def all_services(s: Session) -> list[ServiceRecord]:
    return list(s.scalars(select(ServiceRecord).order_by(ServiceRecord.type, ServiceRecord.name)))


def cluster_service(s: Session, cluster: Cluster) -> ServiceRecord | None:
    return s.scalar(
        select(ServiceRecord).where(ServiceRecord.type == "cc", ServiceRecord.partition == cluster.zone)
    )
