"""The public API's request chain: route -> authenticate -> parse -> authorize -> dispatch -> serialize.

Framework-free and synchronous: `services/clc/app.py` feeds it `HttpRequest`s from the ASGI server.
Identity (who owns an access key, what they may do) is a port the CLC implements, so the chain itself
knows nothing of the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Protocol

from mallee.core import clock, ids, metrics
from mallee.core.context import HttpRequest, HttpResponse, Principal, RequestContext
from mallee.core.errors import CloudError
from mallee.protocol import auth, parser, routing, serializer
from mallee.protocol.auth import AuthError
from mallee.protocol.dispatch import Operation, Registry
from mallee.protocol.specs import load_service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credential:
    principal: Principal
    secret_key: str


class IdentityPort(Protocol):
    def resolve(self, access_key_id: str, session_token: str | None) -> Credential:
        """The identity behind a key. Raises AuthError kinds "unknown-key", "inactive-key",
        "expired-token" or "invalid-token"."""

    def authorize(self, ctx: RequestContext, operation: Operation) -> None:
        """Raise CloudError (UnauthorizedOperation / AccessDenied) unless the caller may run it.
        Also settles `ctx.account_id` (the account acted on) from Eucalyptus' DelegateAccount."""


# (service family, AuthError kind) -> (AWS code, message). EC2 answers AuthFailure where the query
# APIs say SignatureDoesNotMatch / InvalidClientTokenId; S3 has its own vocabulary.
_QUERY_ERRORS = {
    "missing": ("MissingAuthenticationToken", "Request is missing Authentication Token"),
    "incomplete": ("IncompleteSignature", "{m}"),
    "signature": (
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method.",
    ),
    "unknown-key": ("InvalidClientTokenId", "The security token included in the request is invalid."),
    "inactive-key": ("InvalidClientTokenId", "The security token included in the request is invalid."),
    "invalid-token": ("InvalidClientTokenId", "The security token included in the request is invalid."),
    "expired-token": ("ExpiredToken", "The security token included in the request is expired"),
    "expired": ("RequestExpired", "{m}"),
    "skewed": ("SignatureDoesNotMatch", "{m}"),
    "unsupported": ("IncompleteSignature", "{m}"),
}
_EC2_ERRORS = {
    **_QUERY_ERRORS,
    "incomplete": ("AuthFailure", "{m}"),
    "signature": ("AuthFailure", "AWS was not able to validate the provided access credentials"),
    "unknown-key": ("AuthFailure", "AWS was not able to validate the provided access credentials"),
    "inactive-key": ("AuthFailure", "AWS was not able to validate the provided access credentials"),
    "invalid-token": ("AuthFailure", "AWS was not able to validate the provided access credentials"),
    "expired-token": ("RequestExpired", "The security token included in the request is expired"),
    "skewed": ("RequestExpired", "{m}"),
    "unsupported": ("AuthFailure", "{m}"),
}
_S3_ERRORS = {
    "missing": ("AccessDenied", "Access Denied"),
    "incomplete": ("AuthorizationHeaderMalformed", "{m}"),
    "signature": (
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "unknown-key": (
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    "inactive-key": (
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    "invalid-token": ("InvalidToken", "The provided token is malformed or otherwise invalid."),
    "expired-token": ("ExpiredToken", "The provided token has expired."),
    "expired": ("AccessDenied", "Request has expired"),
    "skewed": (
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
    ),
    "unsupported": ("InvalidRequest", "{m}"),
}
_S3_STATUS = {"AuthorizationHeaderMalformed": 400, "InvalidToken": 400, "RequestTimeTooSkewed": 403}


def _refuse_ambiguity(request: HttpRequest) -> None:
    """Headers that say two things are refused, not read one way (of two Authorization headers,
    which one signs? of two Hosts, which bucket?)."""
    if not request.headers.has_repeats():
        return
    for name in ("authorization", "host"):
        if len(request.headers.get_all(name)) > 1:
            raise CloudError("InvalidRequest", f"The request has more than one {name.title()} header.")


def auth_error(service: str, err: AuthError) -> CloudError:
    table = _S3_ERRORS if service == "s3" else _EC2_ERRORS if service == "ec2" else _QUERY_ERRORS
    code, template = table.get(err.kind, table["signature"])
    status = _S3_STATUS.get(code) if service == "s3" else None
    if code == "ExpiredToken" and service == "iam":
        status = 403
    return CloudError(code, template.format(m=err.message).strip(), status)


UnitOfWork = Callable[[RequestContext, Operation], AbstractContextManager[object]]


def _no_unit_of_work(ctx: RequestContext, operation: Operation) -> AbstractContextManager[object]:
    return nullcontext()


class Gateway:
    def __init__(
        self,
        registries: Mapping[str, Registry],
        identity: IdentityPort,
        region: str,
        unit_of_work: UnitOfWork = _no_unit_of_work,
        s3_domain: str = "",
    ) -> None:
        self.registries = registries
        self.identity = identity
        self.region = region
        # Opened around each handler call: the owning service's transaction (it sets ctx.session).
        self.unit_of_work = unit_of_work
        self.s3_domain = s3_domain  # virtual-hosted-style S3 (`<bucket>.<s3_domain>`); "" = off

    def handle(self, request: HttpRequest, **context: Any) -> HttpResponse:
        started = time.perf_counter()
        ctx = RequestContext(request=request, request_id=ids.request_id(), region=self.region, **context)
        service, response = self._answer(ctx)
        metrics.api_requests.observe(service, ctx.operation or "unknown", response.status, started)
        return response

    def _answer(self, ctx: RequestContext) -> tuple[str, HttpResponse]:
        """The API whose request it is (for an error before that is known: the shape of its
        answer) and the answer."""
        request = ctx.request
        service = "ec2"
        try:
            route = routing.classify(request, self.s3_domain)
            service = route.shape
            _refuse_ambiguity(request)
            if route.signature_error is not None:
                raise AuthError(route.signature_error.kind, route.signature_error.message)
            if route.foreign_service is not None:
                raise CloudError(
                    "InvalidAction",
                    f"Mallee does not serve the '{route.foreign_service}' API on this endpoint.",
                )
            ctx.service = service
            return service, self._handle(ctx, service, route)
        except AuthError as err:
            return service, self._error(ctx, service, auth_error(service, err))
        except CloudError as err:
            return service, self._error(ctx, service, err)
        except Exception:
            log.exception("request %s failed", ctx.request_id)
            internal = CloudError("InternalError", "An internal error has occurred.")
            return service, self._error(ctx, service, internal)

    def _handle(self, ctx: RequestContext, service: str, route: routing.Route) -> HttpResponse:
        request = ctx.request
        model = load_service(service)
        vhost = route.virtual_host_bucket
        info = route.signature
        if info is None:
            if service != "s3":
                raise AuthError("missing", "Request is missing Authentication Token")
        else:
            credential = self.identity.resolve(info.access_key_id, info.session_token)
            auth.verify(request, info, credential.secret_key, clock.now(), virtual_host_bucket=vhost)
            ctx.principal = credential.principal
            ctx.secret_key = credential.secret_key
        if route.prefix:  # parse as if the API sat at the root, as clients address AWS
            request = replace(request, raw_path=route.path)
        operation_model, params = parser.parse_request(model, request, virtual_host_bucket=vhost)
        ctx.request.body = request.body  # the parser may have read a streamed XML body
        ctx.operation = operation_model.name
        ctx.params = params
        operation = self.registries[service].get(operation_model.name) if service in self.registries else None
        if operation is None:
            raise CloudError(
                "NotImplemented", f"{operation_model.name} is not implemented by Mallee yet.", status=501
            )
        self.identity.authorize(ctx, operation)
        if params.get("DryRun") is True:  # EC2's DryRun: the caller may; nothing is done
            raise CloudError("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        with self.unit_of_work(ctx, operation):
            output = operation.handler(ctx, params) or {}
        return serializer.serialize_response(model, operation_model, output, ctx.request_id)

    def _error(self, ctx: RequestContext, service: str, err: CloudError) -> HttpResponse:
        if err.status >= 500:
            log.warning("%s %s -> %s %s", ctx.request_id, ctx.operation, err.code, err.message)
        response = serializer.serialize_error(load_service(service), err, ctx.request_id)
        response.headers += err.headers
        return response
