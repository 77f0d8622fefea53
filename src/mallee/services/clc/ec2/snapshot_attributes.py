"""Who may see an EBS snapshot and make volumes from it: its owner, and whom its createVolumePermission
names (an account, or the group `all`); and the calls that read and change that permission:
DescribeSnapshotAttribute, ModifySnapshotAttribute and ResetSnapshotAttribute.

Another account's snapshot the caller has no permission for does not exist for it
(InvalidSnapshot.NotFound); one it may restore is still only the owner's to change or delete
(AuthFailure, as images.py answers for a shared image). A snapshot being deleted is gone at once.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import resources
from mallee.services.clc.volume_tables import Snapshot, SnapshotPermission

MALFORMED = "InvalidSnapshotID.Malformed"
NOT_FOUND = "InvalidSnapshot.NotFound"
ALL = "all"  # SnapshotPermission.account_id of the group `all`
ACCOUNT = re.compile(r"^\d{12}$")
_ATTRIBUTES = ("createVolumePermission", "productCodes")


# -- visibility ------------------------------------------------------------------------------------


def check_id(snapshot_id: str) -> None:
    resources.check_id(snapshot_id, "snap", MALFORMED)


def not_found(snapshot_ids: list[str]) -> CloudError:
    return CloudError(NOT_FOUND, f"The snapshot '{', '.join(snapshot_ids)}' does not exist.")


def restorable_by(account_id: str) -> Any:
    """The clause of the snapshots `account_id` may make volumes from (and so see): its own, those
    shared with it, and the public ones."""
    granted = select(SnapshotPermission.snapshot_id).where(
        SnapshotPermission.account_id.in_([account_id, ALL])
    )
    return or_(Snapshot.account_id == account_id, Snapshot.id.in_(granted))


def public() -> Any:
    granted = select(SnapshotPermission.snapshot_id).where(SnapshotPermission.account_id == ALL)
    return Snapshot.id.in_(granted)


def live() -> Any:
    """Rows in state `deleting` are gone for every caller (the reconciler removes them later)."""
    return Snapshot.state != "deleting"


def visible_snapshot(s: Session, account_id: str, snapshot_id: str) -> Snapshot:
    """A snapshot the account may see, or InvalidSnapshotID.Malformed / InvalidSnapshot.NotFound."""
    check_id(snapshot_id)
    found = s.scalar(select(Snapshot).where(Snapshot.id == snapshot_id, live(), restorable_by(account_id)))
    if found is None:
        raise not_found([snapshot_id])
    return found


def owned_snapshot(ctx: RequestContext, snapshot_id: str) -> Snapshot:
    """The caller's own snapshot: one it may only restore is AuthFailure."""
    snapshot = visible_snapshot(ctx.session, str(ctx.account_id), snapshot_id)
    if snapshot.account_id != ctx.account_id:
        raise CloudError("AuthFailure", f"Not authorized for snapshot {snapshot_id}.")
    return snapshot


def restorable(s: Session, account_id: str, snapshot_id: str) -> Snapshot:
    """A snapshot the account may make a volume from (or copy) now: visible and completed."""
    snapshot = visible_snapshot(s, account_id, snapshot_id)
    if snapshot.state != "completed":
        raise CloudError("IncorrectState", f"Snapshot is in invalid state - {snapshot.state}")
    return snapshot


def forget_permissions(s: Session, snapshot_id: str) -> None:
    s.execute(delete(SnapshotPermission).where(SnapshotPermission.snapshot_id == snapshot_id))


# -- the attribute calls ---------------------------------------------------------------------------


def _attribute(name: str | None) -> str:
    if name not in _ATTRIBUTES:
        raise CloudError("InvalidParameterValue", f"Value ({name}) for parameter attribute is invalid.")
    return name


def _permissions(s: Session, snapshot_id: str) -> list[dict[str, str]]:
    rows = list(
        s.scalars(
            select(SnapshotPermission.account_id)
            .where(SnapshotPermission.snapshot_id == snapshot_id)
            .order_by(SnapshotPermission.account_id)
        )
    )
    return [{"Group": ALL} for r in rows if r == ALL] + [{"UserId": r} for r in rows if r != ALL]


def _grant(s: Session, snapshot: Snapshot, permission: dict[str, Any], add: bool) -> None:
    group, user = permission.get("Group"), permission.get("UserId")
    if group is None and user is None:
        raise CloudError("MissingParameter", "Each createVolumePermission names a UserId or a Group.")
    if group is not None and group != ALL:
        raise CloudError("InvalidParameterValue", f"Value ({group}) for parameter group is invalid.")
    if user is not None and not ACCOUNT.match(str(user)):
        raise CloudError("InvalidUserID.Malformed", f"Invalid user id: '{user}'")
    for who in [w for w in (group, user) if w is not None]:
        existing = s.get(SnapshotPermission, (snapshot.id, who))
        if add and existing is None and who != snapshot.account_id:  # the owner needs no grant
            s.add(SnapshotPermission(snapshot_id=snapshot.id, account_id=who))
            s.flush()
        elif not add and existing is not None:
            s.delete(existing)
            s.flush()


@EC2.operation()
def describe_snapshot_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    attribute = _attribute(p.get("Attribute"))
    snapshot = owned_snapshot(ctx, p["SnapshotId"])
    if attribute == "productCodes":
        return {"SnapshotId": snapshot.id, "ProductCodes": []}
    return {"SnapshotId": snapshot.id, "CreateVolumePermissions": _permissions(ctx.session, snapshot.id)}


@EC2.operation()
def modify_snapshot_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("Attribute") is not None and _attribute(p["Attribute"]) == "productCodes":
        raise CloudError("InvalidParameterValue", "The productCodes of a snapshot cannot be changed.")
    snapshot = owned_snapshot(ctx, p["SnapshotId"])
    permission = p.get("CreateVolumePermission") or {}
    changes: list[tuple[dict[str, Any], bool]] = [(g, True) for g in permission.get("Add") or []]
    changes += [(g, False) for g in permission.get("Remove") or []]
    operation = p.get("OperationType")
    if operation or p.get("UserIds") or p.get("GroupNames"):  # the older flat form
        if operation not in ("add", "remove"):
            raise CloudError("InvalidParameterValue", "OperationType must be add or remove.")
        add = operation == "add"
        changes += [({"UserId": u}, add) for u in p.get("UserIds") or []]
        changes += [({"Group": g}, add) for g in p.get("GroupNames") or []]
    if not changes:
        raise CloudError(
            "MissingParameter",
            "Say what to change: CreateVolumePermission, or OperationType with UserIds or GroupNames.",
        )
    for grant, add in changes:
        _grant(ctx.session, snapshot, grant, add)
    return {}


@EC2.operation()
def reset_snapshot_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    # Only createVolumePermission can be reset (API_ResetSnapshotAttribute).
    if _attribute(p.get("Attribute")) != "createVolumePermission":
        raise CloudError("InvalidParameterValue", "Only createVolumePermission can be reset.")
    snapshot = owned_snapshot(ctx, p["SnapshotId"])
    forget_permissions(ctx.session, snapshot.id)
    return {}
