"""AWS Signature Version 4, server side: parse a signed request and recompute its signature.

Two ways to carry a SigV4 signature:

* the `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` header,
  dated by `X-Amz-Date` (or `Date`), which must be within a few minutes of our clock;
* presigned URLs: `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
  `X-Amz-SignedHeaders` and `X-Amz-Signature` in the query string, valid until date + expires.

The canonical request is rebuilt from the request exactly as it came off the wire
(`HttpRequest.raw_path` and `.query_string`), because that is what the client signed. S3 differs
from every other service in two ways, both noted where they apply: it does not normalize or
re-encode the path, and its payload hash comes from the `x-amz-content-sha256` header.
Reference: the AWS General Reference, "Create a signed AWS API request", and the S3 API
reference, "Authenticating Requests (AWS Signature Version 4)".
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from mallee.core.context import Headers, HttpRequest
from mallee.protocol.auth import DEFAULT_MAX_SKEW, AuthError, SignatureInfo, as_utc, basic_iso

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600  # X-Amz-Expires: at most one week

# The x-amz-content-sha256 values that stand for an aws-chunked body (see `chunked`).
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_PAYLOADS = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})

_S3_SERVICES = frozenset({"s3"})
_QUERY_KEYS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders")
_REQUIRED_QUERY_KEYS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
)
_BASIC_ISO = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_DATE8 = re.compile(r"[0-9]{8}")  # [0-9], not \d: that matches any Unicode digit
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_WHITESPACE_RUN = re.compile(r"[ \t\r\n\x0b\x0c]+")


@dataclass(frozen=True)
class V4Signature:
    """The signature parts of a SigV4 request, parsed but not yet checked."""

    presigned: bool
    access_key_id: str
    date: str  # YYYYMMDD, from the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str  # as sent; `verify` checks it is hex
    timestamp: str  # YYYYMMDDTHHMMSSZ, as it goes into the string to sign
    signed_at: datetime
    expires: int | None  # X-Amz-Expires of a presigned request
    session_token: str | None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"

    @property
    def is_s3(self) -> bool:
        return self.service in _S3_SERVICES


# -- parsing -----------------------------------------------------------------------------------


def parse(request: HttpRequest) -> V4Signature | None:
    """The request's SigV4 signature, or None when it has none.

    Raises AuthError("incomplete") when it is malformed, ("unsupported") for SigV4a.
    """
    header = request.headers.get("authorization")
    if header is not None and header.strip().startswith("AWS4-"):
        return _parse_header(request, header)
    query = _first_values(request)
    if any(key in query for key in _QUERY_KEYS):
        return _parse_query(query)
    return None


def extract(request: HttpRequest) -> SignatureInfo | None:
    """`auth.extract` for SigV4: who signed, for which region and service."""
    parsed = parse(request)
    if parsed is None:
        return None
    return SignatureInfo(
        scheme="v4-query" if parsed.presigned else "v4-header",
        access_key_id=parsed.access_key_id,
        region=parsed.region,
        service=parsed.service,
        session_token=parsed.session_token,
        parsed=(request, parsed),
    )


def _first_values(request: HttpRequest) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in request.query_params():
        params.setdefault(key, value)
    return params


def _parse_header(request: HttpRequest, header: str) -> V4Signature:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        # AWS4-ECDSA-P256-SHA256 is SigV4a (multi-region signatures): not implemented.
        raise AuthError("unsupported", f"Unsupported AWS 'algorithm': '{algorithm}'")
    fields = _auth_fields(rest, header)
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in fields]
    if missing:
        needs = " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
        raise AuthError("incomplete", f"{needs} Authorization={header}")
    access_key_id, date, region, service = _parse_credential(fields["Credential"])
    timestamp, signed_at = _header_timestamp(request.headers)
    return V4Signature(
        presigned=False,
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(fields["SignedHeaders"]),
        signature=fields["Signature"],
        timestamp=timestamp,
        signed_at=signed_at,
        expires=None,
        session_token=request.headers.get("x-amz-security-token"),
    )


def _auth_fields(rest: str, header: str) -> dict[str, str]:
    """`Credential=a, SignedHeaders=b, Signature=c` (commas, optional spaces) as a dict."""
    fields: dict[str, str] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        if not equals:
            raise AuthError(
                "incomplete",
                f"Authorization header requires each component to be of the form key=value: "
                f"'{part}'. Authorization={header}",
            )
        fields.setdefault(name.strip(), value.strip())
    return fields


@functools.lru_cache(maxsize=128)  # a client sends the same scope all day
def _parse_credential(credential: str) -> tuple[str, str, str, str]:
    """`AKID/20150830/us-east-1/service/aws4_request` -> (akid, date, region, service)."""
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts) or parts[4] != TERMINATOR or not _DATE8.fullmatch(parts[1]):
        raise AuthError(
            "incomplete",
            f"Credential should be of the form <access key>/<YYYYMMDD>/<region>/<service>/aws4_request,"
            f" not '{credential}'",
        )
    return parts[0], parts[1], parts[2], parts[3]


@functools.lru_cache(maxsize=128)  # and the same few lists of signed headers
def _parse_signed_headers(value: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in value.split(";"))
    if not value.strip() or not all(_HEADER_NAME.fullmatch(name) for name in names):
        raise AuthError("incomplete", f"SignedHeaders is malformed: '{value}'")
    if "host" not in names:
        # Signing the Host header is what ties a signature to one endpoint.
        raise AuthError("incomplete", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    return names


def _header_timestamp(headers: Headers) -> tuple[str, datetime]:
    """The signing time: X-Amz-Date, else the Date header (RFC 1123, converted to ISO basic)."""
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        signed_at = parse_basic_iso(amz_date.strip())
        if signed_at is None:
            raise AuthError("incomplete", f"Invalid X-Amz-Date: '{amz_date}'")
        return amz_date.strip(), signed_at
    date = headers.get("date")
    if date is None:
        raise AuthError(
            "incomplete",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    signed_at = parse_http_date(date)
    if signed_at is None:
        raise AuthError("incomplete", f"Invalid Date header: '{date}'")
    return basic_iso(signed_at), signed_at


def _parse_query(query: dict[str, str]) -> V4Signature:
    missing = [key for key in _REQUIRED_QUERY_KEYS if key not in query]
    if missing:
        raise AuthError(
            "incomplete",
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
            "'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', and 'X-Amz-Expires'. "
            f"Missing: {', '.join(missing)}.",
        )
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthError("unsupported", f"Unsupported AWS 'algorithm': '{query['X-Amz-Algorithm']}'")
    access_key_id, date, region, service = _parse_credential(query["X-Amz-Credential"])
    signed_at = parse_basic_iso(query["X-Amz-Date"])
    if signed_at is None:
        raise AuthError(
            "incomplete", f"X-Amz-Date must be in the ISO8601 Long Format: '{query['X-Amz-Date']}'"
        )
    return V4Signature(
        presigned=True,
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(query["X-Amz-SignedHeaders"]),
        signature=query["X-Amz-Signature"],
        timestamp=query["X-Amz-Date"],
        signed_at=signed_at,
        expires=_parse_expires(query.get("X-Amz-Expires"), required=service in _S3_SERVICES),
        session_token=query.get("X-Amz-Security-Token"),
    )


def _parse_expires(value: str | None, *, required: bool) -> int | None:
    # S3 insists on X-Amz-Expires; the query services accept presigned requests without one and
    # then hold them to the same clock-skew window as header-signed requests.
    if value is None:
        if required:
            raise AuthError("incomplete", "X-Amz-Expires is required for presigned requests")
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise AuthError("incomplete", f"X-Amz-Expires should be a number: '{value}'")
    seconds = int(value)
    if seconds < 1:
        raise AuthError("incomplete", "X-Amz-Expires must be non-negative and non-zero")
    if seconds > MAX_PRESIGNED_SECONDS:
        raise AuthError(
            "incomplete", "X-Amz-Expires must be less than a week (in seconds) that is; 604800 seconds"
        )
    return seconds


@functools.lru_cache(maxsize=256)  # requests signed in the same second share their timestamp
def parse_basic_iso(value: str) -> datetime | None:
    """20150830T123600Z -> an aware datetime, None when it is anything else."""
    if not _BASIC_ISO.fullmatch(value):
        return None
    try:  # the digits by position: what strptime("%Y%m%dT%H%M%SZ") reads, several times faster
        year, month, day = int(value[:4]), int(value[4:6]), int(value[6:8])
        return as_utc(datetime(year, month, day, int(value[9:11]), int(value[11:13]), int(value[13:15])))
    except ValueError:
        return None


def parse_http_date(value: str) -> datetime | None:
    """An RFC 1123 date (`Sun, 30 Aug 2015 12:36:00 GMT`), None when it is not one."""
    try:
        return as_utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# -- verification ------------------------------------------------------------------------------


def verify(
    request: HttpRequest,
    info: SignatureInfo,
    secret_key: str,
    now: datetime,
    *,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> None:
    """Raise AuthError unless the request's SigV4 signature is right and current."""
    cached = info.parsed
    parsed = cached[1] if cached is not None and cached[0] is request else parse(request)
    if (
        parsed is None
        or parsed.access_key_id != info.access_key_id
        or parsed.presigned != (info.scheme == "v4-query")
    ):
        raise AuthError("signature", "The request signature does not match the signature information given")
    check_time(parsed, as_utc(now), max_skew)
    if parsed.timestamp[:8] != parsed.date:
        raise AuthError(
            "signature",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{parsed.date}' != '{parsed.timestamp[:8]}', from '{parsed.timestamp}'.",
        )
    provided = parsed.signature.strip()
    if not _HEX64.fullmatch(provided):
        raise AuthError(
            "signature",
            "The request signature we calculated does not match the signature you "
            "provided: a signature is 64 hexadecimal digits.",
        )
    expected = compute_signature(request, parsed, secret_key)
    if not hmac.compare_digest(expected, provided.lower()):
        raise AuthError(
            "signature",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )


def check_time(parsed: V4Signature, now: datetime, max_skew: timedelta) -> None:
    """Header signatures must be close to our clock; presigned ones are good until they expire."""
    if parsed.signed_at > now + max_skew:
        # Also for presigned requests: one dated in the future would otherwise outlive its expiry.
        raise AuthError(
            "skewed",
            f"Signature not yet current: {parsed.timestamp} is still later than "
            f"{basic_iso(now + max_skew)} ({basic_iso(now)} + {_minutes(max_skew)} min.)",
        )
    if parsed.presigned and parsed.expires is not None:
        if now > parsed.signed_at + timedelta(seconds=parsed.expires):
            raise AuthError("expired", "Request has expired")
        return
    if parsed.signed_at < now - max_skew:
        raise AuthError(
            "skewed",
            f"Signature expired: {parsed.timestamp} is now earlier than "
            f"{basic_iso(now - max_skew)} ({basic_iso(now)} - {_minutes(max_skew)} min.)",
        )


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def compute_signature(request: HttpRequest, parsed: V4Signature, secret_key: str) -> str:
    """The hex signature the client should have sent, given the access key's secret."""
    creq = canonical_request(request, parsed)
    key = signing_key(secret_key, parsed.date, parsed.region, parsed.service)
    return hmac_sha256(key, string_to_sign(parsed.timestamp, parsed.scope, creq)).hex()


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain over "AWS4"+secret, date, region, service and "aws4_request".
    Cached: one key signs a day of requests (four HMACs fewer per request)."""
    key = hmac_sha256(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, TERMINATOR):
        key = hmac_sha256(key, part)
    return key


def hmac_sha256(key: bytes, message: str | bytes) -> bytes:
    data = message if isinstance(message, bytes) else _utf8(message)
    return hmac.new(key, data, hashlib.sha256).digest()


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(_utf8(canonical)).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def canonical_request(request: HttpRequest, parsed: V4Signature) -> str:
    exclude = ("X-Amz-Signature",) if parsed.presigned else ()
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.raw_path, s3=parsed.is_s3),
            canonical_query(request.query_string, exclude=exclude),
            canonical_headers(request.headers, parsed.signed_headers),
            ";".join(parsed.signed_headers),
            payload_hash(request, parsed),
        )
    )


def canonical_uri(raw_path: str, *, s3: bool) -> str:
    """The path as signed.

    Every service but S3 removes `.`/`..` segments and empty segments, then URI-encodes the
    already-encoded wire path once more ("double encoding": `%20` is signed as `%2520`). S3 signs
    the path as sent: its object keys may legitimately contain `//` or `..`.
    """
    path = raw_path or "/"
    if s3:
        # Keep existing %XX escapes; encode only what a client should not have sent raw, which is
        # what such a client signed (e.g. a space, or a sub-delimiter like `!` or `*`).
        return quote(_utf8(path), safe="/%")
    return quote(_utf8(remove_dot_segments(path)), safe="/")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal, plus the collapsing of `//` that AWS services also do."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    trailing = "/" if path.endswith("/") and kept else ""
    return "/" + "/".join(kept) + trailing


def canonical_query(query_string: str, *, exclude: tuple[str, ...] = ()) -> str:
    """Each name and value decoded then re-encoded the AWS way, sorted by name then value.

    Decoding to bytes (not text) keeps invalid UTF-8 escapes exactly as the client sent them.
    A parameter without `=` is signed as `name=`.
    """
    pairs: list[tuple[str, str]] = []
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name_bytes = unquote_to_bytes(name)
        if name_bytes.decode("utf-8", "replace") in exclude:
            continue
        pairs.append((quote(name_bytes, safe=""), quote(unquote_to_bytes(value), safe="")))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_headers(headers: Headers, names: tuple[str, ...]) -> str:
    """`name:value\\n` for each signed header; repeated headers joined by commas, in their order.

    Values are trimmed and runs of whitespace inside them collapsed to one space.
    """
    return "".join([f"{name}:{','.join([_trimmed(v) for v in headers.get_all(name)])}\n" for name in names])


def _trimmed(value: str) -> str:
    if "  " in value or not value.isprintable():  # the whitespace other than ' ' is unprintable
        return _WHITESPACE_RUN.sub(" ", value).strip(" ")
    return value.strip(" ")  # the usual header: nothing to collapse


def payload_hash(request: HttpRequest, parsed: V4Signature) -> str:
    """The last line of the canonical request."""
    declared = request.headers.get("x-amz-content-sha256")
    if parsed.presigned and parsed.is_s3:
        # Presigned S3 URLs do not sign the body; a client may still pin it with this parameter.
        for key, value in request.query_params():
            if key == "X-Amz-Content-Sha256":
                return value
        return UNSIGNED_PAYLOAD
    if parsed.is_s3:
        return _s3_payload_hash(declared)
    if declared is None:
        return hashlib.sha256(request.body).hexdigest()
    declared = declared.strip()
    if _HEX64.fullmatch(declared) and not hmac.compare_digest(
        hashlib.sha256(request.body).hexdigest(), declared.lower()
    ):
        # Outside S3 we always hold the whole body, so a lying header is refused here.
        raise AuthError(
            "signature", "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    return declared


def _s3_payload_hash(declared: str | None) -> str:
    # S3 requires the header with header signatures, and signs its value as is: the body is
    # checked against it later (`auth.payload_hash_matches`, or chunk by chunk in `chunked`).
    if declared is None:
        raise AuthError("incomplete", "Missing required header for this request: x-amz-content-sha256")
    declared = declared.strip()
    if _HEX64.fullmatch(declared) or declared == UNSIGNED_PAYLOAD or declared in STREAMING_PAYLOADS:
        return declared
    if declared.startswith("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
        raise AuthError("unsupported", "SigV4a streaming payloads are not supported")
    raise AuthError(
        "incomplete",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
        "or a valid sha256 value.",
    )


def _utf8(text: str) -> bytes:
    # surrogatepass: a header or path decoded leniently upstream must not make us raise.
    return text.encode("utf-8", "surrogatepass")
