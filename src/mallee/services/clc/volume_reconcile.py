"""Reconciliation of volumes (volume_tables.py has the states): each pass compares the CLC's volume and
attachment records of a zone with what its Storage Controller holds and what its nodes report plugged
into their instances, decides in one transaction what to ask, asks (SC and cluster, no transaction
open), and records what the answers settled. Everything asked is idempotent, so a pass interrupted
anywhere — a CLC, SC, CC or NC killed — is repaired by the next one:

- a volume recorded `creating` is created on the SC until the SC reports it; then `available`;
- a volume recorded `deleting` (and attached nowhere) is deleted on the SC; once the SC confirmed
  it, the row goes (asked even when the SC does not report it: it may be half made there);
- a modification recorded `modifying` grows the volume on the SC until the SC reports the size;
- a snapshot recorded `pending` is taken (or copied) on the SC until the SC reports it; its progress,
  then `completed` or `error`, follow the SC's report; one recorded `deleting` is deleted on the SC,
  then its row goes;
- an attachment `attaching` is exported to the instance's node and plugged in until the node reports
  it (`attached`); a pending instance (an EBS-backed launch or start) is given the exports of the
  volumes it awaits, and boots with them. One `detaching`, or whose instance is gone, is unplugged
  until the node no longer reports it, then unexported; then the row goes and the volume is
  `available` (or `deleting`, when it was to be deleted on termination);
- a stopped instance's volumes stay attached but are unexported (no node may open them), and are
  exported to whichever node its next start lands on.

Nothing is decided for a zone whose SC did not answer, nor about an instance on a node that does not
answer, and no volume is unexported while a node may still have it open.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock, crashpoints
from mallee.db.session import Database
from mallee.rpc import cluster, node, storage
from mallee.rpc.contract import Empty, Message, Operation
from mallee.rpc.transport import Client, RpcError
from mallee.services.clc import peers
from mallee.services.clc.ec2 import tags
from mallee.services.clc.tables import Instance
from mallee.services.clc.volume_tables import Snapshot, Volume, VolumeAttachment

log = logging.getLogger(__name__)
IMPORT_URL_SECONDS = 3600
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass
class _Plan:
    """What one pass asks, once its transaction is over."""

    create: list[storage.VolumeSpec] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    resize: list[storage.ResizeVolume] = field(default_factory=list)
    attach: list[tuple[str, str, str]] = field(default_factory=list)  # (volume, instance, node)
    detach: list[node.DetachVolume] = field(default_factory=list)
    release: list[str] = field(default_factory=list)  # unplugged everywhere: unexport, then drop the row
    unexport: list[str] = field(default_factory=list)  # no node needs them now (the rows stay)
    snapshot: list[storage.SnapshotSpec | storage.CopySnapshot | storage.ImportSnapshot] = field(
        default_factory=list
    )
    delete_snapshot: list[str] = field(default_factory=list)


class VolumeReconciler:
    def __init__(
        self, db: Database, clusters: Mapping[str, Client], storage_controllers: Mapping[str, Client]
    ) -> None:
        self.db = db
        self.clusters = clusters
        self.storage = storage_controllers

    def run(self, reports: dict[str, cluster.ClusterReport]) -> None:
        for zone, sc in self.storage.items():
            report = reports.get(zone)
            if report is None or not report.ready:
                continue  # what runs is unknown: decide nothing about attachments
            try:
                held = sc.call(storage.DESCRIBE, Empty())
            except (OSError, RpcError) as exc:
                log.debug("the SC of %s did not answer: %s", zone, exc)
                continue
            with self.db.session() as s:
                plan = _decide(s, zone, held, report)
            self._act(zone, sc, plan)

    def _act(self, zone: str, sc: Client, plan: _Plan) -> None:
        for spec in plan.create:
            _ask(sc, storage.CREATE_VOLUME, spec)
        deleted = [v for v in plan.delete if _ask(sc, storage.DELETE_VOLUME, storage.VolumeRef(volume_id=v))]
        if deleted:
            with self.db.session() as s:
                _deleted(s, deleted)
        for resize in plan.resize:
            _ask(sc, storage.RESIZE_VOLUME, resize)
        for wanted in plan.snapshot:
            if isinstance(wanted, storage.CopySnapshot):
                _ask(sc, storage.COPY_SNAPSHOT, wanted)
            elif isinstance(wanted, storage.ImportSnapshot):
                _ask(sc, storage.IMPORT_SNAPSHOT, wanted)
            else:
                _ask(sc, storage.CREATE_SNAPSHOT, wanted)
        gone = [
            i
            for i in plan.delete_snapshot
            if _ask(sc, storage.DELETE_SNAPSHOT, storage.SnapshotRef(snapshot_id=i))
        ]
        if gone:
            with self.db.session() as s:
                _snapshots_deleted(s, gone)
        for volume_id in plan.unexport:
            _ask(sc, storage.UNEXPORT_VOLUME, storage.VolumeRef(volume_id=volume_id))
        cc = self.clusters.get(zone)
        for volume_id, instance_id, node_name in plan.attach:
            export = _ask(
                sc, storage.EXPORT_VOLUME, storage.ExportVolume(volume_id=volume_id, node=node_name)
            )
            crashpoints.reached("clc.volume.exported")
            if export is not None and cc is not None:
                _ask(cc, cluster.ATTACH_VOLUME, node.AttachVolume(instance_id=instance_id, export=export))
        for request in plan.detach:
            if cc is not None:
                _ask(cc, cluster.DETACH_VOLUME, request)
        released = [
            v for v in plan.release if _ask(sc, storage.UNEXPORT_VOLUME, storage.VolumeRef(volume_id=v))
        ]
        if released:
            crashpoints.reached("clc.volume.unexported")
            with self.db.session() as s:
                _released(s, released)


def _ask(client: Client, operation: Operation[Req, Resp], request: Req) -> Resp | None:
    """The answer, or None when the call failed (logged; the next pass asks again)."""
    try:
        return client.call(operation, request)
    except (OSError, RpcError) as exc:
        log.info("%s not done yet (asked again next pass): %s", operation.name, exc)
        return None


def _decide(s: Session, zone: str, held: storage.StorageReport, report: cluster.ClusterReport) -> _Plan:
    plan = _Plan()
    down = {n.name for n in report.nodes if n.state != "ENABLED"}
    volumes = {v.id: v for v in s.scalars(select(Volume).where(Volume.zone == zone))}
    attachments = {
        a.volume_id: a
        for a in s.scalars(select(VolumeAttachment).where(VolumeAttachment.volume_id.in_(list(volumes))))
    }
    instances = {
        i.id: i
        for i in s.scalars(
            select(Instance).where(Instance.id.in_([a.instance_id for a in attachments.values()]))
        )
    }
    for volume in volumes.values():
        stored = held.volumes.get(volume.id)
        if volume.state == "creating" and volume.id in held.failed:
            volume.state, volume.state_reason = "error", held.failed[volume.id][:255]
        elif volume.state == "creating":
            if stored is None:
                spec = storage.VolumeSpec(
                    volume_id=volume.id, size_gib=volume.size_gib, snapshot_id=volume.snapshot_id or ""
                )
                plan.create.append(spec)
            else:
                volume.state = "in-use" if volume.id in attachments else "available"
        elif volume.state == "deleting":
            if volume.id not in attachments:
                plan.delete.append(volume.id)
            continue
        elif volume.state == "in-use" and volume.id not in attachments:
            volume.state = "available"  # its attachment went with its instance's row
        if volume.modification_state == "modifying" and stored is not None:
            _follow_modification(volume, stored, plan)
    for attachment in attachments.values():
        _follow_attachment(attachment, instances.get(attachment.instance_id), report, down, held, plan)
    for snapshot in s.scalars(select(Snapshot).where(Snapshot.zone == zone, Snapshot.state != "completed")):
        _follow_snapshot(snapshot, held.snapshots.get(snapshot.id), plan)
    return plan


def _follow_snapshot(snapshot: Snapshot, stored: storage.StoredSnapshot | None, plan: _Plan) -> None:
    if snapshot.state == "deleting":
        plan.delete_snapshot.append(snapshot.id)
    elif snapshot.state == "pending" and stored is None:
        if snapshot.import_task_id:  # ImportSnapshot: the SC fetches the object (URL good for an hour)
            bucket, _, key = snapshot.import_source.partition("/")
            url = peers.get().presign(bucket, key, IMPORT_URL_SECONDS)
            plan.snapshot.append(
                storage.ImportSnapshot(snapshot_id=snapshot.id, url=url, disk_format=snapshot.import_format)
            )
        elif snapshot.source_snapshot_id:
            plan.snapshot.append(
                storage.CopySnapshot(snapshot_id=snapshot.id, source_snapshot_id=snapshot.source_snapshot_id)
            )
        else:
            plan.snapshot.append(storage.SnapshotSpec(snapshot_id=snapshot.id, volume_id=snapshot.volume_id))
    elif snapshot.state == "pending" and stored is not None:
        snapshot.progress, snapshot.stored_bytes = stored.progress, stored.stored_bytes
        if stored.state in ("completed", "error"):
            snapshot.state, snapshot.state_message = stored.state, stored.reason[:255]
            snapshot.progress = 100 if stored.state == "completed" else snapshot.progress
            if snapshot.import_task_id and stored.state == "completed":
                snapshot.volume_size_gib = max(1, stored.size_gib)  # the disk's size, not the file's


def _follow_modification(volume: Volume, stored: storage.StoredVolume, plan: _Plan) -> None:
    target = volume.target_size_gib or volume.size_gib
    if stored.size_gib < target:
        plan.resize.append(storage.ResizeVolume(volume_id=volume.id, size_gib=target))
        return
    volume.size_gib = target
    volume.volume_type = volume.target_volume_type or volume.volume_type
    volume.iops = volume.target_iops if volume.target_iops is not None else volume.iops
    volume.throughput = (
        volume.target_throughput if volume.target_throughput is not None else volume.throughput
    )
    volume.modification_state, volume.modification_ended = "completed", clock.now()


def _follow_attachment(
    attachment: VolumeAttachment,
    instance: Instance | None,
    report: cluster.ClusterReport,
    down: set[str],
    held: storage.StorageReport,
    plan: _Plan,
) -> None:
    seen = report.instances.get(attachment.instance_id)
    if seen is not None and seen.node in down:
        return  # its node may come back with the volume still plugged in
    volume_id = attachment.volume_id
    plugged = seen is not None and volume_id in seen.volumes
    stored = held.volumes.get(volume_id)
    if (
        instance is None
        or instance.state == "terminated"
        or (seen is not None and seen.state == "terminated")
        or attachment.state == "detaching"
    ):
        if plugged:
            plan.detach.append(
                node.DetachVolume(
                    instance_id=attachment.instance_id, volume_id=volume_id, force=attachment.force
                )
            )
        else:
            plan.release.append(volume_id)
        return
    if instance.state == "stopped" and (seen is None or seen.state == "stopped"):
        attachment.state = "attached"  # plugged in at its next start
        if stored is not None and stored.node:
            plan.unexport.append(volume_id)
        return
    if plugged:
        assert seen is not None
        attachment.state, attachment.target = "attached", seen.volumes[volume_id]
        return
    if seen is None or stored is None:
        return  # not on a node yet (a launch being placed), or the SC is still making the volume
    if seen.state == "running" and attachment.state == "attached":
        attachment.state = "attaching"  # the node lost it (a rebuilt domain): plug it in again
    if (seen.state == "running" and attachment.state == "attaching") or (
        seen.state == "pending" and volume_id in seen.awaiting
    ):
        if stored.node and stored.node != seen.node:
            plan.unexport.append(volume_id)  # still exported to the node it ran on before a stop
        else:
            plan.attach.append((volume_id, attachment.instance_id, seen.node))


def _snapshots_deleted(s: Session, snapshot_ids: list[str]) -> None:
    for snapshot_id in snapshot_ids:
        snapshot = s.get(Snapshot, snapshot_id)
        if snapshot is not None and snapshot.state == "deleting":
            tags.remove_all(s, snapshot_id)
            s.delete(snapshot)


def _deleted(s: Session, volume_ids: list[str]) -> None:
    """The SC deleted them: their rows and tags go (unless something changed them meanwhile)."""
    for volume_id in volume_ids:
        volume = s.get(Volume, volume_id)
        if volume is not None and volume.state == "deleting" and s.get(VolumeAttachment, volume_id) is None:
            tags.remove_all(s, volume_id)
            s.delete(volume)


def _released(s: Session, volume_ids: list[str]) -> None:
    """Unplugged and unexported: the attachments go; each volume is available again, or deleted
    when it was to go with its instance."""
    for volume_id in volume_ids:
        attachment = s.get(VolumeAttachment, volume_id)
        volume = s.get(Volume, volume_id)
        if attachment is None or volume is None:
            continue
        instance = s.get(Instance, attachment.instance_id)
        with_instance = instance is None or instance.state == "terminated"
        s.delete(attachment)
        if attachment.delete_on_termination and with_instance and attachment.state != "detaching":
            volume.state = "deleting"
        elif volume.state == "in-use":
            volume.state = "available"
