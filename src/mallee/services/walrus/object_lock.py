"""Object lock (WORM): a bucket's lock configuration and default retention, each version's
retention (GOVERNANCE or COMPLIANCE, until a date) and legal hold, and the rule that a locked
version cannot be deleted.

As on S3: a bucket takes object lock at creation (x-amz-bucket-object-lock-enabled) or later
through PutObjectLockConfiguration once versioning is Enabled, and its versioning can no longer be
suspended. Retention is extended freely; a COMPLIANCE retention is never shortened or loosened, a
GOVERNANCE one only with x-amz-bypass-governance-retention and s3:BypassGovernanceRetention. A
version under retention or a legal hold refuses DeleteObject/DeleteObjects by version id (delete
markers are still added) and lifecycle passes it by. Event holds (S3 Object Lock for events) are
not supported and refused by name.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus.apis import S3
from mallee.services.walrus.authorize import authorize_object
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.checks import malformed_xml
from mallee.services.walrus.runtime import layer
from mallee.services.walrus.tables import Bucket, ObjectVersion

MODES = ("GOVERNANCE", "COMPLIANCE")
_DAY = _dt.timedelta(days=1)
_LOCKED = "Access Denied because object protected by object lock."
_NO_LOCK = "Bucket is missing Object Lock Configuration"


def enabled(bucket: Bucket) -> bool:
    return bucket.object_lock is not None


def _require_lock(bucket: Bucket) -> None:
    if not enabled(bucket):
        raise CloudError("InvalidRequest", _NO_LOCK)


def locked(version: ObjectVersion, now: _dt.datetime | None = None) -> bool:
    """Whether the version is under a legal hold or a retention not yet over."""
    if version.legal_hold:
        return True
    return (
        bool(version.lock_mode)
        and version.lock_until is not None
        and clock.utc(version.lock_until) > (now or clock.now())
    )


def check_removable(version: ObjectVersion, bypass: bool) -> None:
    """Refuse to delete a locked version (`bypass`: the request may bypass GOVERNANCE retention)."""
    if not locked(version):
        return
    if version.legal_hold or version.lock_mode == "COMPLIANCE" or not bypass:
        raise CloudError("AccessDenied", _LOCKED, 403)


def may_bypass(
    ctx: RequestContext, p: Mapping[str, Any], bucket: str, key: str, version_id: str | None
) -> bool:
    """x-amz-bypass-governance-retention, sent by a caller with s3:BypassGovernanceRetention."""
    if not p.get("BypassGovernanceRetention"):
        return False
    try:
        authorize_object(ctx, "BypassGovernanceRetention", bucket, key, version_id)
    except CloudError:
        return False
    return True


def guard(
    ctx: RequestContext, p: Mapping[str, Any], bucket: str, key: str, version_id: str | None
) -> Callable[[ObjectVersion], None]:
    """What a delete of a version asks first (ObjectLayer.delete's `guard`)."""
    bypass = may_bypass(ctx, p, bucket, key, version_id) if version_id else False
    return functools.partial(check_removable, bypass=bypass)


def for_new_object(p: Mapping[str, Any], bucket: Bucket) -> dict[str, Any]:
    """The lock columns of a new version or upload (PutObject, CopyObject, CreateMultipartUpload):
    its headers' retention and legal hold, else the bucket's default retention."""
    mode, until, hold = (
        p.get("ObjectLockMode"),
        p.get("ObjectLockRetainUntilDate"),
        p.get("ObjectLockLegalHoldStatus"),
    )
    if mode is None and until is None and hold is None:
        return _default_retention(bucket)
    _require_lock(bucket)
    fields: dict[str, Any] = {"legal_hold": hold == "ON"}
    if hold not in (None, "ON", "OFF"):
        raise CloudError("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'")
    if (mode is None) != (until is None):
        raise CloudError(
            "InvalidArgument",
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
        )
    if mode is not None:
        fields.update(_retention(mode, until))
    else:
        fields.update(_default_retention(bucket))
    return fields


def _retention(mode: Any, until: Any) -> dict[str, Any]:
    if mode not in MODES:
        raise CloudError("InvalidArgument", "Unknown wormMode directive.")
    if not isinstance(until, _dt.datetime) or clock.utc(until) <= clock.now():
        raise CloudError("InvalidArgument", "The retain until date must be in the future!")
    return {"lock_mode": mode, "lock_until": clock.utc(until)}


def _default_retention(bucket: Bucket) -> dict[str, Any]:
    if bucket.object_lock is None:
        return {}
    default = ((json.loads(bucket.object_lock).get("Rule") or {}).get("DefaultRetention")) or {}
    if not default:
        return {}
    days = default.get("Days") or 365 * (default.get("Years") or 0)
    return {"lock_mode": default["Mode"], "lock_until": clock.now() + days * _DAY}


def view(version: ObjectVersion) -> dict[str, Any]:
    """The lock members of GetObject/HeadObject."""
    out: dict[str, Any] = {}
    if version.lock_mode:
        out["ObjectLockMode"] = version.lock_mode
        out["ObjectLockRetainUntilDate"] = version.lock_until
    if version.legal_hold:
        out["ObjectLockLegalHoldStatus"] = "ON"
    return out


def check_versioning_change(bucket: Bucket, status: str) -> None:
    if enabled(bucket) and status != "Enabled":
        raise CloudError(
            "InvalidBucketState",
            "An Object Lock configuration is present on this bucket, so the versioning state cannot be "
            "changed.",
            409,
        )


# -- the bucket's configuration ---------------------------------------------------------------------


def _checked_configuration(config: Any) -> dict[str, Any]:
    config = config or {}
    if config.get("ObjectLockEnabled") != "Enabled":
        raise malformed_xml()
    out: dict[str, Any] = {"ObjectLockEnabled": "Enabled"}
    rule = config.get("Rule")
    if rule is None:
        return out
    default = (rule or {}).get("DefaultRetention") or {}
    if default.get("DefaultEventHold") is not None:
        raise CloudError("NotImplemented", "Object Lock event holds are not supported by this server.", 501)
    days, years = default.get("Days"), default.get("Years")
    if default.get("Mode") not in MODES or (days is None) == (years is None):
        raise malformed_xml()
    period = days if days is not None else years
    if not isinstance(period, int) or period <= 0:
        raise CloudError("InvalidArgument", "Default retention period must be a positive integer value.")
    kept = {"Mode": default["Mode"], ("Days" if days is not None else "Years"): period}
    out["Rule"] = {"DefaultRetention": kept}
    return out


@S3.operation()
def put_object_lock_configuration(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    config = _checked_configuration(p.get("ObjectLockConfiguration"))
    if bucket.versioning != "Enabled":
        raise CloudError(
            "InvalidBucketState",
            "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
            409,
        )
    bucket.object_lock = json.dumps(config)
    return {}


@S3.operation()
def get_object_lock_configuration(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    if bucket.object_lock is None:
        raise CloudError(
            "ObjectLockConfigurationNotFoundError",
            "Object Lock configuration does not exist for this bucket",
            404,
        )
    return {"ObjectLockConfiguration": json.loads(bucket.object_lock)}


# -- a version's retention and legal hold ---------------------------------------------------------


@S3.operation()
def put_object_retention(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    _require_lock(bucket)
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    retention = p.get("Retention") or {}
    if retention.get("EventHold") is not None or retention.get("EventHoldDuration") is not None:
        raise CloudError("NotImplemented", "Object Lock event holds are not supported by this server.", 501)
    mode, until = retention.get("Mode"), retention.get("RetainUntilDate")
    new = (
        _retention(mode, until)
        if mode is not None or until is not None
        else {"lock_mode": "", "lock_until": None}
    )
    if locked(version) and version.lock_mode and _loosens(version, new):
        bypass = may_bypass(ctx, p, bucket.name, version.key, version.version_id)
        if version.lock_mode == "COMPLIANCE" or not bypass:
            raise CloudError("AccessDenied", _LOCKED, 403)
    version.lock_mode = str(new["lock_mode"])
    until = new["lock_until"]
    version.lock_until = until if isinstance(until, _dt.datetime) else None
    return {}


def _loosens(version: ObjectVersion, new: dict[str, Any]) -> bool:
    """Whether a new retention is weaker than the version's: shorter, removed, or COMPLIANCE made
    GOVERNANCE."""
    if not new["lock_mode"]:
        return True
    assert version.lock_until is not None
    if new["lock_until"] < clock.utc(version.lock_until):
        return True
    return version.lock_mode == "COMPLIANCE" and new["lock_mode"] != "COMPLIANCE"


@S3.operation()
def get_object_retention(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    _require_lock(bucket)
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    if not version.lock_mode:
        raise CloudError(
            "NoSuchObjectLockConfiguration",
            "The specified object does not have a ObjectLock configuration",
            404,
        )
    return {"Retention": {"Mode": version.lock_mode, "RetainUntilDate": version.lock_until}}


@S3.operation()
def put_object_legal_hold(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    _require_lock(bucket)
    status = (p.get("LegalHold") or {}).get("Status")
    if status not in ("ON", "OFF"):
        raise malformed_xml()
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    version.legal_hold = status == "ON"
    return {}


@S3.operation()
def get_object_legal_hold(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    _require_lock(bucket)
    version = layer().find(ctx.session, bucket.name, p["Key"], p.get("VersionId"))
    return {"LegalHold": {"Status": "ON" if version.legal_hold else "OFF"}}
