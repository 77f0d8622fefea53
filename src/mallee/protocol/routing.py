"""Which API a request on the one public endpoint is for.

In order: the service named in the SigV4 credential scope, then the Eucalyptus-style path prefix,
then the request's shape (an `Action=` form is EC2, IAM or STS, told apart by the action and the
`Version`; anything else is S3's REST API).
"""

from __future__ import annotations

import contextlib

from mallee.core.context import HttpRequest
from mallee.core.errors import CloudError
from mallee.protocol import auth
from mallee.protocol.auth import SignatureInfo
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

_API_VERSIONS = {"2016-11-15": "ec2", "2010-05-08": "iam", "2011-06-15": "sts"}


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


def route(request: HttpRequest, info: SignatureInfo | None, s3_domain: str = "") -> str:
    if virtual_host_bucket(request, s3_domain) is not None:
        return "s3"
    if info is not None and info.service:
        if info.service not in SERVICES:
            raise CloudError(
                "InvalidAction", f"Mallee does not serve the '{info.service}' API on this endpoint."
            )
        return info.service
    found = path_prefix(request.raw_path)
    if found is not None:
        return found[1]
    action, version = _action_and_version(request)
    if action is None:
        return "s3"
    if version in _API_VERSIONS:
        return _API_VERSIONS[version]
    for service in ("ec2", "iam", "sts"):
        if action in load_service(service).operation_names:
            return service
    return "ec2"  # unknown action: let the EC2 parser answer InvalidAction


def _action_and_version(request: HttpRequest) -> tuple[str | None, str | None]:
    if request.method not in ("GET", "POST"):
        return None, None
    action = version = None
    if request.method == "POST":
        try:  # strict first: the parser asks the same, and its answer is cached
            params = request.form_params()
        except UnicodeDecodeError:
            # A body that is not UTF-8 is still routed by its Action and Version (to the parser of
            # its service, which refuses it), not taken for an S3 request.
            params = request.form_params(errors="replace")
    else:
        params = request.query_params()
    for key, value in params:
        if key == "Action":
            action = value
        elif key == "Version":
            version = value
    return action, version


def service_from_head(request: HttpRequest, s3_domain: str = "") -> str:
    """The service whose error shape answers a request refused from its head alone (no body read,
    maybe not even a whole head): S3, else the service it is signed for or addressed to, else EC2."""
    if is_s3_from_head(request, s3_domain):
        return "s3"
    with contextlib.suppress(auth.AuthError):
        info = auth.extract(request)
        if info is not None and info.service in SERVICES:
            return info.service
    found = path_prefix(request.raw_path)
    return found[1] if found is not None else "ec2"


def is_s3_from_head(request: HttpRequest, s3_domain: str = "") -> bool:
    """True when the request line and headers alone show an S3 request (its body need not be read
    to route it); False for the query APIs and whenever the body must be read to tell.
    `s3_domain`: with virtual-hosted-style addressing on, any request to `<bucket>.<s3_domain>`."""
    if virtual_host_bucket(request, s3_domain) is not None:
        return True
    try:
        info = auth.extract(request)
    except auth.AuthError:
        return False  # let the gateway answer the malformed signature
    if info is not None and info.service:
        return info.service == "s3"
    found = path_prefix(request.raw_path)
    if found is not None:
        return found[1] == "s3"
    if request.method not in ("GET", "POST"):
        return True  # the query APIs take only GET and POST
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if request.method == "POST" and ctype == "application/x-www-form-urlencoded":
        return False
    return not any(key == "Action" for key, _ in request.query_params())
