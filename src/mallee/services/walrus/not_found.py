"""S3's "no such …" errors for objects and uploads; their documents name what was asked for
(`<Key>`, `<VersionId>`, `<UploadId>`), as S3's do."""

from __future__ import annotations

from mallee.core.errors import CloudError


def no_such_key(
    key: str, version_id: str | None = None, headers: list[tuple[str, str]] | None = None
) -> CloudError:
    """NoSuchKey, or NoSuchVersion when a version was named (`headers`: more response headers)."""
    if version_id:
        details = {"Key": key, "VersionId": version_id}
        return CloudError("NoSuchVersion", "The specified version does not exist.", 404, headers, details)
    return CloudError("NoSuchKey", "The specified key does not exist.", 404, headers, {"Key": key})


def no_such_upload(upload_id: str) -> CloudError:
    return CloudError(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed.",
        404,
        details={"UploadId": upload_id},
    )
