"""DeleteObjects: up to 1000 keys (or key versions) in one request, each answered on its own.

As on S3 the request must carry Content-MD5 or an x-amz-checksum-* header over its body; each key
is deleted like DeleteObject would (`ObjectLayer.delete`) and is authorized as a DeleteObject
request for it would be; a key that fails is reported in Errors while the others
go ahead. Quiet mode reports only the errors.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.walrus import checksums, object_lock
from mallee.services.walrus.apis import S3
from mallee.services.walrus.authorize import authorize_object
from mallee.services.walrus.bodies import check_md5
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.objects import MAX_KEY_BYTES
from mallee.services.walrus.runtime import layer

MAX_OBJECTS = 1000


def _check_body_digest(ctx: RequestContext) -> None:
    headers, body = ctx.request.headers, ctx.request.body
    md5 = headers.get("content-md5")
    algorithms = [a for a in checksums.ALGORITHMS if headers.get(f"x-amz-checksum-{a}")]
    if md5 is None and not algorithms:
        raise CloudError(
            "InvalidRequest", "Missing required header for this request: Content-MD5 OR x-amz-checksum-*"
        )
    check_md5(md5, hashlib.md5(body).digest())
    if algorithms:
        hashers = checksums.Hashers(algorithms)
        hashers.update(body)
        hashers.verify(headers, {})


@S3.operation()
def delete_objects(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    _check_body_digest(ctx)
    request = p.get("Delete") or {}
    objects = request.get("Objects") or []
    if not objects or len(objects) > MAX_OBJECTS:
        raise CloudError("MalformedXML", "The XML you provided was not well-formed or did not validate.")
    quiet = bool(request.get("Quiet"))
    objects_layer = layer()
    objects_layer.lock(ctx.session, bucket.name, [item.get("Key") or "" for item in objects])
    deleted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in objects:
        key, version_id = item.get("Key") or "", item.get("VersionId")
        try:
            if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
                raise CloudError("KeyTooLongError", "Your key is too long")
            authorize_object(ctx, "DeleteObject", bucket.name, key, version_id)  # as DeleteObject would be
            assert ctx.account_id is not None
            guard = object_lock.guard(ctx, p, bucket.name, key, version_id)
            answer = objects_layer.delete(ctx.session, bucket, key, version_id, ctx.account_id, guard)
        except CloudError as err:
            error: dict[str, Any] = {"Key": key, "Code": err.code, "Message": err.message}
            if version_id:
                error["VersionId"] = version_id
            errors.append(error)
            continue
        if quiet:
            continue
        entry: dict[str, Any] = {"Key": key}
        if version_id:
            entry["VersionId"] = version_id
            if answer.get("DeleteMarker"):
                entry["DeleteMarker"] = True
                entry["DeleteMarkerVersionId"] = version_id
        elif answer.get("DeleteMarker"):
            entry["DeleteMarker"] = True
            entry["DeleteMarkerVersionId"] = answer["VersionId"]
        deleted.append(entry)
    out: dict[str, Any] = {}
    if deleted:
        out["Deleted"] = deleted
    if errors:
        out["Errors"] = errors
    return out
