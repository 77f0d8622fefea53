"""Browser-based uploads (S3's POST Object): `POST /bucket` with a `multipart/form-data` body.

The form carries the key (`${filename}` is replaced by the uploaded file's name), a base64 policy
document (expiration and conditions every other field must meet) signed with SigV4 (`x-amz-*`
fields) or SigV2 (`AWSAccessKeyId`, `signature`), other object settings (`acl`, `Content-Type`,
`x-amz-meta-*`, `success_action_status` / `success_action_redirect`...) and, last, the `file`.
Fields before the file are read into memory up to a small limit; the file streams into the object
store through PutObject's own handler, so quotas, ACLs and versioning work as for PutObject.
Not a botocore operation: the Walrus app sends such requests here instead of to the gateway.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from mallee.core import clock, ids, metrics
from mallee.core.context import BodyStream, Headers, HttpRequest, HttpResponse, RequestContext
from mallee.core.errors import CloudError
from mallee.protocol import routing, serializer, sigv4
from mallee.protocol.auth import AuthError
from mallee.protocol.dispatch import Operation
from mallee.protocol.gateway import Gateway, auth_error
from mallee.protocol.specs import load_service
from mallee.protocol.xmlcodec import Element
from mallee.services.walrus.buckets import read_bucket
from mallee.services.walrus.objects import put_object
from mallee.services.walrus.streaming import ClientDisconnected

log = logging.getLogger(__name__)

MAX_FIELDS = 64 * 1024  # all form fields before the file, their part headers included
MAX_PART_HEADERS = 8 * 1024
READ_SIZE = 256 * 1024
DRAIN_LIMIT = 8 * 1024 * 1024  # after an early error, read this much more so the client hears it
# Fields the policy need not name (S3's list), besides any `x-ignore-*` field.
_UNCHECKED = {"x-amz-signature", "signature", "awsaccesskeyid", "file", "policy"}
# Form field -> PutObject input member.
_OBJECT_FIELDS = {
    "content-type": "ContentType",
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-encoding": "ContentEncoding",
    "content-language": "ContentLanguage",
    "expires": "Expires",
    "acl": "ACL",
    "x-amz-storage-class": "StorageClass",
    "x-amz-website-redirect-location": "WebsiteRedirectLocation",
}
_S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


def is_post_upload(request: HttpRequest, s3_domain: str = "") -> bool:
    """A POST of a form to a bucket (`/bucket`, or `/` of `<bucket>.<s3_domain>`)."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if request.method != "POST" or ctype != "multipart/form-data":
        return False
    route = routing.classify(request, s3_domain)
    return bool(route.bucket) and not route.has_key


def _policy_error(message: str) -> CloudError:
    return CloudError("AccessDenied", f"Invalid according to Policy: {message}", 403)


class _Form:
    """A multipart/form-data body read from a stream: fields one at a time, then the file as a
    stream of its own (`FileStream`). Only a bounded window of the body is ever held."""

    def __init__(self, stream: BodyStream, boundary: bytes) -> None:
        self.stream = stream
        self.delimiter = b"\r\n--" + boundary
        self.buffer = b"\r\n"  # the body starts with the first delimiter, less its CRLF
        self.eof = False
        self.finished = False  # the closing delimiter has been seen
        self.consumed = 0  # bytes read from the stream so far

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(READ_SIZE)
        if not chunk:
            self.eof = True
            return False
        self.consumed += len(chunk)
        self.buffer += chunk
        return True

    def _malformed(self) -> CloudError:
        return CloudError(
            "MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data."
        )

    def next_part(self, limit: int) -> tuple[dict[str, str], str | None] | None:
        """Move past the next delimiter: the part's (disposition params, content type), or None at
        the end. `limit`: how many bytes may be skipped or buffered on the way."""
        while True:
            at = self.buffer.find(self.delimiter)
            if at >= 0 and len(self.buffer) >= at + len(self.delimiter) + 2:
                break
            if len(self.buffer) > limit or not self._fill():
                raise self._malformed() if len(self.buffer) <= limit else _fields_too_large()
        after = self.buffer[at + len(self.delimiter) : at + len(self.delimiter) + 2]
        if after == b"--":
            self.finished = True
            self.buffer = b""
            return None
        self.buffer = self.buffer[at + len(self.delimiter) :]
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_PART_HEADERS or not self._fill():
                raise self._malformed()
        head = self.buffer[:end].decode("utf-8", "replace")
        self.buffer = self.buffer[end + 4 :]
        message = Message()
        for line in head.split("\r\n")[1:]:  # the first line is what followed the boundary
            name, sep, value = line.partition(":")
            if sep:
                message[name.strip()] = value.strip()
        disposition = message.get("content-disposition", "")
        params: dict[str, str] = {}
        for item in _split_params(disposition)[1:]:
            key, _, value = item.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            params[key.strip().lower()] = value
        if "name" not in params:
            raise self._malformed()
        return params, message.get("content-type")

    def value(self, limit: int) -> bytes:
        """The current part's whole content (a field), at most `limit` bytes."""
        while (at := self.buffer.find(self.delimiter)) < 0:
            if len(self.buffer) > limit + len(self.delimiter):
                raise _fields_too_large()
            if not self._fill():
                raise self._malformed()
        if at > limit:
            raise _fields_too_large()
        data = self.buffer[:at]
        self.buffer = self.buffer[at:]
        return data

    def read_file(self, size: int) -> bytes:
        """Up to `size` bytes of the current part (the file); b"" at its end."""
        while True:
            at = self.buffer.find(self.delimiter)
            if at >= 0:
                data, self.buffer = self.buffer[: min(at, size)], self.buffer[min(at, size) :]
                return data
            keep = len(self.delimiter) - 1  # a delimiter may begin in the last bytes
            if len(self.buffer) > keep:
                take = min(len(self.buffer) - keep, size)
                data, self.buffer = self.buffer[:take], self.buffer[take:]
                return data
            if not self._fill():
                raise self._malformed()

    def drain(self, limit: int) -> None:
        """Read (and drop) what is left of the body, up to `limit` bytes."""
        start = self.consumed
        while self.consumed - start < limit and self._fill():
            self.buffer = b""


def _split_params(header: str) -> list[str]:
    """`form-data; name="a;b"; filename="x"` -> ['form-data', 'name="a;b"', 'filename="x"']."""
    return [p.strip() for p in re.findall(r'(?:[^;"]|"(?:\\.|[^"\\])*")+', header)]


def _fields_too_large() -> CloudError:
    return CloudError(
        "MaxPostPreDataLengthExceeded",
        "Your POST request fields preceeding the upload file was too large.",
        400,
    )


@dataclass
class _Policy:
    expiration: _dt.datetime
    conditions: list[Any]
    length_range: tuple[int, int] | None = None


@dataclass
class _FileStream:
    """The form's file part as a request body stream, checked against content-length-range."""

    form: _Form
    length_range: tuple[int, int] | None
    size: int = 0
    done: bool = field(default=False)

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        data = self.form.read_file(READ_SIZE if size < 0 else size)
        self.size += len(data)
        low, high = self.length_range or (0, -1)
        if high >= 0 and self.size > high:
            raise CloudError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        if not data:
            self.done = True
            if self.size < low:
                raise CloudError(
                    "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size", 400
                )
        return data


def handle(gateway: Gateway, request: HttpRequest) -> HttpResponse:
    """Answer a browser-based upload (see the module's docstring); never raises."""
    started = time.perf_counter()
    response = _answer(gateway, request)
    metrics.api_requests.observe("s3", "PostObject", response.status, started)
    return response


def _answer(gateway: Gateway, request: HttpRequest) -> HttpResponse:
    ctx = RequestContext(request=request, request_id=ids.request_id(), region=gateway.region, service="s3")
    ctx.operation = "PostObject"
    bucket = routing.classify(request, gateway.s3_domain).bucket
    form: _Form | None = None
    try:
        boundary = _boundary(request)
        assert request.stream is not None, "the Walrus app always provides a stream"
        form = _Form(request.stream, boundary)
        return _upload(gateway, ctx, form, bucket)
    except AuthError as err:
        return _error(ctx, form, auth_error("s3", err), bucket)
    except CloudError as err:
        return _error(ctx, form, err, bucket)
    except ClientDisconnected:
        incomplete = CloudError("IncompleteBody", "The request body terminated unexpectedly", 400)
        return _error(ctx, None, incomplete, bucket)
    except Exception:
        log.exception("request %s failed", ctx.request_id)
        return _error(ctx, form, CloudError("InternalError", "An internal error has occurred."), bucket)


def _boundary(request: HttpRequest) -> bytes:
    message = Message()
    message["content-type"] = request.headers.get("content-type") or ""
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise CloudError("MalformedPOSTRequest", "The multipart/form-data request has no valid boundary.")
    return boundary.encode("latin-1")


def _error(ctx: RequestContext, form: _Form | None, err: CloudError, bucket: str) -> HttpResponse:
    if form is not None and not form.finished:
        with contextlib.suppress(Exception):  # the client went away: nobody hears the answer
            form.drain(DRAIN_LIMIT)
    response = serializer.serialize_error(load_service("s3"), err, ctx.request_id, resource=bucket or None)
    response.headers += err.headers
    return response


def _read_fields(form: _Form) -> tuple[dict[str, str], str]:
    """The fields before the file (names lower-cased; the first of repeated ones) and the file's name."""
    fields: dict[str, str] = {}
    budget = MAX_FIELDS
    while True:
        part = form.next_part(budget)
        if part is None:
            raise CloudError("InvalidArgument", "POST requires exactly one file upload per request.")
        params, _ctype = part
        name = params["name"].lower()
        if name == "file":
            return fields, params.get("filename", "")
        raw = form.value(budget)
        budget -= len(raw) + len(name) + 64
        if budget < 0:
            raise _fields_too_large()
        try:
            fields.setdefault(name, raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise CloudError("InvalidArgument", f"The form field {name} is not valid UTF-8.") from None


def _upload(gateway: Gateway, ctx: RequestContext, form: _Form, bucket: str) -> HttpResponse:
    fields, filename = _read_fields(form)
    policy = _authenticate(gateway, ctx, fields)
    if "key" not in fields:
        raise CloudError("InvalidArgument", "Bucket POST must contain a field named 'key'.")
    if policy is not None:
        _check_policy(policy, fields, bucket)
    key = fields["key"].replace("${filename}", filename.replace("\\", "/").rsplit("/", 1)[-1])
    params = _object_params(fields, bucket, key)
    ctx.params = params
    operation = Operation("PutObject", put_object)
    gateway.identity.authorize(ctx, operation)
    stream = _FileStream(form, policy.length_range if policy is not None else None)
    ctx.request = HttpRequest(
        method="PUT",
        raw_path=ctx.request.raw_path,
        query_string="",
        headers=Headers(),
        remote_addr=ctx.request.remote_addr,
        stream=stream,
    )
    with gateway.unit_of_work(ctx, operation):
        if ctx.account_id is None:  # anonymous, as the bucket allows: the bucket owner's object
            ctx.account_id = read_bucket(ctx, bucket).owner_account_id
        output = put_object(ctx, params) or {}
    if not form.finished:
        form.drain(DRAIN_LIMIT)  # the closing delimiter and any (ignored) fields after the file
    return _success(ctx, fields, bucket, key, output)


def _authenticate(gateway: Gateway, ctx: RequestContext, fields: dict[str, str]) -> _Policy | None:
    """Check the policy's signature and settle the caller; None for an anonymous upload."""
    document = fields.get("policy")
    algorithm = fields.get("x-amz-algorithm")
    if document is None:
        if algorithm or fields.get("awsaccesskeyid") or fields.get("x-amz-credential"):
            raise CloudError("InvalidArgument", "Bucket POST must contain a field named 'policy'.")
        return None
    token = fields.get("x-amz-security-token")
    if algorithm is not None:
        if algorithm != "AWS4-HMAC-SHA256":
            raise CloudError("InvalidArgument", f"Unsupported x-amz-algorithm: {algorithm}")
        credential, signature = fields.get("x-amz-credential"), fields.get("x-amz-signature")
        if not credential or not signature or not fields.get("x-amz-date"):
            raise CloudError(
                "InvalidArgument",
                "Bucket POST with x-amz-algorithm must contain x-amz-credential, x-amz-date "
                "and x-amz-signature.",
            )
        parts = credential.split("/")
        if len(parts) != 5 or parts[3] != "s3" or parts[4] != sigv4.TERMINATOR:
            raise CloudError("InvalidArgument", f"Invalid x-amz-credential: {credential}")
        key_id, date, region = parts[0], parts[1], parts[2]
        found = gateway.identity.resolve(key_id, token)
        key = sigv4.signing_key(found.secret_key, date, region, "s3")
        expected = sigv4.hmac_sha256(key, document.encode("utf-8")).hex()
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500).
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8")):
            raise AuthError("signature", "The request signature does not match.")
    else:
        key_id, signature = fields.get("awsaccesskeyid", ""), fields.get("signature", "")
        if not key_id or not signature:
            raise CloudError(
                "InvalidArgument", "Bucket POST must contain AWSAccessKeyId and signature fields."
            )
        found = gateway.identity.resolve(key_id, token)
        expected_v2 = hmac.new(found.secret_key.encode("utf-8"), document.encode("utf-8"), hashlib.sha1)
        try:
            sent = base64.b64decode(signature.replace(" ", "+").strip(), validate=True)
        except (binascii.Error, ValueError):
            sent = b""
        if not hmac.compare_digest(expected_v2.digest(), sent):
            raise AuthError("signature", "The request signature does not match.")
    ctx.principal = found.principal
    ctx.secret_key = found.secret_key
    return _parse_policy(document)


def _parse_policy(document: str) -> _Policy:
    try:
        parsed = json.loads(base64.b64decode(document.strip(), validate=False))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: nested too deeply
        raise CloudError("InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("expiration"), str):
        raise CloudError("InvalidPolicyDocument", "Invalid Policy: Policy missing expiration.")
    try:
        expiration = _dt.datetime.fromisoformat(parsed["expiration"].replace("Z", "+00:00"))
    except ValueError:
        raise CloudError(
            "InvalidPolicyDocument", f"Invalid Policy: Invalid 'expiration' value: '{parsed['expiration']}'"
        ) from None
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=_dt.UTC)
    conditions = parsed.get("conditions")
    if not isinstance(conditions, list):
        raise CloudError("InvalidPolicyDocument", "Invalid Policy: Policy missing conditions.")
    policy = _Policy(expiration, conditions)
    for condition in conditions:
        if isinstance(condition, list) and condition and str(condition[0]).lower() == "content-length-range":
            try:
                low, high = int(condition[1]), int(condition[2])
            except (IndexError, TypeError, ValueError, OverflowError):  # OverflowError: int(1e999)
                raise CloudError(
                    "InvalidPolicyDocument", "Invalid Policy: Invalid content-length-range condition."
                ) from None
            policy.length_range = (low, high)
    return policy


def _check_policy(policy: _Policy, fields: dict[str, str], bucket: str) -> None:
    if policy.expiration < clock.now().astimezone(_dt.UTC):
        raise _policy_error("Policy expired.")
    values = dict(fields)
    values["bucket"] = bucket
    named: set[str] = set()
    for condition in policy.conditions:
        if isinstance(condition, dict):
            for name, wanted in condition.items():
                named.add(name.lower())
                _require(name.lower(), "eq", str(wanted), values, condition)
        elif isinstance(condition, list) and len(condition) == 3:
            op = str(condition[0]).lower()
            if op == "content-length-range":
                continue
            target = str(condition[1])
            if op not in ("eq", "starts-with") or not target.startswith("$"):
                raise CloudError("InvalidPolicyDocument", f"Invalid Policy: Invalid condition: {condition}")
            name = target[1:].lower()
            named.add(name)
            _require(name, op, str(condition[2]), values, condition)
        else:
            raise CloudError("InvalidPolicyDocument", f"Invalid Policy: Invalid condition: {condition}")
    extra = [
        name
        for name in fields
        if name not in named and name not in _UNCHECKED and not name.startswith("x-ignore-")
    ]
    if extra:
        raise _policy_error("Extra input fields: " + ", ".join(extra))


def _require(name: str, op: str, wanted: str, values: dict[str, str], condition: Any) -> None:
    value = values.get(name)
    if op == "eq":
        ok = value == wanted
    elif name == "content-type" and value is not None:  # each of a comma-separated list
        ok = all(item.strip().startswith(wanted) for item in value.split(","))
    else:
        ok = (value or "").startswith(wanted) and (value is not None or wanted == "")
    if not ok:
        raise _policy_error("Policy Condition failed: " + json.dumps(condition))


def _object_params(fields: dict[str, str], bucket: str, key: str) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    for name, member in _OBJECT_FIELDS.items():
        if fields.get(name):
            params[member] = fields[name]
    if "Expires" in params:
        try:
            params["Expires"] = _dt.datetime.strptime(params["Expires"], "%a, %d %b %Y %H:%M:%S GMT")
        except ValueError:
            params.pop("Expires")  # S3 keeps unparseable Expires as given; we drop it
    metadata = {
        name[len("x-amz-meta-") :]: value for name, value in fields.items() if name.startswith("x-amz-meta-")
    }
    if metadata:
        params["Metadata"] = metadata
    return params


def _success(
    ctx: RequestContext, fields: dict[str, str], bucket: str, key: str, output: dict[str, Any]
) -> HttpResponse:
    etag = str(output.get("ETag", ""))
    headers = [("ETag", etag), ("x-amz-request-id", ctx.request_id)]
    if output.get("VersionId"):
        headers.append(("x-amz-version-id", str(output["VersionId"])))
    host = ctx.request.headers.get("host") or "localhost"
    location = f"http://{host}/{quote(bucket)}/{quote(key)}"
    headers.append(("Location", location))
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        parts = urlsplit(redirect)
        if parts.scheme in ("http", "https") and parts.netloc:
            extra = urlencode({"bucket": bucket, "key": key, "etag": etag})
            query = f"{parts.query}&{extra}" if parts.query else extra
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
            return HttpResponse(303, [*headers[:-1], ("Location", target)])
    status = fields.get("success_action_status", "")
    if status == "201":
        root = Element("PostResponse", attrs={"xmlns": _S3_NAMESPACE})
        root.add("Location", location)
        root.add("Bucket", bucket)
        root.add("Key", key)
        root.add("ETag", etag)
        return HttpResponse(201, [*headers, ("Content-Type", "application/xml")], root.to_bytes())
    return HttpResponse(200 if status == "200" else 204, headers)
