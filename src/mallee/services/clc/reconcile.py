"""Reconciliation, in both directions: the CLC compares what it recorded for each instance with what
its zone's cluster controller reports, and moves one toward the other. It runs every few seconds,
and at once when a cluster pushes a change. A crash anywhere is repaired by the next pass:

- a launch that never reached a node (the CLC, CC or NC died on the way) is sent again, to the same
  node when one was recorded, until `LOST_AFTER`; then the instance is terminated
  (`Server.InternalError`), or at once when the zone has no room (`Server.InsufficientInstanceCapacity`);
- an instance that ran but no node reports any more is terminated after `MISSING_GRACE` (an
  EBS-backed one is stopped: its volumes are kept);
- a terminate that did not reach the cluster is sent again until a node confirms it; likewise a
  stop, and a stopped instance is recorded `stopped` once no node has it. An EBS-backed instance
  that shut itself down is stopped, or terminated when its shutdown behaviour says so; one whose
  launch could not be placed is stopped rather than terminated (its volumes are kept);
- CreateImage's builds move on (ebs_images.py: stop, snapshot, start again), and so do node
  evacuations (evacuation.py: stopped, then started again on another node);
- a VM the CLC knows nothing of, or recorded as terminated (an orphan), is destroyed after
  `ORPHAN_GRACE`, and the action is logged.

Nothing is decided from a report of a cluster that has not yet heard from all its nodes, nor about
instances on a node that does not answer (they may come back). Rpc is made only between database
transactions."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.db.session import Database
from mallee.rpc import cluster
from mallee.rpc.contract import Empty
from mallee.rpc.transport import Client, RpcError
from mallee.services.clc import evacuation, network_state, placement
from mallee.services.clc.ec2 import ebs_images
from mallee.services.clc.tables import Instance, Tag
from mallee.services.clc.volume_reconcile import VolumeReconciler

log = logging.getLogger(__name__)

PLACE_AFTER = _dt.timedelta(seconds=3)  # RunInstances asks itself first; the reconciler after this
LOST_AFTER = _dt.timedelta(seconds=60)  # a launch no node took by then is given up
MISSING_GRACE = 10.0  # seconds a running instance may be missing from reports before it is lost
ORPHAN_GRACE = 10.0  # seconds a VM unknown to the CLC runs before it is destroyed
KEEP_TERMINATED = _dt.timedelta(hours=1)  # as on AWS, terminated instances stay visible a while


@dataclass
class _Actions:
    """What one pass decided to ask the cluster, once its transaction is over."""

    place: list[tuple[list[str], placement.Request]] = field(default_factory=list)
    terminate: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    # Some node does not answer: a zone that refuses a launch now may have room once it is back.
    nodes_down: bool = False


class Reconciler:
    def __init__(
        self, db: Database, clusters: Mapping[str, Client], storage: Mapping[str, Client] | None = None
    ) -> None:
        self.db = db
        self.clusters = clusters
        self.network = network_state.Publisher(db, clusters)
        self.volumes = VolumeReconciler(db, clusters, storage or {})
        # First seen missing / first seen as an orphan (monotonic seconds); kept in memory: a
        # restarted CLC only starts the grace periods again.
        self.missing_since: dict[str, float] = {}
        self.orphan_since: dict[str, float] = {}

    def run(self) -> None:
        reports: dict[str, cluster.ClusterReport] = {}
        for zone, client in self.clusters.items():
            try:
                report = client.call(cluster.DESCRIBE, Empty())
            except (OSError, RpcError) as exc:
                log.debug("zone %s did not answer: %s", zone, exc)
                continue
            reports[zone] = report
            with self.db.session() as s:
                actions = self._apply(s, zone, report)
            self._act(client, actions)
        # After the instance states moved: each node's network follows its instances, and volumes
        # follow their instances and the zones' storage controllers.
        self.network.publish(reports)
        self.volumes.run(reports)
        with self.db.session() as s:
            ebs_images.advance_builds(s)  # recorded only: the next pass stops or places instances
        with self.db.session() as s:
            evacuation.advance(s)  # likewise
        with self.db.session() as s:
            _forget_old(s)

    def _apply(self, s: Session, zone: str, report: cluster.ClusterReport) -> _Actions:
        actions = _Actions()
        if not report.ready:
            return actions
        now, tick = clock.now(), time.monotonic()
        down = {n.name for n in report.nodes if n.state != "ENABLED"}
        actions.nodes_down = bool(down)
        records = {i.id: i for i in s.scalars(select(Instance).where(Instance.zone == zone))}
        unplaced: dict[str, list[Instance]] = defaultdict(list)
        for i in records.values():
            if i.state == "terminated":
                continue
            seen = report.instances.get(i.id)
            if seen is not None and seen.state in ("stopping", "stopped") and i.state == "pending":
                seen = None  # the last stop's report; this is a start since, to be placed anew
            if seen is not None:
                self.missing_since.pop(i.id, None)
                self._follow(i, seen, actions)
            elif i.node in down:
                continue  # its node may come back
            elif i.desired == "terminated":
                placement.terminated(i)
            elif i.state == "stopped":
                continue
            elif i.desired == "stopped":
                placement.stopped(i)  # its node stopped it and forgot it
            elif i.state == "pending":
                if now - i.launch_time > LOST_AFTER:
                    placement.given_up(i, "Server.InternalError: the launch did not reach a node")
                elif now - i.launch_time > PLACE_AFTER or i.evacuating_from:  # no handler asks for those
                    unplaced[i.reservation_id].append(i)
            elif tick - self.missing_since.setdefault(i.id, tick) > MISSING_GRACE:
                state = placement.given_up(i, "Server.InternalError: the instance was lost")
                log.warning("%s is no longer on any node: recorded it as %s", i.id, state)
                self.missing_since.pop(i.id, None)
        for reservation_id, group in unplaced.items():
            alive = [
                r
                for r in records.values()
                if r.reservation_id == reservation_id and r.id in report.instances and r.state != "terminated"
            ]
            min_count = max(0, min(group[0].min_count - len(alive), len(group)))
            actions.place.append(([r.id for r in group], placement.Request.of(group, min_count)))
        self._orphans(zone, report, records, tick, actions)
        return actions

    def _follow(self, i: Instance, seen: cluster.ClusterInstance, actions: _Actions) -> None:
        """Move a record the cluster reports toward the report (or the report toward the wish)."""
        if seen.state == "terminated":
            why = (
                ""
                if i.desired == "terminated"
                else seen.reason or "Server.InternalError: the instance stopped"
            )
            placement.terminated(i, why)
        elif i.desired == "terminated":
            if seen.state in ("pending", "running", "stopping", "stopped"):
                actions.terminate.append(i.id)
        elif seen.state in ("stopping", "stopped"):
            self._stopped_by_node(i, seen, actions)
        elif i.desired == "stopped":
            actions.stop.append(i.id)  # the stop did not reach the node yet
        else:
            i.node = seen.node
            if seen.state != i.state:
                i.state = seen.state
                i.state_reason = "" if seen.state == "running" else i.state_reason

    def _stopped_by_node(self, i: Instance, seen: cluster.ClusterInstance, actions: _Actions) -> None:
        """The node stops it: as asked, or the guest shut itself down (then its shutdown behaviour
        decides between stopped and terminated)."""
        if i.desired == "running" and i.shutdown_behavior == "terminate":
            placement.shutting_down(i, "Instance initiated shutdown")
            i.state_reason = seen.reason or i.state_reason
            actions.terminate.append(i.id)
            return
        if i.desired == "running":
            placement.stopping(i, "Instance initiated shutdown")
            i.state_reason = seen.reason or i.state_reason
        if seen.state == "stopped":
            placement.stopped(i)
        else:
            i.state = "stopping"

    def _orphans(
        self,
        zone: str,
        report: cluster.ClusterReport,
        records: dict[str, Instance],
        tick: float,
        actions: _Actions,
    ) -> None:
        for instance_id, seen in report.instances.items():
            known = records.get(instance_id)
            if seen.state == "terminated" or (known is not None and known.state != "terminated"):
                self.orphan_since.pop(instance_id, None)
                continue
            if tick - self.orphan_since.setdefault(instance_id, tick) > ORPHAN_GRACE:
                log.warning(
                    "destroying orphan %s on %s (zone %s): the CLC has no live instance of that id",
                    instance_id,
                    seen.node,
                    zone,
                )
                actions.terminate.append(instance_id)
        for instance_id in [i for i in self.orphan_since if i not in report.instances]:
            del self.orphan_since[instance_id]

    def _act(self, client: Client, actions: _Actions) -> None:
        if actions.stop:
            try:
                client.call(cluster.STOP_INSTANCES, cluster.StopInstances(instance_ids=actions.stop))
            except (OSError, RpcError) as exc:
                log.debug("stop of %s not delivered yet: %s", actions.stop, exc)
        if actions.terminate:
            try:
                client.call(cluster.TERMINATE_INSTANCES, cluster.InstanceIds(instance_ids=actions.terminate))
            except (OSError, RpcError) as exc:
                log.debug("terminate of %s not delivered yet: %s", actions.terminate, exc)
        for instance_ids, request in actions.place:
            log.info("sending the launch of %s again", ", ".join(instance_ids))
            outcome = placement.ask(client, request)
            if outcome.refused and actions.nodes_down:
                continue  # asked again next pass, until LOST_AFTER
            with self.db.session() as s:
                records = [r for r in (s.get(Instance, i) for i in instance_ids) if r is not None]
                placement.record(s, [r for r in records if r.state == "pending"], outcome, answered_now=False)


def _forget_old(s: Session) -> None:
    old = clock.now() - KEEP_TERMINATED
    gone = list(
        s.scalars(select(Instance.id).where(Instance.state == "terminated", Instance.terminated_at < old))
    )
    if gone:
        s.execute(delete(Tag).where(Tag.resource_id.in_(gone)))
        s.execute(delete(Instance).where(Instance.id.in_(gone)))
