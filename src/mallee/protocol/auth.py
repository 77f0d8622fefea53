"""Request signatures on the public API: find out how a request is signed, then check it.

The front door calls `extract` first. It tells an anonymous request (no signature at all: `None`)
from a signed one (a `SignatureInfo` naming the access key, so the caller can look up its secret),
and refuses half-signed or malformed ones. The caller then looks the key up and calls `verify`
with its secret; `verify` hands over to `sigv4` or `sigv2` according to the scheme.

Every problem with the client's input is an `AuthError` with one of a few `kind`s; the services
turn it into their own error code (`AuthError.to_cloud_error`). Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from mallee.core.context import HttpRequest

if TYPE_CHECKING:
    from mallee.protocol.sigv4 import V4Signature

SCHEMES = ("v4-header", "v4-query", "v2-query", "v2-s3-header", "v2-s3-query")
# The gateway turns each kind into the AWS error code of the API family the request was for.
KINDS = (
    "missing",
    "incomplete",
    "signature",
    "expired",
    "skewed",
    "unsupported",
    # raised by the identity port when it looks the key up
    "unknown-key",
    "inactive-key",
    "invalid-token",
    "expired-token",
)
DEFAULT_MAX_SKEW = timedelta(minutes=15)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class SignatureInfo:
    """What `extract` learned from a signed request, before any secret is known."""

    scheme: str  # "v4-header" | "v4-query" | "v2-query" | "v2-s3-header" | "v2-s3-query"
    access_key_id: str
    region: str | None  # from the v4 credential scope
    service: str | None  # from the v4 credential scope (e.g. "ec2", "iam", "sts", "s3")
    session_token: str | None  # X-Amz-Security-Token header/query (or SecurityToken for v2)
    # SigV4: the request `extract` read and its parsed signature, so that `verify` of the same
    # request does not parse it again. Not part of the value.
    parsed: tuple[HttpRequest, V4Signature] | None = field(default=None, compare=False, repr=False)


class AuthError(Exception):
    """The request's signature is missing, malformed, wrong or out of date.

    `kind` is one of `KINDS`; `message` reads like AWS's own messages.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown AuthError kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


# Errors our parsing could raise on hostile input despite its checks; they are turned into
# AuthError so that callers only ever have one exception type to handle.
_PARSE_FAILURES = (ValueError, TypeError, UnicodeError, IndexError, KeyError, OverflowError)


def extract(request: HttpRequest) -> SignatureInfo | None:
    """How the request is signed, or None when it carries no signature at all (anonymous).

    Raises AuthError("incomplete") when a signature is half there or malformed, and
    AuthError("unsupported") for schemes we do not implement (SigV4a, SigV2 versions 0 and 1...).
    Read once per request (`HttpRequest.signature`).
    """
    found = request.signature(_extract_or_error)
    if isinstance(found, AuthError):
        raise AuthError(found.kind, found.message)
    return cast(SignatureInfo | None, found)


def _extract_or_error(request: HttpRequest) -> SignatureInfo | AuthError | None:
    try:
        return _extract(request)
    except AuthError as err:
        return err


def _extract(request: HttpRequest) -> SignatureInfo | None:
    # Imported here: sigv4 and sigv2 import AuthError and SignatureInfo from this module.
    from mallee.protocol import sigv2, sigv4

    try:
        found = [
            info
            for info in (sigv4.extract(request), sigv2.extract_query(request), sigv2.extract_s3(request))
            if info is not None
        ]
    except AuthError:
        raise
    except _PARSE_FAILURES as exc:
        raise AuthError("incomplete", f"Malformed request signature: {exc}") from exc
    if not found:
        return None
    if len(found) > 1:
        # S3 says the same: one request, one way of signing it.
        raise AuthError(
            "incomplete",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
        )
    return found[0]


def verify(
    request: HttpRequest,
    info: SignatureInfo,
    secret_key: str,
    now: datetime,
    *,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    virtual_host_bucket: str | None = None,
) -> None:
    """Check the request's signature with the access key's secret; raise AuthError on any failure.

    `virtual_host_bucket` only matters for S3 signature version 2: with virtual-hosted-style
    addressing (bucket.s3.example.com) the string to sign names the bucket, which only the caller,
    who knows the S3 domain, can tell from the Host header.
    """
    from mallee.protocol import sigv2, sigv4

    try:
        if info.scheme in ("v4-header", "v4-query"):
            sigv4.verify(request, info, secret_key, now, max_skew=max_skew)
        elif info.scheme == "v2-query":
            sigv2.verify_query(request, info, secret_key, now, max_skew=max_skew)
        elif info.scheme in ("v2-s3-header", "v2-s3-query"):
            sigv2.verify_s3(
                request, info, secret_key, now, max_skew=max_skew, virtual_host_bucket=virtual_host_bucket
            )
        else:
            raise AuthError("unsupported", f"Unsupported signature scheme {info.scheme!r}")
    except AuthError:
        raise
    except _PARSE_FAILURES as exc:
        raise AuthError("incomplete", f"Malformed request signature: {exc}") from exc


def payload_hash_matches(request: HttpRequest) -> bool:
    """Whether a hex `x-amz-content-sha256` header agrees with the body.

    True when there is nothing to compare: no header, `UNSIGNED-PAYLOAD`, or a `STREAMING-...`
    value (aws-chunked bodies are checked chunk by chunk by `chunked`). S3 callers use this once
    they hold the whole body, since `verify` trusts the header for S3 (the body may be streamed).
    """
    declared = request.headers.get("x-amz-content-sha256")
    if declared is None or not _HEX64.fullmatch(declared.strip()):
        return True
    actual = hashlib.sha256(request.body).hexdigest()
    return hmac.compare_digest(actual, declared.strip().lower())


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive ones are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def basic_iso(moment: datetime) -> str:
    """The compact ISO 8601 form SigV4 uses: 20150830T123600Z."""
    return as_utc(moment).strftime("%Y%m%dT%H%M%SZ")
