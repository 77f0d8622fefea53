"""The instances a cloud still runs, as its database of record says: what `mallee up` reports when it
stops, and what `mallee down` ends (recording the wish first, as every terminate does)."""

from __future__ import annotations

from sqlalchemy import select

from mallee.db.session import Database
from mallee.services.clc import placement
from mallee.services.clc.tables import Instance

LIVE = ("pending", "running", "shutting-down")


def live(db: Database) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(Instance.id).where(Instance.state.in_(LIVE)).order_by(Instance.id)))


def want_terminated(db: Database, why: str) -> list[str]:
    """Record every live instance's desired state as terminated (the running cloud then ends them)."""
    with db.session() as s:
        found = list(s.scalars(select(Instance).where(Instance.state.in_(LIVE))))
        for i in found:
            placement.shutting_down(i, why)
        return [i.id for i in found]


def record_terminated(db: Database) -> list[str]:
    """Record what no node runs any more (the cloud is down and its VMs were destroyed) as terminated."""
    with db.session() as s:
        found = list(s.scalars(select(Instance).where(Instance.state.in_(LIVE))))
        for i in found:
            placement.terminated(i)
        return [i.id for i in found]
