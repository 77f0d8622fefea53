"""Who signed an S3 request: keys resolved by the CLC over rpc, cached briefly in this process.

IAM on AWS is eventually consistent too; a key revoked at the CLC stops working here within
`CACHE_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from mallee.core import clock
from mallee.core import policy as iam_policy
from mallee.protocol.auth import KINDS, AuthError
from mallee.protocol.gateway import Credential
from mallee.rpc import cloud
from mallee.rpc.transport import Client

CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class KnownKey:
    credential: Credential
    policies: tuple[iam_policy.Policy, ...]
    token_expires: float | None
    fetched: float
    session_policies: tuple[iam_policy.Policy, ...] | None = None  # a role session's (None: not given)


class RemoteIdentity:
    def __init__(self, clc: Client) -> None:
        self.clc = clc
        self._cache: dict[str, KnownKey] = {}
        self._lock = threading.Lock()

    def knows(self, access_key_id: str) -> bool:
        """Whether `lookup` can answer for this key without asking the CLC."""
        entry = self._cache.get(access_key_id)
        return entry is not None and time.monotonic() - entry.fetched <= CACHE_SECONDS

    def lookup(self, access_key_id: str, session_token: str | None) -> KnownKey:
        entry = self._cache.get(access_key_id)
        if entry is None or time.monotonic() - entry.fetched > CACHE_SECONDS:
            entry = self._fetch(access_key_id, session_token)
            with self._lock:
                self._cache[access_key_id] = entry
        principal = entry.credential.principal
        if entry.token_expires is not None or session_token is not None:
            if principal.session_token != session_token:
                raise AuthError("invalid-token", "The provided token is malformed or otherwise invalid.")
            if entry.token_expires is not None and entry.token_expires <= clock.now().timestamp():
                raise AuthError("expired-token", "The provided token has expired.")
        return entry

    def _fetch(self, access_key_id: str, session_token: str | None) -> KnownKey:
        answer = self.clc.call(
            cloud.RESOLVE_KEY, cloud.ResolveKey(access_key_id=access_key_id, session_token=session_token)
        )
        if answer.error or answer.principal is None:
            kind = answer.error if answer.error in KINDS else "unknown-key"
            raise AuthError(kind, answer.message)
        return KnownKey(
            credential=Credential(answer.principal, answer.secret_key),
            policies=tuple(iam_policy.parse_policy_cached(d) for d in answer.policies),
            session_policies=(
                None
                if answer.session_policies is None
                else tuple(iam_policy.parse_policy_cached(d) for d in answer.session_policies)
            ),
            token_expires=answer.token_expires,
            fetched=time.monotonic(),
        )

    def resolve(self, access_key_id: str, session_token: str | None) -> Credential:
        return self.lookup(access_key_id, session_token).credential
