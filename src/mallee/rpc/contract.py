"""Typed, versioned internal contracts: what every rpc message between components is.

Each callee's module in `rpc/` (cloud, cluster, node, objectstorage, component) defines its API once:
an `Api` (name and version) and one `Operation` per method, binding a request and a response
`Message`. Messages are msgspec Structs: decoding is strict (an unknown or missing field, or one of
the wrong type, is an error naming the field), so the receiver of every message — the callee for a
request, the caller for an answer — validates it against the one definition both sides import.

Versioning: a caller names the contract version it speaks in `X-Mallee-Contract: <api>/<version>`;
the callee serves callers from `Api.oldest` to its own `Api.version` and refuses any other with
`ContractVersionMismatch`, naming both versions, instead of misreading a message. Bump `version`
when a message changes; raise `oldest` when the callee can no longer serve the older shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

CONTRACT_HEADER = "x-mallee-contract"


class Message(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The base of every rpc request and answer."""


class Ok(Message):
    """The answer of an operation that returns nothing but success."""

    ok: bool = True


class Empty(Message):
    """The request of an operation that takes no parameters."""


class StateChanged(Message):
    """A push up the chain (NC → CC → CLC): these instances changed state just now. The receiver
    runs its regular pass at once, so a lost push only delays a change until the next poll."""

    source: str  # the node (host:port) or zone that saw the change
    instance_ids: list[str]


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Api:
    """One callee's contract: its name, the version it speaks and the oldest caller it serves."""

    name: str
    version: int
    oldest: int = 1

    @property
    def header(self) -> str:
        return f"{self.name}/{self.version}"

    def refusal(self, header: str | None) -> str | None:
        """Why a caller naming `header` cannot be served (None: it can)."""
        name, _, version = (header or "").partition("/")
        if name != self.name or not version.isdigit():
            return f"the caller did not name a version of the '{self.name}' contract (got {header!r})"
        spoken = int(version)
        if not self.oldest <= spoken <= self.version:
            served = f"v{self.oldest}" if self.oldest == self.version else f"v{self.oldest}–v{self.version}"
            return (
                f"the caller speaks the '{self.name}' contract v{spoken}; this component serves {served}: "
                f"upgrade the {'callee' if spoken > self.version else 'caller'}"
            )
        return None


@dataclass(frozen=True)
class Operation(Generic[Req, Resp]):
    """One rpc method of an Api: its name on the wire and its request and answer types."""

    api: Api
    name: str
    request: type[Req]
    response: type[Resp]
    _decoders: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def decode_request(self, body: bytes) -> Req:
        return self._decoder("request", self.request).decode(body or b"{}")  # type: ignore[no-any-return]

    def decode_response(self, body: bytes) -> Resp:
        return self._decoder("response", self.response).decode(body)  # type: ignore[no-any-return]

    def _decoder(self, which: str, kind: type[Message]) -> msgspec.json.Decoder[Any]:
        decoder = self._decoders.get(which)
        if decoder is None:
            decoder = self._decoders[which] = msgspec.json.Decoder(kind)
        return decoder


ENCODER = msgspec.json.Encoder()


def encode(message: Message) -> bytes:
    return ENCODER.encode(message)


class Handlers:
    """The operations one component serves, each bound to the function that answers it."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[Operation[Any, Any], Callable[[Any], Message]]] = {}

    def add(self, operation: Operation[Req, Resp], fn: Callable[[Req], Resp]) -> None:
        if operation.name in self.table:
            raise ValueError(f"rpc method {operation.name!r} is served twice")
        self.table[operation.name] = (operation, fn)

    def merged(self, other: Handlers) -> Handlers:
        both = Handlers()
        for operation, fn in [*self.table.values(), *other.table.values()]:
            both.add(operation, fn)
        return both
