"""The CLC's contract, called by every other component: heartbeats, key resolution and quotas for
Walrus, metadata answers for nodes, and pushed instance state changes from cluster controllers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mallee.core.context import Principal
from mallee.core.periodic import Periodic
from mallee.rpc.contract import Api, Empty, Message, Ok, Operation, StateChanged
from mallee.rpc.transport import Client, RpcError

log = logging.getLogger(__name__)

API = Api("cloud", version=1)


class ServiceDescription(Message):
    """A component as it announces itself in each heartbeat."""

    name: str
    type: str
    host: str
    port: int
    partition: str = ""
    version: str = ""
    detail: dict[str, Any] = {}


class ResolveKey(Message):
    access_key_id: str
    session_token: str | None = None


class KeyIdentity(Message):
    """A key's identity, secret and IAM policy documents, or the AuthError kind that refuses it."""

    error: str = ""
    message: str = ""
    principal: Principal | None = None
    secret_key: str = ""
    policies: list[str] = []
    # A role session's session policies, which narrow `policies` (None: it was given none).
    session_policies: list[str] | None = None
    token_expires: float | None = None


class AccountRef(Message):
    account_id: str


class Quota(Message):
    max_objects: int | None = None  # None: unlimited
    max_bytes: int | None = None


# Both metadata messages leave out fields at their defaults on the wire, so a field added with a
# default reaches a peer that predates it only when it is set (decoding refuses unknown fields).
class MetadataRequest(Message, omit_defaults=True):
    """A guest's metadata request, proxied by its node."""

    private_ip: str
    path: str
    vpc_id: str = ""  # the VPC whose metadata address the guest called (addresses repeat across VPCs)
    with_token: bool = False  # it carried a valid IMDSv2 token (the node checked it)
    # An IMDSv2 token PUT (`path` unused): may the node issue a token, and with what hop limit?
    token_request: bool = False


class MetadataAnswer(Message, omit_defaults=True):
    status: int
    body: bytes
    # For a token request answered 200: the instance's HttpPutResponseHopLimit, the IP TTL the node
    # sends the token with.
    hop_limit: int = 1


HEARTBEAT = Operation(API, "heartbeat", ServiceDescription, Ok)
RESOLVE_KEY = Operation(API, "resolve_key", ResolveKey, KeyIdentity)
ACCOUNT_QUOTA = Operation(API, "account_quota", AccountRef, Quota)
METADATA = Operation(API, "metadata", MetadataRequest, MetadataAnswer)
INSTANCES_CHANGED = Operation(API, "instances_changed", StateChanged, Ok)  # pushed by a CC


class SystemCredentials(Message):
    """The cloud's own S3 credentials (its system account's key) and where S3 is: for components
    that keep the cloud's data in Walrus (the SC's snapshot chunks)."""

    access_key_id: str
    secret_access_key: str
    endpoint: str
    region: str


SYSTEM_CREDENTIALS = Operation(API, "system_credentials", Empty, SystemCredentials)


class Heartbeater(Periodic):
    """Sends a heartbeat every `interval` seconds; failures are logged once per outage and retried,
    since the CLC may start after us or restart."""

    def __init__(self, client: Client, describe: Callable[[], ServiceDescription], interval: float) -> None:
        super().__init__("heartbeat", self._beat, interval)
        self.client, self.describe = client, describe
        self._failing = False

    def _beat(self) -> None:
        try:
            self.client.call(HEARTBEAT, self.describe())
        except (OSError, RpcError) as exc:
            if not self._failing:
                log.warning("heartbeat to the CLC failed (will retry): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat to the CLC works again")
        self._failing = False
