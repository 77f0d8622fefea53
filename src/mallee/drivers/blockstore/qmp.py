"""A small synchronous QMP client over a unix socket, for talking to qemu-storage-daemon.

One connection per conversation: a QMP chardev serves one client at a time, so holding a connection
open would lock out a restarted SC (or a second driver object) until this one went away.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from mallee.drivers.blockstore.base import BlockStoreError


class QmpError(BlockStoreError):
    """QEMU refused a command; `error_class` is QMP's `error.class` (e.g. "GenericError")."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command} failed: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpClient:
    """`with QmpClient(path) as qmp: qmp.execute("query-block-exports")`."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []  # asynchronous events seen while waiting for replies

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise BlockStoreError(f"cannot reach QMP at {self.path}: {e}") from e
        self._sock = sock
        greeting = self._read()
        if "QMP" not in greeting:
            self.close()
            raise BlockStoreError(f"{self.path} is not a QMP monitor (greeting {greeting!r})")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def __enter__(self) -> QmpClient:
        self.connect()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run `command` and return its `return` value; raise QmpError with QEMU's reason."""
        self._next_id += 1
        message: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            message["arguments"] = arguments
        self._send(message)
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") not in (self._next_id, None):
                continue  # a late answer to a command whose wait timed out on an earlier connection
            if "error" in reply:
                error = reply["error"]
                raise QmpError(command, str(error.get("class", "?")), str(error.get("desc", "")))
            if "return" in reply:
                return reply["return"]

    def _send(self, message: dict[str, Any]) -> None:
        if self._sock is None:
            raise BlockStoreError(f"QMP at {self.path} is not connected")
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as e:
            raise BlockStoreError(f"QMP at {self.path}: cannot send {message['execute']}: {e}") from e

    def _read(self) -> dict[str, Any]:
        if self._sock is None:
            raise BlockStoreError(f"QMP at {self.path} is not connected")
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as e:
                raise BlockStoreError(f"QMP at {self.path} did not answer within {self.timeout}s") from e
            except OSError as e:
                raise BlockStoreError(f"QMP at {self.path}: {e}") from e
            if not chunk:
                raise BlockStoreError(f"QMP at {self.path} closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        decoded = json.loads(line)
        if not isinstance(decoded, dict):
            raise BlockStoreError(f"QMP at {self.path} sent {line!r}")
        return decoded
