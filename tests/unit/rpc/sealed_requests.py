"""rpc requests as a caller seals them, served through serve_rpc as the web server would pass
them, and their answers opened as the caller would (helpers of the rpc unit tests)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import uvicorn

from mallee.rpc import sealing
from mallee.rpc.contract import CONTRACT_HEADER, Handlers, Message, Operation, encode
from mallee.rpc.transport import DATE_HEADER, NONCE_HEADER, PREFIX, serve_rpc

KEY = b"k" * 32


@dataclass(frozen=True)
class Sealed:
    """One request on the wire: what it is bound to, and its sealed body."""

    binding: sealing.Binding
    body: bytes

    def scope(self) -> dict[str, Any]:
        headers = [
            (DATE_HEADER.encode(), self.binding.date.encode()),
            (NONCE_HEADER.encode(), self.binding.nonce.encode()),
        ]
        if self.binding.contract:  # none: a caller that named no contract
            headers.append((CONTRACT_HEADER.encode(), self.binding.contract.encode()))
        return {"type": "http", "method": "POST", "path": self.binding.path, "headers": headers}

    def changed(self, **fields: str) -> Sealed:
        """The same sealed body with some of its binding's fields changed in transit."""
        return Sealed(replace(self.binding, **fields), self.body)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def nonce(self) -> str | None:
        value = self.headers.get(NONCE_HEADER.encode())
        return value.decode() if value is not None else None


def sealed(
    method: str,
    body: bytes,
    contract: str,
    key: bytes = KEY,
    date: str | None = None,
) -> Sealed:
    binding = sealing.Binding.new(PREFIX + method, date or str(time.time()), contract)
    return Sealed(binding, sealing.seal_request(key, binding, body))


def sealed_message(operation: Operation[Any, Any], message: Message, key: bytes = KEY) -> Sealed:
    return sealed(operation.name, encode(message), operation.api.header, key)


def serve(handlers: Handlers, request: Sealed, key: bytes = KEY) -> Answer:
    return serve_scope(handlers, request.scope(), request.body, key)


def serve_scope(handlers: Handlers, scope: dict[str, Any], body: bytes, key: bytes = KEY) -> Answer:
    """One request through serve_rpc, as the web server would pass it."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(serve_rpc(scope, receive, send, key, handlers))
    return Answer(sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"])


def opened(answer: Answer, request: Sealed, key: bytes = KEY) -> tuple[int, Any]:
    """(status, JSON) of an answer sealed to `request` (SealError if it is not)."""
    assert answer.nonce is not None, f"an unsealed answer: {answer}"
    body = sealing.open_response(key, request.binding, answer.status, answer.nonce, answer.body)
    return answer.status, json.loads(body)


def refusal(answer: Answer) -> tuple[int, str]:
    """(status, code) of an answer in clear (a refusal before the request was authentic)."""
    assert answer.nonce is None, "a refusal in clear has no seal"
    return answer.status, json.loads(answer.body)["code"]


@contextmanager
def running(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a loopback port, in a thread; its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
