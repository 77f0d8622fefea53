"""Calls into the CLC: components announce themselves and report their state (heartbeats)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mallee.core.periodic import Periodic
from mallee.rpc.transport import Client, RpcError

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"  # params: name, type, partition, host, port, version, detail -> {"ok": true}
# params: access_key_id, session_token -> {principal, secret_key, policies, token_expires} or {error, message}
RESOLVE_KEY = "resolve_key"
# params: account_id -> {"max_objects": int | None, "max_bytes": int | None}
ACCOUNT_QUOTA = "account_quota"
# params: private_ip, path -> {"status": int, "body": base64}: a guest's metadata request, proxied by its node
METADATA = "metadata"


def heartbeat(client: Client, **service: Any) -> None:
    client.call(HEARTBEAT, **service)


def resolve_key(client: Client, access_key_id: str, session_token: str | None) -> dict[str, Any]:
    result: dict[str, Any] = client.call(
        RESOLVE_KEY, access_key_id=access_key_id, session_token=session_token
    )
    return result


def account_quota(client: Client, account_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.call(ACCOUNT_QUOTA, account_id=account_id)
    return result


class Heartbeater(Periodic):
    """Sends a heartbeat every `interval` seconds; failures are logged once per outage and retried,
    since the CLC may start after us or restart."""

    def __init__(self, client: Client, describe: Callable[[], dict[str, Any]], interval: float) -> None:
        super().__init__("heartbeat", self._beat, interval)
        self.client, self.describe = client, describe
        self._failing = False

    def _beat(self) -> None:
        try:
            heartbeat(self.client, **self.describe())
        except (OSError, RpcError) as exc:
            if not self._failing:
                log.warning("heartbeat to the CLC failed (will retry): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat to the CLC works again")
        self._failing = False
