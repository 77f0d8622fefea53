"""Identifiers shaped like AWS's, so tools that check id formats accept ours."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import string

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


def _new_request_id_prefix() -> None:
    """A random head for this process's request ids (74 random bits, laid out as a UUID4's) and
    a counter for the last 48 bits; a forked child draws its own, so no two processes share ids."""
    global _request_id_prefix, _request_id_counter
    head = secrets.token_hex(10)
    variant = "89ab"[int(head[15], 16) % 4]
    _request_id_prefix = f"{head[:8]}-{head[8:12]}-4{head[12:15]}-{variant}{head[16:19]}-"
    _request_id_counter = itertools.count(secrets.randbits(48))


_request_id_prefix = ""
_request_id_counter: itertools.count[int] = itertools.count()
_new_request_id_prefix()
os.register_at_fork(after_in_child=_new_request_id_prefix)


def request_id() -> str:
    """A unique id in UUID form (`8-4-4-4-12` hex digits): a random per-process prefix and a
    counter, as uuid4() would cost a system call (os.urandom) per request."""
    return f"{_request_id_prefix}{next(_request_id_counter) & 0xFFFFFFFFFFFF:012x}"


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


def mac_for(instance_id: str) -> str:
    """An instance's MAC, from its id (Eucalyptus' d0:0d:… convention); the CLC checks that no live
    instance of the zone has it already."""
    digits = instance_id.split("-", 1)[1][-8:].rjust(8, "0")
    return "d0:0d:" + ":".join(digits[i : i + 2] for i in range(0, 8, 2))
