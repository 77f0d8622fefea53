"""Reconciliation: every few seconds the CLC compares what it recorded for each instance with what
its zone's cluster controller reports, and moves toward the user's wish. Crashes anywhere are
repaired by the next pass: a terminate that did not reach the cluster is sent again; an instance
the cluster no longer knows is recorded as gone."""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

from sqlalchemy import delete, select

from mallee.core import clock
from mallee.db.session import Database
from mallee.rpc import cluster
from mallee.rpc.transport import Client, RpcError
from mallee.services.clc.tables import Instance, Tag

log = logging.getLogger(__name__)

LOST_AFTER = _dt.timedelta(seconds=60)  # a pending instance the cluster never reported is lost
KEEP_TERMINATED = _dt.timedelta(hours=1)  # as on AWS, terminated instances stay visible a while


def reconcile(db: Database, clusters: dict[str, Client]) -> None:
    for zone, client in clusters.items():
        try:
            report = cluster.call(client, cluster.DESCRIBE)
        except (OSError, RpcError) as exc:
            log.debug("zone %s did not answer: %s", zone, exc)
            continue
        with db.session() as s:
            _apply(s, zone, report, client)
    with db.session() as s:
        old = clock.now() - KEEP_TERMINATED
        gone = list(
            s.scalars(select(Instance.id).where(Instance.state == "terminated", Instance.terminated_at < old))
        )
        if gone:
            s.execute(delete(Tag).where(Tag.resource_id.in_(gone)))
            s.execute(delete(Instance).where(Instance.id.in_(gone)))


def _apply(s: Any, zone: str, report: dict[str, Any], client: Client) -> None:
    reported: dict[str, dict[str, Any]] = report.get("instances", {})
    now = clock.now()
    resend: list[str] = []
    for i in s.scalars(select(Instance).where(Instance.zone == zone, Instance.state != "terminated")):
        seen = reported.get(i.id)
        if seen is None:
            if i.desired == "terminated" or now - i.launch_time > LOST_AFTER:
                _terminated(
                    i, now, "" if i.desired == "terminated" else "Server.InternalError: the instance was lost"
                )
            continue
        state = str(seen.get("state", i.state))
        if i.desired == "terminated":
            if state in ("pending", "running"):
                resend.append(i.id)
            elif state == "terminated":
                _terminated(i, now, "")
            continue
        if state == "terminated":
            _terminated(i, now, str(seen.get("reason") or "Server.InternalError: the instance stopped"))
        elif state in ("pending", "running", "shutting-down") and state != i.state:
            i.state = state
            i.state_reason = "" if state == "running" else i.state_reason
    if resend:
        try:
            cluster.call(client, cluster.TERMINATE_INSTANCES, instance_ids=resend)
        except (OSError, RpcError) as exc:
            log.debug("terminate of %s not delivered yet: %s", resend, exc)


def _terminated(i: Instance, now: _dt.datetime, reason: str) -> None:
    i.state = "terminated"
    i.terminated_at = now
    if reason:
        i.state_reason = reason
