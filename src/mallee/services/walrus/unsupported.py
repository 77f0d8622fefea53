"""What Walrus refuses rather than ignores: input members of the operations it serves that no
handler reads and that would change what S3 does (KMS, object lock event holds, conditional deletes,
appends, checksums it cannot verify, ...). Ignoring one would answer as if it had been honoured; the
request is refused instead with S3's 501 NotImplemented, naming the header or query parameter.

Members that only describe the request, or that Walrus honours elsewhere, are not listed:
RequestPayer, ContentMD5 and ChecksumAlgorithm (checked over the body), ExpectedBucketOwner (the
authorizer), OptionalObjectAttributes (no object of Walrus has a restore status to add),
AnnotationDirective (no annotations to copy), ConfirmRemoveSelfBucketAccess, MFA outside
PutBucketVersioning (no bucket has MFA Delete), TransitionDefaultMinimumObjectSize (lifecycle
transitions are refused). IfMatch/IfNoneMatch are honoured by PutObject, CopyObject and
CompleteMultipartUpload, ExpectedSourceBucketOwner by CopyObject and UploadPartCopy, SSE-S3 and
SSE-C (x-amz-server-side-encryption*) by every operation that takes them (see encryption).

`refuse_unsupported` runs on every request: the table is worked out from the model at import, so a
request costs one dict look-up and a set intersection over its parameter names.
"""

from __future__ import annotations

from typing import Any

from mallee.core.errors import CloudError
from mallee.protocol.specs import load_service

ALL = None  # every operation whose input has the member
# Input member -> the operations where Walrus ignores it.
UNSUPPORTED: dict[str, frozenset[str] | None] = {
    "SSEKMSKeyId": ALL,  # no KMS (x-amz-server-side-encryption: aws:kms is refused by encryption)
    "SSEKMSEncryptionContext": ALL,
    "BucketKeyEnabled": ALL,
    "ObjectLockEventHold": ALL,  # object lock event holds
    "ObjectLockEventHoldDurationDays": ALL,
    "ObjectLockEventHoldDurationYears": ALL,
    "BucketNamespace": ALL,  # bucket names are global
    "IfMatch": frozenset({"DeleteObject"}),  # conditional deletes
    "IfMatchInitiatedTime": ALL,
    "IfMatchLastModifiedTime": ALL,
    "IfMatchSize": ALL,
    "WriteOffsetBytes": ALL,  # appends (directory buckets' only)
    # Checksums of algorithms Walrus does not compute (see checksums.ALGORITHMS).
    "ChecksumMD5": ALL,
    "ChecksumSHA512": ALL,
    "ChecksumXXHASH3": ALL,
    "ChecksumXXHASH64": ALL,
    "ChecksumXXHASH128": ALL,
}
# Values that ask for what Walrus does anyway (besides an absent or false flag).
HARMLESS: dict[str, frozenset[object]] = {
    "BucketNamespace": frozenset({"global"}),
    "ObjectLockEventHold": frozenset({"OFF"}),
}


def _refused_by_operation() -> dict[str, dict[str, str]]:
    """Operation -> {refused member: its header or query name}, from the S3 model."""
    service = load_service("s3")
    table: dict[str, dict[str, str]] = {}
    for operation in service.operation_names:
        shape = service.operation_model(operation).input_shape
        if shape is None:
            continue
        refused = {
            name: str(member.serialization.get("name", name))
            for name, member in shape.members.items()
            if name in UNSUPPORTED and (UNSUPPORTED[name] is ALL or operation in (UNSUPPORTED[name] or ()))
        }
        if refused:
            table[operation] = refused
    return table


REFUSED = _refused_by_operation()


def refuse_unsupported(operation: str, params: dict[str, Any]) -> None:
    """Raise 501 NotImplemented if the request carries an input member Walrus would ignore."""
    refused = REFUSED.get(operation)
    if refused is None:
        return
    for name in sorted(refused.keys() & params.keys()):
        value = params[name]
        if value is None or value is False or value in HARMLESS.get(name, ()):
            continue
        raise CloudError("NotImplemented", f"{refused[name]} is not supported by this server.", 501)
