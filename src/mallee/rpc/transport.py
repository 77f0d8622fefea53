"""Internal rpc: small calls between components, sealed with the deployment key.

A request is `POST /internal/v1/<method>` with three headers: `X-Mallee-Contract` (the contract
version the caller speaks), `X-Mallee-Date` (unix seconds) and `X-Mallee-Nonce` (96 random bits,
hex). Its body is the JSON of a typed message (contract.py) sealed with AES-256-GCM (sealing.py),
bound to the path and those three headers, so nobody on the way can read or change any of them.
The callee refuses a date more than `MAX_SKEW` off its clock and a nonce it accepted before
(replay.py: shared by all the processes serving the port), and seals its answer, errors included,
bound to the request, with a nonce of its own in `X-Mallee-Nonce`. A request it cannot
authenticate is refused with a plain 403 JSON error (the caller may not hold the key); a caller
believes an unsealed answer only as such a refusal.
This module and `services/*/app.py` are the only places that know the web server (ASGI).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from mallee.core import metrics, open_transactions
from mallee.core.context import Headers, HttpRequest
from mallee.core.errors import CloudError
from mallee.rpc import replay, sealing
from mallee.rpc.contract import CONTRACT_HEADER, Handlers, Operation, Req, Resp, encode

PREFIX = "/internal/v1/"
MAX_SKEW = 60.0
MAX_BODY = 8 * 1024 * 1024
DATE_HEADER = "x-mallee-date"
NONCE_HEADER = "x-mallee-nonce"
SEALED = "application/octet-stream"
# What a callee answers in clear: refusals before it knew the request authentic. A caller believes
# no other code from an unsealed answer (anyone on the way could have written it).
PLAIN_CODES = frozenset(
    {
        "MethodNotAllowed",
        "RequestEntityTooLarge",
        "RequestTimeout",
        "MissingAuthenticationToken",
        "AuthFailure",
        "RequestTimeTooSkewed",
        "RequestReplayed",
        "RequestLimitExceeded",
    }
)

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# A front door that forwards a client's request to another component vouches for the client's
# address with this header: "<address> <unix time> <hmac>", keyed with the deployment key.
CLIENT_HEADER = "x-mallee-client"


def client_assertion(key: bytes, address: str, now: float | None = None) -> str:
    stamp = str(int(now if now is not None else time.time()))
    mac = hmac.new(key, f"{address}\n{stamp}".encode(), hashlib.sha256).hexdigest()
    return f"{address} {stamp} {mac}"


def trusted_client(key: bytes, value: str | None, max_age: float = 300) -> str | None:
    """The client address a front door vouched for, or None."""
    if not value:
        return None
    try:
        address, stamp, mac = value.split(" ")
        fresh = abs(time.time() - int(stamp)) <= max_age
    except ValueError:
        return None
    expected = hmac.new(key, f"{address}\n{stamp}".encode(), hashlib.sha256).hexdigest()
    # Compared as bytes: any public client can send this header, with any characters in it.
    return address if fresh and hmac.compare_digest(expected.encode(), mac.encode()) else None


class RpcError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def load_key(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


class Client:
    """A caller of one component's rpc operations (see rpc/contract.py)."""

    def __init__(self, base_url: str, key: bytes, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(self, operation: Operation[Req, Resp], request: Req) -> Resp:
        """Send `request`, return the callee's answer decoded (and so checked) as the operation's
        response type. Raises RpcError for an error answer, OSError when the callee is unreachable."""
        name = f"{operation.api.name}.{operation.name}"
        open_transactions.refuse_inside(f"rpc {name}")
        try:
            return self._call(operation, request)
        except RpcError as err:
            metrics.rpc_error(name, err.code)
            raise
        except OSError as err:
            # urllib wraps a refused or timed-out connect in URLError (its `reason`)
            cause = getattr(err, "reason", err)
            metrics.rpc_error(name, "timeout" if isinstance(cause, TimeoutError) else "unreachable")
            raise

    def _call(self, operation: Operation[Req, Resp], request: Req) -> Resp:
        binding = sealing.Binding.new(PREFIX + operation.name, str(time.time()), operation.api.header)
        http = urllib.request.Request(
            self.base_url + binding.path,
            data=sealing.seal_request(self.key, binding, encode(request)),
            method="POST",
            headers={
                "Content-Type": SEALED,
                DATE_HEADER: binding.date,
                NONCE_HEADER: binding.nonce,
                CONTRACT_HEADER: binding.contract,
            },
        )
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as response:
                status, answer_nonce, answer = (
                    response.status,
                    response.headers.get(NONCE_HEADER),
                    response.read(),
                )
        except urllib.error.HTTPError as exc:
            status, answer_nonce, answer = exc.code, exc.headers.get(NONCE_HEADER), exc.read()
        if answer_nonce is None:
            raise _unsealed_refusal(status, answer)
        try:
            body = sealing.open_response(self.key, binding, status, answer_nonce, answer)
        except sealing.SealError as exc:
            raise RpcError(502, "AnswerNotAuthentic", f"{operation.name}: {exc}") from exc
        if status != 200:
            raise _error_of(status, body)
        try:
            return operation.decode_response(body)
        except msgspec.ValidationError as exc:
            raise RpcError(502, "MalformedAnswer", f"{operation.name}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise RpcError(502, "MalformedAnswer", f"{operation.name}: the answer is not JSON") from exc


def _unsealed_refusal(status: int, body: bytes) -> RpcError:
    """The error an answer without a seal stands for: the callee's refusal of a request it could
    not authenticate, or (any other code, or a success) an answer nobody can vouch for."""
    err = _error_of(status, body)
    if status == 200 or err.code not in PLAIN_CODES:
        return RpcError(
            502 if status == 200 else status,
            "AnswerNotAuthentic",
            f"an answer without a seal: {status} {err.code}: {err.message}"[:500],
        )
    return err


def _error_of(status: int, body: bytes) -> RpcError:
    try:
        err = json.loads(body)
        return RpcError(status, str(err.get("code", "Error")), str(err.get("message", "")))
    except (ValueError, AttributeError):
        return RpcError(status, "Error", body[:200].decode("utf-8", "replace"))


def request_from_scope(scope: Scope) -> HttpRequest:
    """The public API's view of an ASGI request: raw path and query as sent (SigV4 signs them),
    headers, client address; the body is filled in by the caller, whole or as a stream."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    return HttpRequest(
        method=scope["method"],
        # Clients percent-encode paths; stray raw bytes are read as UTF-8 (what SigV4 signs).
        raw_path=raw_path.decode("utf-8", "replace").split("?", 1)[0],
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
        remote_addr=(scope.get("client") or ("", 0))[0],
    )


class BodyTimeout(Exception):
    """The client sent nothing of its body for the allowed time."""


REQUEST_TIMEOUT = (
    "Your socket connection to the server was not read from or written to within the timeout period. "
    "Idle connections will be closed."
)


async def receive_within(receive: Receive, seconds: float) -> dict[str, Any]:
    """The next ASGI message of a request body, or BodyTimeout after `seconds` without one.
    (A bare timer cancelling this task: asyncio.timeout costs ~4 µs a call, this ~2.5.)"""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await receive()
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise BodyTimeout(f"no part of the body came within {seconds:g} s") from None
        raise
    finally:
        timer.cancel()


def check_declared_length(scope: Scope, limit: int) -> None:
    """RequestEntityTooLarge at once for a body declared larger than `limit` (not read first)."""
    for name, value in scope["headers"]:  # the server gives names lower-cased
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise CloudError("RequestEntityTooLarge", f"The request body exceeds {limit} bytes.")


async def read_body(receive: Receive, limit: int, idle_seconds: float = 20.0) -> bytes:
    """The whole request body; CloudError RequestEntityTooLarge past `limit` bytes, RequestTimeout
    when the body pauses for `idle_seconds`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            message = await receive_within(receive, idle_seconds)
        except BodyTimeout:
            raise CloudError("RequestTimeout", REQUEST_TIMEOUT) from None
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise CloudError("RequestEntityTooLarge", f"The request body exceeds {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def send_response(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if not any(k.lower() == "content-length" for k, _ in headers):
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def serve_rpc(scope: Scope, receive: Receive, send: Send, key: bytes, handlers: Handlers) -> None:
    """Answer one rpc request: check its date, open its seal, refuse a replay, check its contract
    version, decode (and so check) its body as the operation's request, run the handler in a
    thread, answer its response sealed to the request."""
    path: str = scope["path"]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    binding: sealing.Binding | None = None  # set once the request is authentic: answers are sealed
    try:
        if scope["method"] != "POST":
            raise RpcError(405, "MethodNotAllowed", "rpc takes POST")
        binding, body = authentic_request(key, path, headers, await read_body(receive, MAX_BODY))
        bound = handlers.table.get(path[len(PREFIX) :])
        if bound is None:
            raise RpcError(404, "UnknownMethod", f"no rpc method {path}")
        operation, fn = bound
        refusal = operation.api.refusal(headers.get(CONTRACT_HEADER))
        if refusal is not None:
            raise RpcError(409, "ContractVersionMismatch", f"{operation.name}: {refusal}")
        try:
            request = operation.decode_request(body)
        except msgspec.ValidationError as exc:
            raise RpcError(400, "MalformedRequest", f"{operation.name}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise RpcError(400, "MalformedRequest", f"{operation.name}: the body is not JSON") from exc
        result = await asyncio.to_thread(fn, request)
        await _answer(send, key, binding, 200, encode(result))
    except (RpcError, CloudError) as err:
        payload = json.dumps({"code": err.code, "message": err.message}).encode()
        await _answer(send, key, binding, err.status, payload)
    except Exception:  # a handler's bug: its 500 is sealed too, and says which method failed
        log.exception("rpc %s failed", path)
        failed = {"code": "InternalError", "message": f"{path} failed; see the callee's log"}
        await _answer(send, key, binding, 500, json.dumps(failed).encode())


def authentic_request(
    key: bytes, path: str, headers: dict[str, str], sealed: bytes, now: float | None = None
) -> tuple[sealing.Binding, bytes]:
    """(what the request is bound to, its opened body), for a request sealed with `key`, recent,
    and not seen before; else RpcError (a plain 403 refusal, or 503 when too many to remember)."""
    date, nonce = headers.get(DATE_HEADER), headers.get(NONCE_HEADER)
    if not date or not nonce:
        raise RpcError(403, "MissingAuthenticationToken", "rpc request is not sealed")
    now = time.time() if now is None else now
    try:
        sent = float(date)
    except ValueError as exc:
        raise RpcError(403, "AuthFailure", "bad rpc date") from exc
    if not abs(now - sent) <= MAX_SKEW:  # also refuses nan
        raise RpcError(
            403,
            "RequestTimeTooSkewed",
            "rpc request too old, or the two hosts' clocks differ by over a minute",
        )
    binding = sealing.Binding(path, date, nonce, headers.get(CONTRACT_HEADER, ""))
    try:
        body = sealing.open_request(key, binding, sealed)
    except sealing.SealError as exc:
        raise RpcError(403, "AuthFailure", f"rpc request not authentic: {exc}") from None
    # Remembered while its date is in the window: a later copy is refused for its date.
    until = int(sent + MAX_SKEW) + 1
    try:
        first = replay.store().first_use(bytes.fromhex(nonce), until, int(now))
    except replay.StoreFull as exc:
        raise RpcError(503, "RequestLimitExceeded", f"too many rpc requests to remember: {exc}") from None
    if not first:
        raise RpcError(403, "RequestReplayed", "this rpc request (its nonce) was served already")
    return binding, body


async def _answer(send: Send, key: bytes, binding: sealing.Binding | None, status: int, body: bytes) -> None:
    """A JSON answer: sealed to its request when that was authentic, else in clear."""
    if binding is None:
        await send_response(send, status, [("content-type", "application/json")], body)
        return
    answer_nonce, sealed = sealing.seal_response(key, binding, status, body)
    await send_response(send, status, [("content-type", SEALED), (NONCE_HEADER, answer_nonce)], sealed)
