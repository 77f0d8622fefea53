"""Relaying one public-API request to the service that serves it, streaming both ways.

The front door relays S3 requests on a connection it kept to Walrus (see supervisor/handoff.py for
connections it hands over whole), and Walrus relays the query APIs on a handed-over connection back
to the CLC. The request goes on unchanged (the receiver checks the signature itself), with the
client's address in a header signed with the deployment key so the receiver can trust it for
aws:SourceIp conditions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mallee.core.context import HttpResponse
from mallee.rpc.transport import CLIENT_HEADER, Receive, Scope, Send, client_assertion, send_response

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection", b"upgrade", b"te"}
# The front door's own server already answered the client's `Expect: 100-continue`.
NOT_FORWARDED = HOP_BY_HOP | {b"expect"}


class Unreachable(Exception):
    """The service could not be reached, or went away before answering (nothing was sent to the
    client)."""


async def relay(
    scope: Scope,
    receive: Receive,
    send: Send,
    host: str,
    port: int,
    key: bytes,
    refusal: Callable[[], HttpResponse],
) -> None:
    """Relay one request to the service at host:port and its answer back; when the service cannot
    be reached, answer with `refusal()` (the API's own 503) and close the connection: the client's
    body may be unread, and its bytes would be read as the next request."""
    try:
        await _relay(scope, receive, send, host, port, key)
    except Unreachable as exc:
        log.warning("cannot reach %s:%d: %s", host, port, exc)
        response = refusal()
        headers = response.headers + [("connection", "close")]
        await send_response(send, response.status, headers, response.body)


async def _relay(scope: Scope, receive: Receive, send: Send, host: str, port: int, key: bytes) -> None:
    """Relay one request to the service at host:port and its answer back. The request body is sent while the
    answer is awaited, so an early answer (an error before the service read a large body) still reaches
    the client. Raises Unreachable when no answer came at all."""
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=READ_CHUNK)
    except OSError as exc:
        raise Unreachable(str(exc)) from exc
    sending = asyncio.create_task(_send_request(scope, receive, writer, key))
    try:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            while _status(head) < 200:  # skip interim (1xx) answers
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise Unreachable(str(exc)) from exc
        await _relay_response(head, reader, send)
    finally:
        # A body cut short by an early answer is expected, not an error: collect the sender's
        # outcome without waiting for it (and without swallowing a cancellation of this request).
        sending.add_done_callback(_collect)
        sending.cancel()
        writer.close()


def _collect(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _status(head: bytes) -> int:
    return int(head.split(b"\r\n", 1)[0].split(b" ", 2)[1])


async def _send_request(scope: Scope, receive: Receive, writer: asyncio.StreamWriter, key: bytes) -> None:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    target = raw_path + (b"?" + query if query else b"")
    headers: list[tuple[bytes, bytes]] = [
        (k, v)
        for k, v in scope["headers"]
        if k.lower() not in NOT_FORWARDED and k.lower() != CLIENT_HEADER.encode()
    ]
    has_length = any(k.lower() == b"content-length" for k, _ in headers)
    client = (scope.get("client") or ("", 0))[0]
    headers.append((CLIENT_HEADER.encode(), client_assertion(key, client).encode()))
    headers.append((b"connection", b"close"))
    method = scope["method"].encode()
    # A body without Content-Length came chunked from the client (uvicorn decoded it): re-frame it.
    body_expected = method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS") or has_length
    chunked = body_expected and not has_length
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    head = (
        b"%s %s HTTP/1.1\r\n" % (method, target)
        + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        + b"\r\n"
    )
    writer.write(head)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away")
        body: bytes = message.get("body", b"")
        if body:
            writer.write(b"%x\r\n%s\r\n" % (len(body), body) if chunked else body)
            await writer.drain()
        if not message.get("more_body"):
            break
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _relay_response(head: bytes, reader: asyncio.StreamReader, send: Send) -> None:
    lines = head[:-4].split(b"\r\n")
    status = _status(head)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() not in HOP_BY_HOP:
            headers.append((name.strip().lower(), value.strip()))
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    while True:
        chunk = await reader.read(READ_CHUNK)
        if not chunk:
            break
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
