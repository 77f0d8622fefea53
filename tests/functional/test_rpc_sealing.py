"""Internal rpc on the wire, against the running cloud: a request captured as a component sends it
holds nothing readable, is served once, and is refused when it is sent again byte for byte — also
by the other Walrus worker sharing the port; the cloud's answers are sealed too."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass

import pytest

from mallee.rpc import cloud as cloud_rpc
from mallee.rpc import objectstorage
from mallee.rpc.contract import Empty, Message, Operation
from mallee.rpc.transport import Client, RpcError, load_key
from support.cloud import Cloud

MARKER = "/latest/user-data/secret-marker-5e1d"
WALRUS_OFFSET = 4  # Walrus's port: port_base + 4 (docs/architecture.md)


@dataclass(frozen=True)
class Answer:
    status: int
    head: bytes
    body: bytes

    def json(self) -> dict[str, str]:
        found: dict[str, str] = json.loads(self.body)
        return found


def _read_message(conn: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP message's head and body (by its Content-Length), from a connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def captured(operation: Operation[Message, Message], message: Message, key: bytes) -> bytes:
    """The bytes of one rpc request exactly as the real Client sends them (to a listener that
    records them and refuses the call)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        raw: list[bytes] = []

        def record() -> None:
            conn, _ = listener.accept()
            with conn:
                head, body = _read_message(conn)
                raw.append(head + b"\r\n\r\n" + body)
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

        recorder = threading.Thread(target=record)
        recorder.start()
        with pytest.raises(RpcError):
            Client(f"http://127.0.0.1:{port}", key, timeout=10).call(operation, message)
        recorder.join(10)
    return raw[0]


def sent(port: int, raw: bytes) -> Answer:
    """Send `raw` as it is on a fresh connection to the cloud; its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(raw)
        head, body = _read_message(conn)
    return Answer(int(head.split(b" ", 2)[1]), head, body)


def _deployment_key(cloud: Cloud) -> bytes:
    return load_key(cloud.data_dir / "deployment.key")


def test_a_captured_request_is_served_once_and_refused_when_sent_again(cloud: Cloud) -> None:
    key = _deployment_key(cloud)
    raw = captured(cloud_rpc.METADATA, cloud_rpc.MetadataRequest(private_ip="10.9.9.9", path=MARKER), key)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"secret-marker" not in raw and b"private_ip" not in body and b"10.9.9.9" not in raw
    assert b"x-mallee-nonce" in head.lower() and b"x-mallee-signature" not in head.lower()

    first = sent(cloud.port_base, raw)
    assert first.status == 200 and b"x-mallee-nonce" in first.head.lower(), first
    again = sent(cloud.port_base, raw)
    assert (again.status, again.json()["code"]) == (403, "RequestReplayed")


def test_an_answer_holding_credentials_is_sealed_on_the_wire(cloud: Cloud) -> None:
    key = _deployment_key(cloud)
    secret = Client(cloud.endpoint, key).call(cloud_rpc.SYSTEM_CREDENTIALS, Empty()).secret_access_key
    answer = sent(cloud.port_base, captured(cloud_rpc.SYSTEM_CREDENTIALS, Empty(), key))
    assert answer.status == 200 and len(answer.body) > len(secret)
    assert secret.encode() not in answer.body and b"secret_access_key" not in answer.body


def test_a_replay_is_refused_by_every_walrus_worker_sharing_the_port(cloud: Cloud) -> None:
    """Walrus's two workers share its port (the kernel spreads connections between them): each
    replay goes on a fresh connection, so about half would reach the worker that did not serve
    the original were the nonces not shared."""
    port = cloud.port_base + WALRUS_OFFSET
    raw = captured(objectstorage.USAGE, Empty(), _deployment_key(cloud))
    assert sent(port, raw).status == 200
    replays = [sent(port, raw) for _ in range(12)]
    assert [a.status for a in replays] == [403] * 12, "a worker served a replay"
    assert {a.json()["code"] for a in replays} == {"RequestReplayed"}
