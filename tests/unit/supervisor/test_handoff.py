"""The front door's hand-off: reading a raw request head, and a sender that never blocks or fails
the request when Walrus cannot take the connection."""

from __future__ import annotations

import socket

from mallee.supervisor.handoff import MAX_MESSAGE, HandoffSender, parse_head


def test_parse_head_reads_line_target_and_headers() -> None:
    head = b"PUT /bucket/a%20b?uploads&x=1 HTTP/1.1\r\nHost: h:1\r\nX-Amz-Date:  20260101T000000Z \r\nEmpty:"
    request = parse_head(head, ("10.0.0.9", 5000))
    assert request is not None
    assert (request.method, request.raw_path, request.query_string) == ("PUT", "/bucket/a%20b", "uploads&x=1")
    assert request.headers.get("x-amz-date") == "20260101T000000Z"
    assert request.headers.get("empty") == ""
    assert request.remote_addr == "10.0.0.9"


def test_parse_head_rejects_what_is_not_http1() -> None:
    assert parse_head(b"GET / HTTP/2.0\r\nHost: h", None) is None
    assert parse_head(b"GET /\r\nHost: h", None) is None
    assert parse_head(b"GET / HTTP/1.1\r\nno colon here", None) is None
    assert parse_head(b"GET / HTTP/1.1\r\nHost : h", None) is None  # whitespace before the colon


def test_sender_keeps_the_connection_when_nobody_listens() -> None:
    sender = HandoffSender([b"\0mallee-test-nobody-" + socket.gethostname().encode()])
    a, b = socket.socketpair()
    try:
        assert sender.send(a.fileno(), b"GET / HTTP/1.1\r\n\r\n") is False
        assert sender.send(a.fileno(), b"x" * (MAX_MESSAGE + 1)) is False
    finally:
        a.close(), b.close()


def test_sender_passes_the_descriptor_and_the_bytes_read() -> None:
    name = b"\0mallee-test-handoff-" + str(id(object())).encode()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(name)
    listener.listen(1)
    sender = HandoffSender([name])
    client, server_side = socket.socketpair()
    try:
        first = b"GET /b/k HTTP/1.1\r\n\r\n" + b"y" * 300_000  # more than the default socket buffer
        assert sender.send(server_side.fileno(), first)
        peer, _ = listener.accept()
        data, fds, flags, _ = socket.recv_fds(peer, MAX_MESSAGE, 1)
        assert (data, len(fds), flags) == (first, 1, 0)
        server_side.close()  # the sender's copy goes; the passed one still reaches the client
        with socket.socket(fileno=fds[0]) as passed:
            passed.sendall(b"answer")
            assert client.recv(16) == b"answer"
        peer.close()
    finally:
        sender.close(), listener.close(), client.close()


def _listener(label: str) -> tuple[bytes, socket.socket]:
    name = f"\0mallee-test-handoff-{label}-{id(object())}".encode()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(name)
    listener.listen(1)
    return name, listener


def _received(listener: socket.socket, peers: dict[int, socket.socket]) -> bytes:
    """The next message on `listener`'s (one) connection from the sender."""
    if listener.fileno() not in peers:
        peers[listener.fileno()] = listener.accept()[0]
    data, fds, _, _ = socket.recv_fds(peers[listener.fileno()], MAX_MESSAGE, 1)
    for fd in fds:
        socket.socket(fileno=fd).close()
    return data


def test_sender_takes_the_workers_in_turn_and_skips_one_that_is_down() -> None:
    (first_name, first), (second_name, second) = _listener("w0"), _listener("w1")
    down = b"\0mallee-test-nobody-w2-" + socket.gethostname().encode()
    sender = HandoffSender([first_name, down, second_name])
    client, server_side = socket.socketpair()
    peers: dict[int, socket.socket] = {}
    try:
        for n in range(4):
            assert sender.send(server_side.fileno(), f"GET /{n} HTTP/1.1\r\n\r\n".encode())
        assert [_received(first, peers), _received(second, peers)] == [
            b"GET /0 HTTP/1.1\r\n\r\n",
            b"GET /1 HTTP/1.1\r\n\r\n",
        ]
        assert [_received(first, peers), _received(second, peers)] == [
            b"GET /2 HTTP/1.1\r\n\r\n",
            b"GET /3 HTTP/1.1\r\n\r\n",
        ]
    finally:
        for sock in (*peers.values(), first, second, client, server_side):
            sock.close()
        sender.close()
