"""Internal rpc: small JSON-over-HTTP calls between components, signed with the deployment key.

A request is `POST /internal/v1/<method>` with a JSON body (a typed message, see contract.py) and
three headers: `X-Mallee-Contract` (the contract version the caller speaks), `X-Mallee-Date` (unix
seconds) and `X-Mallee-Signature` = hex HMAC-SHA256(key, "<path>\\n<date>\\n<sha256(body)>").
Signatures older than a minute are refused, so a captured request cannot be replayed later.
This module and `services/*/app.py` are the only places that know the web server (ASGI).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
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
from mallee.rpc.contract import CONTRACT_HEADER, Handlers, Operation, Req, Resp, encode

PREFIX = "/internal/v1/"
MAX_SKEW = 60.0
MAX_BODY = 8 * 1024 * 1024

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


def sign(key: bytes, path: str, date: str, body: bytes) -> str:
    text = f"{path}\n{date}\n{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def verify(key: bytes, path: str, date: str | None, signature: str | None, body: bytes) -> None:
    if not date or not signature:
        raise RpcError(403, "MissingAuthenticationToken", "rpc request is not signed")
    try:
        skew = abs(time.time() - float(date))
    except ValueError as exc:
        raise RpcError(403, "AuthFailure", "bad rpc date") from exc
    if skew > MAX_SKEW:
        raise RpcError(403, "AuthFailure", "rpc request too old or clock skewed")
    if not hmac.compare_digest(sign(key, path, date, body).encode(), signature.encode()):
        raise RpcError(403, "AuthFailure", "bad rpc signature")


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
        path = PREFIX + operation.name
        body = encode(request)
        date = str(time.time())
        http = urllib.request.Request(
            self.base_url + path,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Mallee-Date": date,
                "X-Mallee-Signature": sign(self.key, path, date, body),
                CONTRACT_HEADER: operation.api.header,
            },
        )
        try:
            with urllib.request.urlopen(http, timeout=self.timeout) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
                raise RpcError(exc.code, err.get("code", "Error"), err.get("message", "")) from exc
            except (ValueError, AttributeError):
                raise RpcError(exc.code, "Error", str(exc)) from exc
        try:
            return operation.decode_response(answer)
        except msgspec.ValidationError as exc:
            raise RpcError(502, "MalformedAnswer", f"{operation.name}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise RpcError(502, "MalformedAnswer", f"{operation.name}: the answer is not JSON") from exc


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
    """Answer one rpc request: verify its signature and contract version, decode (and so check) its
    body as the operation's request, run the handler in a thread, answer its response."""
    path: str = scope["path"]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        if scope["method"] != "POST":
            raise RpcError(405, "MethodNotAllowed", "rpc takes POST")
        body = await read_body(receive, MAX_BODY)
        verify(key, path, headers.get("x-mallee-date"), headers.get("x-mallee-signature"), body)
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
        await send_response(send, 200, [("content-type", "application/json")], encode(result))
    except (RpcError, CloudError) as err:
        status = err.status
        payload = json.dumps({"code": err.code, "message": err.message}).encode()
        await send_response(send, status, [("content-type", "application/json")], payload)
