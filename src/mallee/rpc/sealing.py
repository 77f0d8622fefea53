"""Sealing internal rpc messages: AES-256-GCM under a key derived from the deployment key, so a
request and its answer are secret, cannot be changed, and an answer belongs to one request.

A request is bound (as GCM's associated data) to its method path, date, nonce and contract header;
its answer to the same request and its own status. Each message has a fresh random 96-bit nonce.
The sealing key is derived per UTC day of the request's date (HKDF-SHA256), which keeps the number
of messages under one key far below GCM's limit for random nonces (2^32, NIST SP 800-38D 8.3).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
LABEL = b"mallee rpc sealing v1"
_NONCE = re.compile(r"[0-9a-f]{24}")  # hex as `nonce()` writes it: one spelling per nonce
DAY = 86400


class SealError(Exception):
    """A sealed message that is not authentic: another key, or changed in transit."""


@dataclass(frozen=True)
class Binding:
    """What a request's seal covers besides its body; its answer's seal covers it too."""

    path: str
    date: str  # unix seconds, as the caller wrote them (the server checks it is recent)
    nonce: str  # hex
    contract: str

    @classmethod
    def new(cls, path: str, date: str, contract: str) -> Binding:
        return cls(path, date, nonce(), contract)

    def day(self) -> int:
        """The UTC day of its date, which chooses the key."""
        try:
            return int(float(self.date)) // DAY
        except (ValueError, OverflowError):  # not a number, nan, inf
            raise SealError("the date is not a number of seconds") from None


def nonce() -> str:
    return os.urandom(NONCE_BYTES).hex()


def nonce_bytes(text: str) -> bytes:
    """The nonce a header carries; SealError unless it is 24 lower-case hex digits."""
    if not _NONCE.fullmatch(text):
        raise SealError("the nonce is not 24 lower-case hex digits")
    return bytes.fromhex(text)


def seal_request(key: bytes, binding: Binding, body: bytes) -> bytes:
    return _cipher(key, binding.day()).encrypt(nonce_bytes(binding.nonce), body, _request_aad(binding))


def open_request(key: bytes, binding: Binding, sealed: bytes) -> bytes:
    """The request's body; SealError when it was not sealed with `key` for exactly `binding`."""
    return _open(key, binding.day(), binding.nonce, sealed, _request_aad(binding))


def seal_response(key: bytes, binding: Binding, status: int, body: bytes) -> tuple[str, bytes]:
    """(the answer's nonce, its sealed body) for the request of `binding`."""
    answer_nonce = nonce()
    aad = _response_aad(binding, status)
    return answer_nonce, _cipher(key, binding.day()).encrypt(bytes.fromhex(answer_nonce), body, aad)


def open_response(key: bytes, binding: Binding, status: int, answer_nonce: str, sealed: bytes) -> bytes:
    """The answer's body; SealError unless it was sealed with `key` as the answer, with `status`,
    to the request of `binding`."""
    return _open(key, binding.day(), answer_nonce, sealed, _response_aad(binding, status))


def _open(key: bytes, day: int, nonce_hex: str, sealed: bytes, aad: bytes) -> bytes:
    try:
        return _cipher(key, day).decrypt(nonce_bytes(nonce_hex), sealed, aad)
    except InvalidTag:
        raise SealError("the seal does not match (another key, or changed in transit)") from None


# Requests and answers are told apart by their first line, so neither can pass for the other.
def _request_aad(b: Binding) -> bytes:
    return f"mallee-rpc request\n{b.path}\n{b.date}\n{b.nonce}\n{b.contract}".encode()


def _response_aad(b: Binding, status: int) -> bytes:
    return f"mallee-rpc answer\n{b.path}\n{b.date}\n{b.nonce}\n{b.contract}\n{status}".encode()


@functools.lru_cache(maxsize=16)
def _cipher(key: bytes, day: int) -> AESGCM:
    """The day's cipher (derived once: HKDF and the AES key schedule cost more than sealing a
    small message)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL + b" day %d" % day)
    return AESGCM(hkdf.derive(key))
