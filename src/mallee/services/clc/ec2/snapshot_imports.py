"""ImportSnapshot, DescribeImportSnapshotTasks and CancelImportTask: a snapshot made from a disk
image (raw, or qcow2 as a Mallee extension) in Walrus — how an instance-store image becomes an
EBS-backed one (`mallee image to-ebs`), as on AWS with VM Import.

The CLC reads the object as the caller (like RegisterImage: only what the caller may read can be
imported), then records the task as a `pending` snapshot with its task id and source; the reconciler
has the zone's SC download it (a presigned URL), convert it and store it as chunks like any other
snapshot (volume_reconcile.py). The task's status follows the snapshot's: active, then completed
(or deleted when it failed or was cancelled, with the reason in StatusMessage).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.rpc import storage
from mallee.services.clc import peers
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import images, resources, tags
from mallee.services.clc.paging import page
from mallee.services.clc.volume_tables import Snapshot

FORMATS = {"RAW": "raw", "QCOW2": "qcow2"}
GIB = 1 << 30


def _source(container: dict[str, Any]) -> tuple[str, str]:
    """(bucket/key, format) of a DiskContainer."""
    fmt = str(container.get("Format") or "").upper()
    if fmt in ("VMDK", "VHD", "VHDX"):
        raise CloudError("UnsupportedOperation", f"Mallee imports RAW and QCOW2 disk images, not {fmt}.")
    if fmt not in FORMATS:
        raise CloudError("InvalidParameter", f"DiskContainer.Format must be RAW or QCOW2, not {fmt!r}.")
    bucket = (container.get("UserBucket") or {}).get("S3Bucket")
    key = (container.get("UserBucket") or {}).get("S3Key")
    url = container.get("Url") or ""
    if url.startswith("s3://") and not bucket:
        bucket, _, key = url[5:].partition("/")
    elif url:
        raise CloudError(
            "UnsupportedOperation", "Mallee imports from Walrus only (UserBucket or an s3:// Url)."
        )
    if not bucket or not key:
        raise CloudError("MissingParameter", "DiskContainer needs UserBucket.S3Bucket and S3Key.")
    return f"{bucket}/{key}", FORMATS[fmt]


def _status(snapshot: Snapshot) -> tuple[str, str]:
    if snapshot.state == "completed":
        return "completed", "completed"
    if snapshot.state == "error":
        return "deleted", snapshot.state_message or "the import failed"
    if snapshot.state == "deleting":
        return "deleting", "cancelled"
    return "active", "downloading/converting" if snapshot.progress else "pending"


def _view(snapshot: Snapshot, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    bucket, _, key = snapshot.import_source.partition("/")
    status, message = _status(snapshot)
    detail: dict[str, Any] = {
        "Description": snapshot.description,
        "DiskImageSize": float(snapshot.volume_size_gib * GIB),
        "Format": snapshot.import_format.upper(),
        "Progress": str(100 if status == "completed" else snapshot.progress),
        "Status": status,
        "StatusMessage": message,
        "UserBucket": {"S3Bucket": bucket, "S3Key": key},
        "Encrypted": False,
    }
    if snapshot.state == "completed":
        detail["SnapshotId"] = snapshot.id
    return {
        "Description": snapshot.description,
        "ImportTaskId": snapshot.import_task_id,
        "SnapshotTaskDetail": detail,
        "Tags": tag_list,
    }


@EC2.operation()
def import_snapshot(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("Encrypted") or p.get("KmsKeyId"):
        raise CloudError("UnsupportedOperation", "Mallee does not support encrypted snapshots yet.")
    resources.unsupported(p, "RoleName", "ClientData")
    location, fmt = _source(p.get("DiskContainer") or {})
    _head, size = images.read_object(ctx, location, 1)  # as the caller; before any query
    if size == 0:
        raise CloudError("InvalidParameter", f"{location} is empty: there is no disk image to import.")
    s = ctx.session
    zone = next(iter(peers.get().storage), None)  # the first registered: the CLC's own zone
    if zone is None:
        raise CloudError("InternalError", "The cloud has no storage controller to keep the snapshot.")
    description = str(p.get("Description") or (p.get("DiskContainer") or {}).get("Description") or "")
    snapshot = Snapshot(
        id=ids.resource_id("snap"),
        account_id=str(ctx.account_id),
        volume_id=storage.IMPORTED_VOLUME,
        volume_size_gib=-(-size // GIB),  # the SC reports the disk's own size once it has it
        zone=zone,
        source_snapshot_id=None,
        description=description[:255],
        state="pending",
        state_message="",
        progress=0,
        stored_bytes=0,
        started=clock.now(),
        client_token=p.get("ClientToken"),
        import_task_id=ids.resource_id("import-snap"),
        import_source=location,
        import_format=fmt,
    )
    s.add(snapshot)
    s.flush()
    specs = p.get("TagSpecifications")
    tags.from_specifications(
        s, snapshot.account_id, str(snapshot.import_task_id), "import-snapshot-task", specs
    )
    return _view(snapshot, tags.tags_of(s, [str(snapshot.import_task_id)])[str(snapshot.import_task_id)])


def _tasks(ctx: RequestContext, task_ids: list[str] | None) -> list[Snapshot]:
    q = select(Snapshot).where(Snapshot.account_id == ctx.account_id, Snapshot.import_task_id.is_not(None))
    found = list(ctx.session.scalars(q.order_by(Snapshot.started, Snapshot.id)))
    if task_ids:
        known = {str(t.import_task_id) for t in found}
        missing = [t for t in task_ids if t not in known]
        if missing:
            raise CloudError(
                "InvalidConversionTaskId.Malformed", f"The import task '{missing[0]}' does not exist."
            )
        found = [t for t in found if t.import_task_id in task_ids]
    return found


@EC2.operation()
def describe_import_snapshot_tasks(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    found = _tasks(ctx, p.get("ImportTaskIds"))
    tag_map = tags.tags_of(ctx.session, [str(t.import_task_id) for t in found])
    views = [_view(t, tag_map[str(t.import_task_id)]) for t in found]
    getters = {"task-state": lambda v: v["SnapshotTaskDetail"]["Status"]}
    views = tags.with_tag_filters(views, p.get("Filters"), getters)
    chunk, token = page(
        views, p.get("NextToken"), p.get("MaxResults"), default=len(views) or 1, code="InvalidNextToken"
    )
    out: dict[str, Any] = {"ImportSnapshotTasks": chunk}
    if token:
        out["NextToken"] = token
    return out


@EC2.operation()
def cancel_import_task(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    task_id = p.get("ImportTaskId")
    if not task_id:
        raise CloudError("MissingParameter", "The request must contain the parameter ImportTaskId")
    if not task_id.startswith("import-snap-"):
        raise CloudError("UnsupportedOperation", "Mallee has snapshot import tasks only (import-snap-…).")
    task = _tasks(ctx, [task_id])[0]
    before, _ = _status(task)
    if before != "active":
        raise CloudError(
            "IncorrectState", f"The import task '{task_id}' is {before}: it cannot be cancelled."
        )
    task.state, task.state_message = "deleting", "cancelled"  # the reconciler has the SC drop it
    return {"ImportTaskId": task_id, "PreviousState": before, "State": "deleting"}
