"""The CLC's rpc clients for the components it calls, set up once by the app at start-up."""

from __future__ import annotations

from mallee.rpc.transport import Client

_walrus: Client | None = None


def configure(walrus: Client) -> None:
    global _walrus
    _walrus = walrus


def walrus() -> Client:
    assert _walrus is not None, "the CLC app configures its peers at start-up"
    return _walrus
