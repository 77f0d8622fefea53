"""Identifiers shaped like AWS's, so tools that check id formats accept ours."""

from __future__ import annotations

import re
import secrets
import string
import uuid

_HEX17 = re.compile(r"^[0-9a-f]{17}$|^[0-9a-f]{8}$")


def resource_id(prefix: str) -> str:
    """A new id such as `i-0123456789abcdef0` (prefix, dash, 17 lower-case hex digits)."""
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def is_resource_id(value: str, prefix: str) -> bool:
    """True when `value` is `prefix-` followed by 8 or 17 hex digits (both lengths exist on AWS)."""
    head, sep, tail = value.partition("-")
    return bool(sep) and head == prefix and bool(_HEX17.match(tail))


def account_id() -> str:
    """A 12-digit account number that never starts with 0 (some tools strip leading zeros)."""
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def request_id() -> str:
    return str(uuid.uuid4())


_KEY_ALPHABET = string.ascii_uppercase + "234567"


def access_key_id(temporary: bool = False) -> str:
    """`AKIA…` for long-term keys, `ASIA…` for temporary ones: 20 characters, as on AWS."""
    return ("ASIA" if temporary else "AKIA") + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))


def unique_id(prefix: str) -> str:
    """IAM unique ids: `AIDA…` (user), `AGPA…` (group), `AROA…` (role); 21 characters."""
    return prefix + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(17))


def secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


def session_token() -> str:
    return secrets.token_urlsafe(96)
