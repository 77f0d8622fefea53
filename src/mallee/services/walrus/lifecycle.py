"""Bucket lifecycle: Put/Get/DeleteBucketLifecycleConfiguration, and `expire`, the background job
that applies the rules (run periodically by `app`, see `expire_and_log`).

Supported actions: Expiration (Days, Date, ExpiredObjectDeleteMarker), NoncurrentVersionExpiration
(NoncurrentDays, NewerNoncurrentVersions) and AbortIncompleteMultipartUpload; filters by Prefix,
Tag, object size, and their And. Transitions are refused: Walrus has one storage class.

As on S3, an object expires at the first midnight UTC after its creation time plus Days; on a
versioned bucket expiring the current version adds a delete marker instead of deleting it, and
a version becomes noncurrent when the next newer one is written.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus import garbage, object_lock
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.checks import malformed_xml
from mallee.services.walrus.object_layer import ObjectLayer
from mallee.services.walrus.tables import Bucket, ObjectVersion, Upload

log = logging.getLogger(__name__)

MAX_RULES = 1000
_DAY = _dt.timedelta(days=1)


def _invalid(message: str) -> CloudError:
    return CloudError("InvalidArgument", message)


def _positive(value: Any, message: str) -> int:
    if not isinstance(value, int) or value <= 0:
        raise _invalid(message)
    return value


def _check_filter(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule's filter in one form: {"Prefix", "Tags", "ObjectSizeGreaterThan", "ObjectSizeLessThan"}."""
    if "Filter" in rule and "Prefix" in rule:
        raise malformed_xml()
    if "Filter" not in rule:
        if "Prefix" not in rule:
            raise malformed_xml()
        return {"Prefix": rule["Prefix"] or "", "Tags": []}
    found = rule["Filter"] or {}
    if len(found) > 1:
        raise malformed_xml()
    if "And" in found:
        found = found["And"] or {}
        tags = found.get("Tags") or []
    else:
        tags = [found["Tag"]] if "Tag" in found else []
    keys = [t.get("Key") for t in tags]
    if len(keys) != len(set(keys)) or any(
        not k or t.get("Value") is None for k, t in zip(keys, tags, strict=True)
    ):
        raise _invalid("Duplicate Tag Keys are not allowed.")
    out: dict[str, Any] = {"Prefix": found.get("Prefix") or "", "Tags": tags}
    for name in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if found.get(name) is not None:
            if found[name] < 0:
                raise _invalid(f"'{name}' should be a non-negative integer")
            out[name] = found[name]
    return out


def _check_rule(rule: dict[str, Any]) -> dict[str, Any]:
    if rule.get("Status") not in ("Enabled", "Disabled"):
        raise malformed_xml()
    if rule.get("ID") is not None and len(rule["ID"]) > 255:
        raise _invalid("ID length should not exceed allowed limit of 255")
    if rule.get("Transitions") or rule.get("NoncurrentVersionTransitions"):
        raise CloudError("NotImplemented", "Lifecycle transitions are not supported by this server.", 501)
    filter_ = _check_filter(rule)
    out: dict[str, Any] = {k: rule[k] for k in ("ID", "Status", "Filter", "Prefix") if k in rule}
    expiration = rule.get("Expiration")
    if expiration is not None:
        given = [k for k in ("Days", "Date", "ExpiredObjectDeleteMarker") if expiration.get(k) is not None]
        if len(given) != 1:
            raise malformed_xml()
        if "Days" in given:
            _positive(expiration["Days"], "'Days' for Expiration action must be a positive integer")
            out["Expiration"] = {"Days": expiration["Days"]}
        elif "Date" in given:
            date = clock.utc(expiration["Date"])
            if date.time() != _dt.time(0, 0):
                raise _invalid("'Date' must be at midnight GMT")
            out["Expiration"] = {"Date": date.isoformat()}
        else:
            if filter_["Tags"]:
                raise _invalid("ExpiredObjectDeleteMarker cannot be specified with object tag filters.")
            out["Expiration"] = {"ExpiredObjectDeleteMarker": bool(expiration["ExpiredObjectDeleteMarker"])}
    noncurrent = rule.get("NoncurrentVersionExpiration")
    if noncurrent is not None:
        days = _positive(
            noncurrent.get("NoncurrentDays"),
            "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer",
        )
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
        if noncurrent.get("NewerNoncurrentVersions") is not None:
            out["NoncurrentVersionExpiration"]["NewerNoncurrentVersions"] = _positive(
                noncurrent["NewerNoncurrentVersions"], "'NewerNoncurrentVersions' must be a positive integer"
            )
    abort = rule.get("AbortIncompleteMultipartUpload")
    if abort is not None:
        if filter_["Tags"]:
            raise _invalid("AbortIncompleteMultipartUpload cannot be specified with Tags.")
        days = _positive(
            abort.get("DaysAfterInitiation"),
            "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer",
        )
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if not any(
        k in out for k in ("Expiration", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload")
    ):
        raise CloudError("InvalidRequest", "At least one action needs to be specified in a rule")
    return out


def check_configuration(config: Any) -> list[dict[str, Any]]:
    rules = (config or {}).get("Rules")
    if not isinstance(rules, list) or not rules:
        raise malformed_xml()
    if len(rules) > MAX_RULES:
        raise _invalid(f"Lifecycle configuration cannot have more than {MAX_RULES} rules")
    checked = [_check_rule(rule) for rule in rules]
    ids = [rule["ID"] for rule in checked if rule.get("ID")]
    if len(ids) != len(set(ids)):
        raise _invalid("Rule ID must be unique. Found same ID for more than one rule")
    return checked


@S3.operation()
def put_bucket_lifecycle_configuration(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    bucket.lifecycle = json.dumps(check_configuration(p.get("LifecycleConfiguration")))
    return {}


@S3.operation()
def get_bucket_lifecycle_configuration(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    if not bucket.lifecycle:
        raise CloudError("NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist", 404)
    rules = json.loads(bucket.lifecycle)
    for rule in rules:
        if "Date" in rule.get("Expiration", {}):
            rule["Expiration"]["Date"] = _dt.datetime.fromisoformat(rule["Expiration"]["Date"])
    return {"Rules": rules}


@S3.operation()
def delete_bucket_lifecycle(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).lifecycle = None
    return None


# --- the background job ---


def due(start: _dt.datetime, days: int) -> _dt.datetime:
    """When something `days` days after `start` is due: S3 rounds up to the next midnight UTC."""
    at = clock.utc(start) + days * _DAY
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == at else midnight + _DAY


def _rule_filter(rule: dict[str, Any]) -> dict[str, Any]:
    return _check_filter(rule)


def _matches(flt: dict[str, Any], version: ObjectVersion) -> bool:
    if not version.key.startswith(flt["Prefix"]):
        return False
    if flt["Tags"]:
        tags = {t["Key"]: t["Value"] for t in json.loads(version.tags or "[]")}
        if any(tags.get(t["Key"]) != t["Value"] for t in flt["Tags"]):
            return False
    if "ObjectSizeGreaterThan" in flt and not version.size > flt["ObjectSizeGreaterThan"]:
        return False
    return not ("ObjectSizeLessThan" in flt and not version.size < flt["ObjectSizeLessThan"])


def _expire_bucket(objects: ObjectLayer, s: Session, bucket: Bucket, now: _dt.datetime) -> int:
    done = 0
    rules = [r for r in json.loads(bucket.lifecycle or "[]") if r.get("Status") == "Enabled"]
    for rule in rules:
        flt = _rule_filter(rule)
        expiration = rule.get("Expiration") or {}
        noncurrent = rule.get("NoncurrentVersionExpiration")
        if expiration.get("Days") or expiration.get("Date"):
            date = _dt.datetime.fromisoformat(expiration["Date"]) if expiration.get("Date") else None
            current_versions = s.scalars(
                select(ObjectVersion).where(
                    ObjectVersion.bucket == bucket.name,
                    ObjectVersion.is_latest,
                    ObjectVersion.is_delete_marker.is_(False),
                    ObjectVersion.key.startswith(flt["Prefix"], autoescape=True),
                )
            ).all()
            expired = [
                version
                for version in current_versions
                if now
                >= (clock.utc(date) if date is not None else due(version.last_modified, expiration["Days"]))
                and _matches(flt, version)
            ]
            objects.lock(s, bucket.name, [version.key for version in expired])
            for version in expired:  # as DeleteObject would: a marker when versioned
                if bucket.versioning:
                    objects.add_delete_marker(s, bucket, version.key, bucket.owner_account_id, now)
                else:
                    objects.discard(s, version)
                done += 1
        if noncurrent is not None:
            done += _expire_noncurrent(objects, s, bucket, flt, noncurrent, now)
        if expiration.get("ExpiredObjectDeleteMarker"):
            done += _remove_lone_markers(objects, s, bucket, flt)
        abort = rule.get("AbortIncompleteMultipartUpload")
        if abort is not None:
            done += _abort_uploads(objects, s, bucket, flt["Prefix"], abort["DaysAfterInitiation"], now)
    return done


def _expire_noncurrent(
    objects: ObjectLayer,
    s: Session,
    bucket: Bucket,
    flt: dict[str, Any],
    noncurrent: dict[str, Any],
    now: _dt.datetime,
) -> int:
    done = 0
    keys = s.scalars(
        select(ObjectVersion.key)
        .where(
            ObjectVersion.bucket == bucket.name,
            ObjectVersion.is_latest.is_(False),
            ObjectVersion.key.startswith(flt["Prefix"], autoescape=True),
        )
        .distinct()
    ).all()
    keep = noncurrent.get("NewerNoncurrentVersions") or 0
    objects.lock(s, bucket.name, keys)
    for key in keys:
        versions = s.scalars(
            select(ObjectVersion)
            .where(ObjectVersion.bucket == bucket.name, ObjectVersion.key == key)
            .order_by(ObjectVersion.id.desc())
        ).all()
        # versions[0] is the newest; each older one became noncurrent when its successor was written.
        for index in range(1, len(versions)):
            version, successor = versions[index], versions[index - 1]
            if version.is_latest or index <= keep:
                continue
            if not version.is_delete_marker and not _matches(flt, version):
                continue
            if now >= due(successor.last_modified, noncurrent["NoncurrentDays"]) and not object_lock.locked(
                version, now
            ):
                objects.discard(s, version)
                done += 1
    return done


def _remove_lone_markers(objects: ObjectLayer, s: Session, bucket: Bucket, flt: dict[str, Any]) -> int:
    done = 0
    markers = s.scalars(
        select(ObjectVersion).where(
            ObjectVersion.bucket == bucket.name,
            ObjectVersion.is_latest,
            ObjectVersion.is_delete_marker,
            ObjectVersion.key.startswith(flt["Prefix"], autoescape=True),
        )
    ).all()
    objects.lock(s, bucket.name, [marker.key for marker in markers])
    for marker in markers:
        others = s.scalar(
            select(ObjectVersion.id)
            .where(
                ObjectVersion.bucket == bucket.name,
                ObjectVersion.key == marker.key,
                ObjectVersion.id != marker.id,
            )
            .limit(1)
        )
        if others is None:
            objects.discard(s, marker)
            done += 1
    return done


def _abort_uploads(
    objects: ObjectLayer, s: Session, bucket: Bucket, prefix: str, days: int, now: _dt.datetime
) -> int:
    done = 0
    uploads = s.scalars(
        select(Upload).where(Upload.bucket == bucket.name, Upload.key.startswith(prefix, autoescape=True))
    ).all()
    for upload in uploads:
        if now < due(upload.initiated, days):
            continue
        objects.drop_upload(s, upload)
        done += 1
    return done


def expire(objects: ObjectLayer, now: _dt.datetime | None = None) -> int:
    """Apply every bucket's lifecycle rules as of `now`, through the object layer as requests
    would; returns how many versions, delete markers and uploads it expired, added or aborted.
    Each bucket is one transaction."""
    now = clock.utc(now or clock.now())
    with objects.db.session() as s:
        names = list(s.scalars(select(Bucket.name).where(Bucket.lifecycle.is_not(None))))
    done = 0
    for name in names:
        try:
            with objects.db.session() as s:
                bucket = s.get(Bucket, name)
                if bucket is not None and bucket.lifecycle:
                    done += _expire_bucket(objects, s, bucket, now)
        except Exception:
            log.exception("lifecycle of bucket %s failed", name)
    garbage.collect(objects.db, objects.store)
    return done


def expire_and_log(objects: ObjectLayer) -> None:
    """One lifecycle pass, as the Walrus app runs it periodically."""
    expired = expire(objects)
    if expired:
        log.info("lifecycle: %d versions, markers or uploads expired", expired)
