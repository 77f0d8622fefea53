"""Internal rpc sealed with the deployment key: nobody on the way reads or changes a request or its
answer, an answer belongs to one request, and a request is served once, by whichever process of
the callee's host it reaches."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mallee.rpc import node, replay, sealing
from mallee.rpc.component import component_app
from mallee.rpc.contract import Api, Handlers, Message, Ok, Operation
from mallee.rpc.transport import Client, RpcError
from unit.rpc.sealed_requests import (
    KEY,
    Answer,
    Sealed,
    opened,
    refusal,
    running,
    sealed,
    sealed_message,
    serve,
    serve_scope,
)


class Said(Message):
    text: str


ECHO = Operation(Api("echo", 1), "echo", Said, Said)
MARKER = "#cloud-config secret-user-data-7f3a"  # what nobody on the way may read


def _echo(seen: list[str]) -> Handlers:
    handlers = Handlers()

    def echo(p: Said) -> Said:
        seen.append(p.text)
        return Said(text=p.text.upper())

    handlers.add(ECHO, echo)
    return handlers


@pytest.fixture(autouse=True)
def nonces(tmp_path: Path) -> Iterator[Path]:
    """This test's replay store, in a file as a service's processes share it."""
    path = tmp_path / "rpc.nonces"
    replay.keep_in(path)
    yield path
    replay.keep_in(None)


def test_a_sealed_request_is_served_and_its_answer_opens_to_the_response() -> None:
    seen: list[str] = []
    request = sealed_message(ECHO, Said(text="hello"))
    assert opened(serve(_echo(seen), request), request) == (200, {"text": "HELLO"})
    assert seen == ["hello"]


def _flip_last_byte(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 1])


@pytest.mark.parametrize(
    "change",
    [
        lambda r: Sealed(r.binding, _flip_last_byte(r.body)),  # the tag
        lambda r: Sealed(r.binding, bytes([r.body[0] ^ 0x80]) + r.body[1:]),  # the ciphertext
        lambda r: r.changed(path="/internal/v1/other"),
        lambda r: r.changed(date=str(float(r.binding.date) + 1)),  # still within the minute
        lambda r: r.changed(nonce=sealing.nonce()),
        lambda r: r.changed(contract="echo/2"),
        lambda r: r.changed(nonce=r.binding.nonce.upper()),  # the same bytes, spelled otherwise
    ],
    ids=["tag", "body", "path", "date", "nonce", "contract", "nonce-spelling"],
)
def test_a_request_changed_in_transit_is_refused_in_clear(change: Any) -> None:
    seen: list[str] = []
    request = change(sealed_message(ECHO, Said(text="x")))
    assert refusal(serve(_echo(seen), request)) == (403, "AuthFailure")
    assert seen == []


def test_a_request_sealed_with_another_key_is_refused() -> None:
    seen: list[str] = []
    request = sealed_message(ECHO, Said(text="x"), key=b"o" * 32)
    assert refusal(serve(_echo(seen), request)) == (403, "AuthFailure")
    assert seen == []


def test_an_unsealed_request_is_refused() -> None:
    request = sealed_message(ECHO, Said(text="x"))
    plain = Sealed(request.binding, b'{"text": "x"}')
    assert refusal(serve(_echo([]), plain)) == (403, "AuthFailure")
    no_nonce = request.scope()
    no_nonce["headers"] = [h for h in no_nonce["headers"] if h[0] != b"x-mallee-nonce"]
    assert refusal(serve_scope(_echo([]), no_nonce, request.body)) == (403, "MissingAuthenticationToken")


@pytest.mark.parametrize("offset", [-61.0, 61.0], ids=["stale", "future"])
def test_an_authentic_request_dated_over_a_minute_away_is_refused(offset: float) -> None:
    seen: list[str] = []
    request = sealed(ECHO.name, b'{"text": "x"}', ECHO.api.header, date=str(time.time() + offset))
    assert refusal(serve(_echo(seen), request)) == (403, "RequestTimeTooSkewed")
    assert seen == []


@pytest.mark.parametrize(
    ("date", "code"),
    [("nan", "RequestTimeTooSkewed"), ("inf", "RequestTimeTooSkewed"), ("soon", "AuthFailure")],
)
def test_a_date_that_is_no_time_is_refused(date: str, code: str) -> None:
    request = sealed_message(ECHO, Said(text="x")).changed(date=date)
    assert refusal(serve(_echo([]), request)) == (403, code)


def test_a_replayed_request_is_refused_and_not_served_again() -> None:
    seen: list[str] = []
    handlers = _echo(seen)
    request = sealed_message(ECHO, Said(text="once"))
    assert opened(serve(handlers, request), request)[0] == 200
    assert refusal(serve(handlers, request)) == (403, "RequestReplayed")
    assert refusal(serve(handlers, request)) == (403, "RequestReplayed")
    assert seen == ["once"]


# Another process of the same service on this host: it keeps its nonces in the same file.
_OTHER_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from mallee.rpc import node, replay
from mallee.rpc.contract import Handlers, Ok
from mallee.rpc.transport import serve_rpc

job = json.load(sys.stdin)
replay.keep_in(Path(job["store"]))
handlers = Handlers()
handlers.add(node.TERMINATE_INSTANCE, lambda p: Ok())
sent = []

async def receive():
    return {"type": "http.request", "body": bytes.fromhex(job["body"]), "more_body": False}

async def send(message):
    sent.append(message)

scope = {"type": "http", "method": "POST", "path": job["path"],
         "headers": [(k.encode(), v.encode()) for k, v in job["headers"]]}
asyncio.run(serve_rpc(scope, receive, send, bytes.fromhex(job["key"]), handlers))
print(sent[0]["status"])
"""


def _serve_in_another_process(request: Sealed, store: Path) -> int:
    job = {
        "store": str(store),
        "key": KEY.hex(),
        "path": request.binding.path,
        "headers": [(k.decode(), v.decode()) for k, v in request.scope()["headers"]],
        "body": request.body.hex(),
    }
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_replay_to_another_process_sharing_the_store_is_refused(nonces: Path) -> None:
    handlers = Handlers()
    handlers.add(node.TERMINATE_INSTANCE, lambda p: Ok())
    first = sealed_message(node.TERMINATE_INSTANCE, node.InstanceRef(instance_id="i-1"))
    assert _serve_in_another_process(first, nonces) == 200
    assert refusal(serve(handlers, first)) == (403, "RequestReplayed")

    second = sealed_message(node.TERMINATE_INSTANCE, node.InstanceRef(instance_id="i-2"))
    assert opened(serve(handlers, second), second)[0] == 200
    assert _serve_in_another_process(second, nonces) == 403


def test_an_answer_opens_only_for_its_request_and_status() -> None:
    request = sealed_message(ECHO, Said(text="x"))
    other = sealed_message(ECHO, Said(text="x"))
    answer_nonce, answer = sealing.seal_response(KEY, request.binding, 200, b'{"text": "X"}')
    assert sealing.open_response(KEY, request.binding, 200, answer_nonce, answer) == b'{"text": "X"}'
    for binding, status in [
        (other.binding, 200),
        (request.binding, 404),
        (request.changed(date="1").binding, 200),
    ]:
        with pytest.raises(sealing.SealError):
            sealing.open_response(KEY, binding, status, answer_nonce, answer)
    with pytest.raises(sealing.SealError):  # a request's seal is no answer's, even to itself
        sealing.open_response(KEY, request.binding, 200, request.binding.nonce, request.body)


def test_errors_of_an_authentic_request_are_sealed_to_it() -> None:
    request = sealed("no_such_method", b"{}", "echo/1")
    answer = serve(_echo([]), request)
    assert answer.headers[b"content-type"] == b"application/octet-stream"
    status, error = opened(answer, request)
    assert (status, error["code"]) == (404, "UnknownMethod")

    handlers = Handlers()

    def broken(p: Said) -> Said:
        raise RuntimeError("a bug")

    handlers.add(ECHO, broken)
    request = sealed_message(ECHO, Said(text="x"))
    status, error = opened(serve(handlers, request), request)
    assert (status, error["code"]) == (500, "InternalError")


# -- the real client and a real server on loopback ------------------------------------------------


class Recorder:
    """An ASGI app in front of another that records each request's and answer's bytes as they
    pass on the wire; with `answer_with`, it answers every request with that instead."""

    def __init__(self, app: Any, answer_with: Answer | None = None) -> None:
        self.app, self.answer_with = app, answer_with
        self.requests: list[bytes] = []
        self.answers: list[Answer] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.answer_with is not None:
            a = self.answer_with
            await send(
                {"type": "http.response.start", "status": a.status, "headers": list(a.headers.items())}
            )
            await send({"type": "http.response.body", "body": a.body})
            return
        start: dict[str, Any] = {}

        async def recording_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            self.requests.append(message.get("body", b""))
            return message

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                self.answers.append(Answer(start["status"], dict(start["headers"]), message["body"]))
            await send(message)

        await self.app(scope, recording_receive, recording_send)


def _server_app(handlers: Handlers) -> Any:
    return component_app(KEY, handlers)


def test_the_wire_carries_no_plaintext_either_way() -> None:
    seen: list[str] = []
    recorder = Recorder(_server_app(_echo(seen)))
    with running(recorder) as url:
        answer = Client(url, KEY).call(ECHO, Said(text=MARKER))
    assert answer.text == MARKER.upper() and seen == [MARKER]
    (request,), (response,) = recorder.requests, recorder.answers
    assert MARKER.encode() not in request and b"cloud-config" not in request
    assert MARKER.upper().encode() not in response.body and b"text" not in response.body
    assert response.status == 200 and response.nonce is not None


def test_a_client_refuses_an_answer_sealed_for_another_request() -> None:
    recorder = Recorder(_server_app(_echo([])))
    with running(recorder) as url:
        Client(url, KEY).call(ECHO, Said(text="first"))
    replayed_answer = recorder.answers[0]
    with running(Recorder(None, answer_with=replayed_answer)) as url, pytest.raises(RpcError) as err:
        Client(url, KEY).call(ECHO, Said(text="second"))
    assert err.value.code == "AnswerNotAuthentic"


@pytest.mark.parametrize(
    ("status", "code", "believed"),
    [
        (403, "RequestReplayed", "RequestReplayed"),  # a refusal before authentication: in clear
        (403, "AuthFailure", "AuthFailure"),
        (404, "InvalidInstanceID.NotFound", "AnswerNotAuthentic"),  # only a sealed answer says this
        (200, "", "AnswerNotAuthentic"),
    ],
)
def test_a_client_believes_an_unsealed_answer_only_as_a_refusal(
    status: int, code: str, believed: str
) -> None:
    body = json.dumps({"code": code, "message": "m"} if code else {"text": "forged"}).encode()
    plain = Answer(status, {b"content-type": b"application/json"}, body)
    with running(Recorder(None, answer_with=plain)) as url, pytest.raises(RpcError) as err:
        Client(url, KEY).call(ECHO, Said(text="x"))
    assert (err.value.status, err.value.code) == (status if status != 200 else 502, believed)
