"""Bucket configuration: tagging (Put/Get/DeleteBucketTagging) and CORS (Put/Get/DeleteBucketCors),
and CORS itself: `preflight` answers `OPTIONS /bucket/key` from the bucket's rules, and
`cors_headers` adds Access-Control-* headers to the answer of a request that carries an Origin.
Both are called by `app` (OPTIONS is not a botocore operation, so the gateway never sees it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from mallee.core import ids
from mallee.core.context import HttpRequest, HttpResponse, RequestContext
from mallee.core.errors import CloudError
from mallee.protocol import routing
from mallee.protocol.serializer import serialize_error
from mallee.protocol.specs import load_service
from mallee.services.walrus.apis import S3
from mallee.services.walrus.buckets import get_bucket
from mallee.services.walrus.checks import MAX_BUCKET_TAGS, check_tags, malformed_xml
from mallee.services.walrus.tables import Bucket

MAX_CORS_RULES = 100
CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
_NOT_ALLOWED = (
    "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, "
    "request method / Access-Control-Request-Method or Access-Control-Request-Headers are not "
    "whitelisted by the resource's CORS spec."
)


# --- tagging ---


@S3.operation()
def put_bucket_tagging(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    bucket.tags = json.dumps(check_tags((p.get("Tagging") or {}).get("TagSet"), MAX_BUCKET_TAGS))
    return None


@S3.operation()
def get_bucket_tagging(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    tags = json.loads(bucket.tags or "[]")
    if not tags:
        raise CloudError("NoSuchTagSet", "The TagSet does not exist", 404)
    return {"TagSet": tags}


@S3.operation()
def delete_bucket_tagging(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).tags = None
    return None


# --- CORS configuration ---


def _check_cors(config: Any) -> list[dict[str, Any]]:
    rules = (config or {}).get("CORSRules")
    if not isinstance(rules, list) or not rules:
        raise malformed_xml()
    if len(rules) > MAX_CORS_RULES:
        raise CloudError(
            "InvalidRequest", f"The CORS configuration cannot have more than {MAX_CORS_RULES} rules"
        )
    out = []
    for rule in rules:
        methods, origins = rule.get("AllowedMethods"), rule.get("AllowedOrigins")
        if not methods or not origins:
            raise malformed_xml()
        for method in methods:
            if method not in CORS_METHODS:
                raise CloudError(
                    "InvalidRequest",
                    f"Found unsupported HTTP method in CORS config. Unsupported method is {method}",
                )
        for origin in origins:
            if origin.count("*") > 1:
                raise CloudError(
                    "InvalidRequest", f'AllowedOrigin "{origin}" can not have more than one wildcard.'
                )
        for header in rule.get("AllowedHeaders") or []:
            if header.count("*") > 1:
                raise CloudError(
                    "InvalidRequest", f'AllowedHeader "{header}" can not have more than one wildcard.'
                )
        if rule.get("MaxAgeSeconds") is not None and int(rule["MaxAgeSeconds"]) < 0:
            raise malformed_xml()
        if rule.get("ID") is not None and len(rule["ID"]) > 255:
            raise CloudError("InvalidArgument", "ID length should not exceed allowed limit of 255")
        out.append({k: v for k, v in rule.items() if v is not None})
    return out


@S3.operation()
def put_bucket_cors(ctx: RequestContext, p: dict[str, Any]) -> None:
    bucket = get_bucket(ctx, p["Bucket"])
    bucket.cors = json.dumps(_check_cors(p.get("CORSConfiguration")))
    return None


@S3.operation()
def get_bucket_cors(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    bucket = get_bucket(ctx, p["Bucket"])
    if not bucket.cors:
        raise CloudError("NoSuchCORSConfiguration", "The CORS configuration does not exist", 404)
    return {"CORSRules": json.loads(bucket.cors)}


@S3.operation()
def delete_bucket_cors(ctx: RequestContext, p: dict[str, Any]) -> None:
    get_bucket(ctx, p["Bucket"]).cors = None
    return None


# --- CORS requests ---


def _wildcard(pattern: str, value: str, *, ignore_case: bool) -> bool:
    flags = re.IGNORECASE if ignore_case else 0
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value, flags) is not None


def _match(
    rules: list[dict[str, Any]], origin: str, method: str, headers: list[str]
) -> dict[str, Any] | None:
    """The first rule allowing this origin, method and every one of the request headers."""
    for rule in rules:
        if not any(_wildcard(o, origin, ignore_case=False) for o in rule.get("AllowedOrigins", [])):
            continue
        if method not in rule.get("AllowedMethods", []):
            continue
        allowed = rule.get("AllowedHeaders") or []
        if all(any(_wildcard(a, h, ignore_case=True) for a in allowed) for h in headers):
            return rule
    return None


def _allow_headers(rule: dict[str, Any], origin: str) -> list[tuple[str, str]]:
    wildcard = "*" in rule.get("AllowedOrigins", [])
    headers = [
        ("Access-Control-Allow-Origin", "*" if wildcard else origin),
        ("Access-Control-Allow-Methods", ", ".join(rule["AllowedMethods"])),
    ]
    if not wildcard:
        headers.append(("Access-Control-Allow-Credentials", "true"))
    if rule.get("ExposeHeaders"):
        headers.append(("Access-Control-Expose-Headers", ", ".join(rule["ExposeHeaders"])))
    if rule.get("MaxAgeSeconds") is not None:
        headers.append(("Access-Control-Max-Age", str(rule["MaxAgeSeconds"])))
    return headers


def _forbidden(message: str, status: int = 403, code: str = "AccessForbidden") -> HttpResponse:
    return serialize_error(load_service("s3"), CloudError(code, message, status), ids.request_id())


def preflight(
    request: HttpRequest, load_bucket: Callable[[str], Bucket | None], s3_domain: str = ""
) -> HttpResponse:
    """Answer a CORS preflight (`OPTIONS`) from the bucket's CORS rules, as S3 does."""
    origin = request.headers.get("origin")
    method = request.headers.get("access-control-request-method")
    if not origin:
        return _forbidden("Insufficient information. Origin request header needed.", 400, "BadRequest")
    if not method:
        return _forbidden(f"Invalid Access-Control-Request-Method: {method}", 400, "BadRequest")
    name = routing.classify(request, s3_domain).bucket
    bucket = load_bucket(name) if name else None
    if bucket is None:
        return _forbidden("CORSResponse: Bucket not found", 403)
    if not bucket.cors:
        return _forbidden("CORSResponse: CORS is not enabled for this bucket.")
    requested = [
        h.strip().lower()
        for h in (request.headers.get("access-control-request-headers") or "").split(",")
        if h.strip()
    ]
    rule = _match(json.loads(bucket.cors), origin, method, requested)
    if rule is None:
        return _forbidden(_NOT_ALLOWED)
    headers = _allow_headers(rule, origin)
    if requested:
        headers.append(("Access-Control-Allow-Headers", ", ".join(requested)))
    headers.append(("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"))
    headers.append(("x-amz-request-id", ids.request_id()))
    return HttpResponse(200, headers, b"")


def cors_headers(request: HttpRequest, bucket: Bucket | None) -> list[tuple[str, str]]:
    """The Access-Control-* headers for an actual request carrying Origin ([] when no rule allows it)."""
    origin = request.headers.get("origin")
    if not origin or bucket is None or not bucket.cors:
        return []
    rule = _match(json.loads(bucket.cors), origin, request.method, [])
    if rule is None:
        return []
    return [
        *_allow_headers(rule, origin),
        ("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"),
    ]
