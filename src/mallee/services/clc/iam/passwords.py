"""Console passwords: the one place that hashes and checks them, and the check the console's
sign-in makes (`verify`).

A password is kept only as a salted scrypt hash in the PHC string format
(`$scrypt$ln=14,r=8,p=1$<salt>$<hash>`): the cost parameters travel with each hash, so they can
be raised later and every stored password still checks (and is re-hashed at its next sign-in).
Passwords are never logged, never answered, and compared only in constant time.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from mallee.core import clock
from mallee.core.errors import CloudError
from mallee.services.clc.iam import store
from mallee.services.clc.iam.password_policy import PasswordPolicy
from mallee.services.clc.tables import User


@dataclass(frozen=True)
class Cost:
    """scrypt's cost: N = 2**log_n, block size r, parallelism p (memory: 128 * r * N bytes)."""

    log_n: int
    r: int
    p: int


# Percival's interactive-login parameters (16 MiB, some tens of ms): a sign-in, and a
# ChangePassword that checks the new password against up to 24 old hashes, stay quick on a small
# host. Raising them only changes new hashes.
COST = Cost(log_n=14, r=8, p=1)
SALT_BYTES = 16
HASH_BYTES = 32
# Refuse stored parameters past these (a corrupt row must not make a check take minutes or GiBs).
_MAX_COST = Cost(log_n=18, r=16, p=4)
_PHC = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


def hash_password(password: str, cost: Cost = COST) -> str:
    """A new salted hash of `password`, in the PHC string format with its parameters."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, cost, HASH_BYTES)
    return f"$scrypt$ln={cost.log_n},r={cost.r},p={cost.p}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (False for a malformed hash). The
    digests are compared with hmac.compare_digest, whose time does not depend on where they
    differ."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    cost, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, cost, len(digest)), digest)


def needs_rehash(stored: str, cost: Cost = COST) -> bool:
    """Whether `stored` was made with other parameters than `cost` (hash it again once checked)."""
    parsed = _parse(stored)
    return parsed is None or parsed[0] != cost


@dataclass(frozen=True)
class Refusal:
    """Why a sign-in with a password is refused.

    reason: "invalid" - no such account or user, no login profile, or the wrong password (which
    one is not said); "expired" - the right password, older than the policy's MaxPasswordAge;
    "reset-required" - the right password, but an administrator asked for a new one at the next
    sign-in. For the last two `user` is whose password must change, and `may_change` whether the
    user may change it (ChangePassword with the old one) rather than wait for an administrator:
    not once expired under a policy with HardExpiry."""

    reason: Literal["invalid", "expired", "reset-required"]
    user: User | None = None
    may_change: bool = False


def verify(s: Session, account: str, user_name: str, password: str) -> User | Refusal:
    """The console's sign-in: the IAM user `user_name` of `account` (its id or alias) if
    `password` is its console password and it may sign in with it now, else a Refusal. Takes as
    long whether or not the user exists (a hash is checked either way), so timing does not tell
    which names exist."""
    try:
        owner = store.find_account(s, account)
    except CloudError:
        owner = None
    user = (
        s.scalar(select(User).where(User.account_id == owner.id, User.name == user_name))
        if owner is not None
        else None
    )
    stored = user.password_hash if user is not None else None
    if owner is None or user is None or stored is None:
        check_password(password, _dummy_hash())
        return Refusal("invalid")
    if not check_password(password, stored):
        return Refusal("invalid")
    if needs_rehash(stored):
        user.password_hash = hash_password(password)
    policy = PasswordPolicy.of(owner)
    expires = policy.expires(user.password_changed) if policy and user.password_changed else None
    if policy is not None and expires is not None and expires <= clock.now():
        return Refusal("expired", user, may_change=not policy.HardExpiry)
    if user.password_reset_required:
        return Refusal("reset-required", user, may_change=True)
    return user


# -- helpers -----------------------------------------------------------------------------------------


def _scrypt(password: str, salt: bytes, cost: Cost, length: int) -> bytes:
    n = 2**cost.log_n
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=cost.r,
        p=cost.p,
        maxmem=128 * cost.r * (n + cost.p + 2) + (1 << 20),  # OpenSSL's need, and a margin
        dklen=length,
    )


def _parse(stored: str) -> tuple[Cost, bytes, bytes] | None:
    m = _PHC.fullmatch(stored)
    if m is None:
        return None
    cost = Cost(int(m[1]), int(m[2]), int(m[3]))
    if not (1 <= cost.log_n <= _MAX_COST.log_n and 1 <= cost.r <= _MAX_COST.r and 1 <= cost.p <= _MAX_COST.p):
        return None
    try:
        return cost, _unb64(m[4]), _unb64(m[5])
    except ValueError:
        return None


def _b64(raw: bytes) -> str:
    """Base64 without padding, as the PHC format writes it."""
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@functools.cache
def _dummy_hash() -> str:
    """A hash checked in place of a missing one, so that a missing user costs a check too."""
    return hash_password(secrets.token_urlsafe(16))
