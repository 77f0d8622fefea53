"""Continuation tokens of S3's listings (ListObjectsV2, ListBuckets).

S3 documents them as obfuscated, not a real key: clients only hand them back. Ours carry the last
name a page answered (a key, a bucket name), base64url-encoded behind a format tag.
"""

from __future__ import annotations

import base64
import binascii

from mallee.core.errors import CloudError

_TAG = b"1:"


def continuation_token(marker: str) -> str:
    """The token of a page that ended at `marker`."""
    return base64.urlsafe_b64encode(_TAG + marker.encode("utf-8")).decode("ascii")


def token_marker(token: str) -> str:
    """The marker `token` carries; InvalidArgument when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if not raw.startswith(_TAG):
            raise ValueError(token)
        return raw[len(_TAG) :].decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise CloudError("InvalidArgument", "The continuation token provided is incorrect") from exc
