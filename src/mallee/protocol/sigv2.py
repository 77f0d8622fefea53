"""AWS Signature Version 2, server side, in its two unrelated flavours.

* Query SigV2, used by EC2, IAM and STS clients of the Eucalyptus era (euca2ools, boto 2):
  `AWSAccessKeyId`, `SignatureVersion=2`, `SignatureMethod=HmacSHA256|HmacSHA1`, `Timestamp` or
  `Expires`, and `Signature` (base64), in the query string or the form-encoded POST body. The
  string to sign is `METHOD\\nhost\\npath\\nsorted-encoded-params`.
* S3's own "REST authentication" (HMAC-SHA1): the `Authorization: AWS AKID:signature` header, or
  presigned URLs with `AWSAccessKeyId`, `Expires` and `Signature` in the query. The string to sign
  is `METHOD\\nContent-MD5\\nContent-Type\\nDate\\n` + the x-amz-* headers + the resource, which
  names the bucket, the key, and the few query parameters that select a sub-resource.

References: the EC2 API reference, "Signature Version 2 signing process", and the S3 developer
guide, "Signing and authenticating REST requests".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import quote, unquote

from mallee.core.context import HttpRequest
from mallee.protocol.auth import DEFAULT_MAX_SKEW, AuthError, SignatureInfo, as_utc
from mallee.protocol.sigv4 import parse_basic_iso, parse_http_date

_QUERY_METHODS = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}

# Query parameters that name an S3 sub-resource or override a response header: S3 signs these,
# and only these, as part of the resource (S3 developer guide, "Constructing the
# CanonicalizedResource element"; later API additions included).
S3_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "delete",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "partNumber",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "select-type",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
    }
)


# -- query SigV2 (EC2, IAM, STS) ----------------------------------------------------------------


def signed_params(request: HttpRequest) -> list[tuple[str, str]]:
    """The query parameters, then a form-encoded body's: AWS signs (and reads) both."""
    # Undecodable bytes become U+FFFD and the signature simply fails to match.
    return request.form_params(errors="replace")


def extract_query(request: HttpRequest) -> SignatureInfo | None:
    """`auth.extract` for query SigV2: None unless the parameters carry a version-2 signature."""
    params = _first_values(signed_params(request))
    if "SignatureVersion" not in params and "SignatureMethod" not in params:
        return None
    _parse_query(params)
    return SignatureInfo(
        scheme="v2-query",
        access_key_id=params["AWSAccessKeyId"],
        region=None,
        service=None,
        session_token=params.get("SecurityToken"),
    )


def _parse_query(params: dict[str, str]) -> None:
    """Raise AuthError unless the version-2 parameters are all there and supported."""
    version = params.get("SignatureVersion")
    if version is not None and version != "2":
        # Versions 0 and 1 are insecure (1 is case-insensitive and collides) and long retired.
        raise AuthError("unsupported", f"Signature version {version} is not supported")
    missing = [
        name
        for name in ("AWSAccessKeyId", "Signature", "SignatureMethod", "SignatureVersion")
        if not params.get(name)
    ]
    if missing:
        raise AuthError("incomplete", f"Request must contain the parameters: {', '.join(missing)}")
    if params["SignatureMethod"] not in _QUERY_METHODS:
        raise AuthError("unsupported", f"Signature method {params['SignatureMethod']} is not supported")
    has_timestamp, has_expires = "Timestamp" in params, "Expires" in params
    if has_timestamp == has_expires:
        raise AuthError(
            "incomplete",
            "Request must contain either a valid (RFC 3339) Timestamp or an Expires parameter, but not both",
        )


def verify_query(
    request: HttpRequest,
    info: SignatureInfo,
    secret_key: str,
    now: datetime,
    *,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> None:
    """Raise AuthError unless the query SigV2 signature is right and current."""
    all_params = signed_params(request)
    params = _first_values(all_params)
    _parse_query(params)
    if params["AWSAccessKeyId"] != info.access_key_id:
        raise AuthError("signature", "The request signature does not match the signature information given")
    _check_query_time(params, as_utc(now), max_skew)
    digest = _QUERY_METHODS[params["SignatureMethod"]]
    expected = hmac.new(_utf8(secret_key), _utf8(query_string_to_sign(request, all_params)), digest).digest()
    _compare_base64(expected, params["Signature"])


def query_string_to_sign(request: HttpRequest, params: list[tuple[str, str]]) -> str:
    """METHOD, lower-cased Host, path ("/" when empty), then the parameters sorted by name."""
    host = (request.headers.get("host") or "").strip().lower()
    pairs = sorted((_encode_v2(name), _encode_v2(value)) for name, value in params if name != "Signature")
    query = "&".join(f"{name}={value}" for name, value in pairs)
    return f"{request.method.upper()}\n{host}\n{request.raw_path or '/'}\n{query}"


def _encode_v2(text: str) -> str:
    # RFC 3986 encoding: everything but A-Z a-z 0-9 - _ . ~ (a space is %20, never '+').
    return quote(_utf8(text), safe="-_.~")


def _check_query_time(params: dict[str, str], now: datetime, max_skew: timedelta) -> None:
    if "Expires" in params:
        expires = _parse_iso8601(params["Expires"])
        if expires is None:
            raise AuthError("incomplete", f"Invalid Expires parameter: '{params['Expires']}'")
        if now > expires:
            raise AuthError("expired", f"Request has expired. Expires date is {params['Expires']}")
        return
    timestamp = _parse_iso8601(params["Timestamp"])
    if timestamp is None:
        raise AuthError("incomplete", f"Invalid Timestamp parameter: '{params['Timestamp']}'")
    if abs(now - timestamp) > max_skew:
        raise AuthError(
            "skewed",
            f"Request has expired. Timestamp date is {params['Timestamp']}; requests must be within "
            f"{int(max_skew.total_seconds() // 60)} minutes of the server time",
        )


def _parse_iso8601(value: str) -> datetime | None:
    """2015-08-30T12:36:00Z, with or without fractions or an offset; naive ones are UTC."""
    try:
        return as_utc(datetime.fromisoformat(value.strip()))
    except (ValueError, TypeError, OverflowError):
        return None


# -- S3 SigV2 -----------------------------------------------------------------------------------


def extract_s3(request: HttpRequest) -> SignatureInfo | None:
    """`auth.extract` for S3's SigV2: the `AWS AKID:sig` header or a v2 presigned URL."""
    header = request.headers.get("authorization")
    if header is not None:
        return _extract_s3_header(request, header)
    query = _first_values(request.query_params())
    if "SignatureVersion" in query or "SignatureMethod" in query:
        return None  # query SigV2 (EC2 and friends), not S3's
    if not any(name in query for name in ("AWSAccessKeyId", "Signature")):
        return None
    _parse_s3_query(query)
    return SignatureInfo(
        scheme="v2-s3-query",
        access_key_id=query["AWSAccessKeyId"],
        region=None,
        service=None,
        session_token=query.get("x-amz-security-token") or request.headers.get("x-amz-security-token"),
    )


def _extract_s3_header(request: HttpRequest, header: str) -> SignatureInfo | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.startswith("AWS4-"):
        return None  # SigV4: sigv4.extract's business
    if scheme != "AWS":
        raise AuthError("unsupported", f"Unsupported Authorization Type: '{scheme}'")
    access_key_id, signature = _split_s3_credentials(credentials)
    return SignatureInfo(
        scheme="v2-s3-header",
        access_key_id=access_key_id,
        region=None,
        service=None,
        session_token=request.headers.get("x-amz-security-token"),
    )


def _split_s3_credentials(credentials: str) -> tuple[str, str]:
    access_key_id, colon, signature = credentials.strip().partition(":")
    if not colon or not access_key_id or not signature:
        raise AuthError(
            "incomplete",
            "Authorization header is invalid -- one and only one ' ' (space) "
            "and one ':' required: AWS <AWSAccessKeyId>:<Signature>",
        )
    return access_key_id, signature


def _parse_s3_query(query: dict[str, str]) -> int:
    """Check a v2 presigned URL's parameters; its expiry time (seconds since the epoch)."""
    missing = [name for name in ("AWSAccessKeyId", "Signature", "Expires") if not query.get(name)]
    if missing:
        raise AuthError(
            "incomplete", f"Query-string authentication requires the parameters: {', '.join(missing)}"
        )
    expires = query["Expires"].strip()
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        raise AuthError("incomplete", f"Invalid date (should be seconds since epoch): {query['Expires']}")
    return int(expires)


def verify_s3(
    request: HttpRequest,
    info: SignatureInfo,
    secret_key: str,
    now: datetime,
    *,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    virtual_host_bucket: str | None = None,
) -> None:
    """Raise AuthError unless the S3 SigV2 signature (header or presigned) is right and current."""
    now = as_utc(now)
    if info.scheme == "v2-s3-header":
        access_key_id, signature = _split_s3_credentials(
            (request.headers.get("authorization") or "").strip().partition(" ")[2]
        )
        date_line = _check_s3_header_time(request, now, max_skew)
        presigned = False
    else:
        query = _first_values(request.query_params())
        expires = _parse_s3_query(query)
        if now.timestamp() > expires:
            raise AuthError("expired", "Request has expired")
        access_key_id, signature, date_line = query["AWSAccessKeyId"], query["Signature"], query["Expires"]
        presigned = True
    if access_key_id != info.access_key_id:
        raise AuthError("signature", "The request signature does not match the signature information given")
    text = s3_string_to_sign(request, date_line, presigned=presigned, virtual_host_bucket=virtual_host_bucket)
    expected = hmac.new(_utf8(secret_key), _utf8(text), hashlib.sha1).digest()
    _compare_base64(expected, signature)


def _check_s3_header_time(request: HttpRequest, now: datetime, max_skew: timedelta) -> str:
    """Check the request's date; return the Date line of the string to sign.

    When x-amz-date is present (for clients that cannot set Date) it is the request's date, and
    the Date line is left empty: x-amz-date is signed among the x-amz-* headers instead.
    """
    amz_date = request.headers.get("x-amz-date")
    date = amz_date if amz_date is not None else request.headers.get("date")
    if date is None:
        raise AuthError("incomplete", "AWS authentication requires a valid Date or x-amz-date header")
    signed_at = parse_http_date(date) or parse_basic_iso(date.strip())
    if signed_at is None:
        raise AuthError(
            "incomplete", f"AWS authentication requires a valid Date or x-amz-date header: '{date}'"
        )
    if abs(now - signed_at) > max_skew:
        raise AuthError(
            "skewed", "The difference between the request time and the current time is too large."
        )
    return "" if amz_date is not None else date.strip()


def s3_string_to_sign(
    request: HttpRequest, date_line: str, *, presigned: bool, virtual_host_bucket: str | None = None
) -> str:
    """METHOD, Content-MD5, Content-Type, date, canonicalized x-amz-* headers, then the resource."""
    query = request.query_params() if presigned else []
    lines = [
        request.method.upper(),
        _s3_standard_header(request, query, "content-md5"),
        _s3_standard_header(request, query, "content-type"),
        date_line,
    ]
    amz = canonical_amz_headers(request, query)
    return "\n".join(lines) + "\n" + amz + canonical_resource(request, virtual_host_bucket)


def _s3_standard_header(request: HttpRequest, query: list[tuple[str, str]], name: str) -> str:
    value = request.headers.get(name)
    if value is None:
        # Presigned URLs made by botocore carry Content-Type and Content-MD5 as query parameters.
        value = next((v for k, v in query if k.lower() == name), "")
    return value.strip()


def canonical_amz_headers(request: HttpRequest, query: list[tuple[str, str]]) -> str:
    """`name:value\\n` per x-amz-* header, names lower-cased and sorted, repeats comma-joined.

    For presigned URLs, x-amz-* query parameters (e.g. x-amz-security-token) count as headers.
    """
    collected: dict[str, list[str]] = {}
    for name, value in [*request.headers.items(), *query]:
        lowered = name.lower()
        if lowered.startswith("x-amz-"):
            # Unfold: a value's line breaks and surrounding blanks become nothing / one space.
            collected.setdefault(lowered, []).append(" ".join(value.split()))
    return "".join(f"{name}:{','.join(collected[name])}\n" for name in sorted(collected))


def canonical_resource(request: HttpRequest, virtual_host_bucket: str | None = None) -> str:
    """/bucket/key as sent (still percent-encoded), then the signed sub-resources, sorted.

    Sub-resource values are decoded (`?versionId=a%2Fb` signs `versionId=a/b`); other query
    parameters are not part of the signature at all.
    """
    path = request.raw_path or "/"
    if virtual_host_bucket:
        path = f"/{virtual_host_bucket}{path}"
    subresources = []
    for part in request.query_string.split("&"):
        name, equals, value = part.partition("=")
        if name in S3_SUBRESOURCES:
            subresources.append((name, f"{name}={unquote(value)}" if equals else name))
    # Sorted by name only: a stable sort keeps repeated names in request order.
    subresources.sort(key=lambda item: item[0])
    if not subresources:
        return path
    return path + "?" + "&".join(text for _, text in subresources)


# -- shared ------------------------------------------------------------------------------------


def _first_values(params: list[tuple[str, str]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in params:
        first.setdefault(name, value)
    return first


def _compare_base64(expected: bytes, provided: str) -> None:
    """Compare digests, not text: base64 may come padded or not, or with '+' turned into ' '."""
    # Spaces first: a leading '+' that arrived as ' ' must not be stripped away as white space.
    text = provided.replace(" ", "+").strip()
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not hmac.compare_digest(expected, decoded):
        raise AuthError(
            "signature",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
