"""Which API a request on the one public endpoint is for, and where it is addressed: decided once
per request (`classify`) and read by everyone who asks — the front door's connection hand-off,
the CLC and Walrus apps, the door's error answers and the gateway.

In order: the Host `<bucket>.<s3_domain>` (S3, virtual-hosted style), the service named in the
SigV4 credential scope, the Eucalyptus-style path prefix, then the request's shape (an `Action=`
query or form is EC2, IAM or STS, told apart by the `Version` and the action; anything else is
S3's REST API). A URL-encoded form POST whose body has not been read yet is undecided: the body
names its API.

One request is no API's: an unsigned `GET /metrics` with no query string (and no bucket in its
Host) is Prometheus's scrape of the service's metrics (`METRICS`). Path-style S3 would read it as
an anonymous ListObjects of a bucket named "metrics"; every other request to that bucket (signed,
with any query, `/metrics/`, or virtual-hosted) is still S3's.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

from mallee.core.context import HttpRequest
from mallee.protocol import auth
from mallee.protocol.auth import AuthError, SignatureInfo
from mallee.protocol.specs import load_service

SERVICES = ("ec2", "iam", "sts", "s3")

# Eucalyptus' service paths: /services/compute, /services/Euare, /services/Tokens, /services/objectstorage.
PATH_PREFIXES = {
    "/services/compute": "ec2",
    "/services/euare": "iam",
    "/services/tokens": "sts",
    "/services/objectstorage": "s3",
    "/services/walrus": "s3",
}

METRICS = "metrics"  # not an API: the service's Prometheus page (core/metrics.py)
_METRICS_PATH = "/metrics"

_API_VERSIONS = {"2016-11-15": "ec2", "2010-05-08": "iam", "2011-06-15": "sts"}
_FORM = "application/x-www-form-urlencoded"


class Route(NamedTuple):
    """What a request's head (and a form's body) says about where it goes. (A named tuple: made
    for every request, it costs a fifth of a frozen dataclass.)"""

    # "ec2" | "iam" | "sts" | "s3" | METRICS; None: a form POST whose body, not read yet, decides.
    # A request whose signature cannot be read is routed as if unsigned (`signature_error`).
    service: str | None
    signature: SignatureInfo | None
    signature_error: AuthError | None
    foreign_service: str | None  # signed for an API this endpoint does not serve ("dynamodb")
    prefix: str  # the Eucalyptus service path it came under, as sent ("" for none)
    path: str  # the raw path without that prefix ("/" at least): what the API's parser reads
    virtual_host_bucket: str | None  # the bucket its Host names (`<bucket>.<s3_domain>`)
    bucket: str  # S3's addressing, path or virtual-hosted style: the bucket ("" for none) ...
    has_key: bool  # ... and whether an object key follows it

    @property
    def is_s3(self) -> bool:
        return self.service == "s3"

    @property
    def is_metrics(self) -> bool:
        return self.service == METRICS

    @property
    def shape(self) -> str:
        """The service whose error shape answers it: its own (S3's for the metrics page, which it
        would otherwise be), else (a form POST not read yet) the one it is signed for or
        addressed to, else EC2's (an S3 SDK cannot read EC2's errors)."""
        if self.service is not None:
            return "s3" if self.service == METRICS else self.service
        signed = self.signature.service if self.signature is not None else None
        if signed in SERVICES:
            return signed
        return PATH_PREFIXES[self.prefix.lower()] if self.prefix else "ec2"


def classify(request: HttpRequest, s3_domain: str = "") -> Route:
    """The request's `Route`, worked out once while what it depends on stays as it is (a form's
    body arriving changes it). `s3_domain`: virtual-hosted-style addressing on."""
    return request.route(s3_domain, lambda r: _classify(r, s3_domain))


def _classify(request: HttpRequest, s3_domain: str) -> Route:
    vhost = virtual_host_bucket(request, s3_domain)
    signature = error = None
    try:
        signature = auth.extract(request)
    except AuthError as err:
        error = err
    found = path_prefix(request.raw_path)
    prefix, prefix_service = found if found is not None else ("", None)
    path = request.raw_path[len(prefix) :] or "/"
    signed = signature.service if signature is not None else None
    foreign = signed if signed and signed not in SERVICES else None
    service: str | None
    if vhost is not None:
        service = "s3"
    elif signed:
        service = "ec2" if foreign else signed  # a foreign one is refused in EC2's shape
    elif signature is None and error is None and _asks_for_metrics(request):
        service = METRICS
    elif prefix_service is not None:
        service = prefix_service
    else:
        service = _by_shape(request)
    bucket, has_key = _s3_address(path, vhost)
    return Route(service, signature, error, foreign, prefix, path, vhost, bucket, has_key)


def _asks_for_metrics(request: HttpRequest) -> bool:
    """Prometheus's scrape: exactly `GET /metrics`, nothing after it (the caller saw no signature
    and no bucket in the Host)."""
    return request.raw_path == _METRICS_PATH and request.method == "GET" and not request.query_string


def _by_shape(request: HttpRequest) -> str | None:
    if request.method not in ("GET", "POST"):
        return "s3"  # the query APIs take only GET and POST
    is_form = request.method == "POST" and _content_type(request) == _FORM
    if request.method == "POST" and not is_form:
        params = request.query_params()
    elif is_form and _body_to_come(request):
        params = request.query_params()
        if not any(key == "Action" for key, _ in params):
            return None  # the body names the action
    elif is_form:
        try:  # strict first: the parser asks the same, and its answer is cached
            params = request.form_params()
        except UnicodeDecodeError:
            # A body that is not UTF-8 is still routed by its Action and Version (to the parser of
            # its service, which refuses it), not taken for an S3 request.
            params = request.form_params(errors="replace")
    else:
        params = request.query_params()
    action = version = None
    for key, value in params:
        if key == "Action":
            action = value
        elif key == "Version":
            version = value
    if action is None:
        return "s3"
    if version in _API_VERSIONS:
        return _API_VERSIONS[version]
    for service in ("ec2", "iam", "sts"):
        if action in load_service(service).operation_names:
            return service
    return "ec2"  # unknown action: let the EC2 parser answer InvalidAction


def _body_to_come(request: HttpRequest) -> bool:
    """Whether the head announces a body that has not been read (nor is being streamed)."""
    if request.body or request.stream is not None:
        return False
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length.strip() not in ("", "0"))


def _content_type(request: HttpRequest) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def _s3_address(path: str, vhost: str | None) -> tuple[str, bool]:
    if vhost is not None:
        return vhost, len(path) > 1
    bucket, _, key = path[1:].partition("/")
    return unquote(bucket) if "%" in bucket else bucket, bool(key)


def path_prefix(raw_path: str) -> tuple[str, str] | None:
    """(prefix, service) when the path starts with a Eucalyptus service path."""
    if raw_path[:10].lower() != "/services/":  # what every prefix starts with: most paths stop here
        return None
    lowered = raw_path.lower()
    for prefix, service in PATH_PREFIXES.items():
        if lowered == prefix or lowered.startswith(prefix + "/"):
            return raw_path[: len(prefix)], service
    return None


def virtual_host_bucket(request: HttpRequest, s3_domain: str) -> str | None:
    """The bucket a Host header `<bucket>.<s3_domain>[:port]` names (None: not such a host)."""
    if not s3_domain:
        return None
    host = (request.headers.get("host") or "").strip().lower()
    if host.startswith("["):
        return None  # an IPv6 literal names no bucket
    host = host.rsplit(":", 1)[0].rstrip(".")
    suffix = "." + s3_domain.strip(".").lower()
    if host.endswith(suffix) and len(host) > len(suffix):
        return host[: -len(suffix)]
    return None
