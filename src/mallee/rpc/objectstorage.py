"""Calls into Walrus from other components."""

from __future__ import annotations

from typing import Any

from mallee.rpc.transport import Client

USAGE = "usage"  # no params -> {"accounts": {account_id: {"buckets", "objects", "bytes"}}}


def usage(client: Client) -> dict[str, dict[str, int]]:
    result: dict[str, Any] = client.call(USAGE)
    return dict(result["accounts"])
