"""Encryption at rest: SSE-S3 (keys Walrus keeps) and SSE-C (keys the customer sends each time).

Every encrypted blob, and every small object's bytes kept in its row, has a data key of its own
(32 random bytes) and is AES-256 in CTR mode under it: the same length as the plaintext, so sizes,
ranges and part offsets stay as they are, and any range is read without the bytes before it. With
a key never used twice, the counter may start at zero. The data key is stored only wrapped
(AES-256-GCM): under the cloud's master key for SSE-S3, under the customer's key for SSE-C. The
master key is a file with the deployment's keys (`Config.walrus_master_key_file`, 0600), never in
the database or beside the blobs; the customer's key is never stored at all — only an HMAC of it
(under the master key), to tell a wrong key from the right one before anything is decrypted.

Checksums and SSE-S3 ETags are of the plaintext, as on S3; an SSE-C object's ETag is the MD5 of
what is stored (S3's is not the MD5 of the data either), so it does not reveal the plaintext's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mallee.core.errors import CloudError

SSE_S3 = "AES256"  # what the object's x-amz-server-side-encryption says
SSE_C = "SSE-C"
ALGORITHM = "AES256"  # the one algorithm both take
KEY_BYTES = 32
_BLOCK = 16
_WRAP_PREFIX = "g1."  # format of a wrapped key: AES-GCM, 12-byte nonce, base64url
_WRAP_AAD = b"mallee walrus data key"
_CUSTOMER_HEADERS = ("SSECustomerAlgorithm", "SSECustomerKey", "SSECustomerKeyMD5")
_NOT_APPLICABLE = "The encryption parameters are not applicable to this object."
_KEY_NEEDED = (
    "The object was stored using a form of Server Side Encryption. The correct parameters must be "
    "provided to retrieve the object."
)


def load_master_key(path: Path) -> bytes:
    """The cloud's master key, made on first use (0600, created exclusively: of several Walrus
    workers starting at once, one writes it and the others read it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(KEY_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
    for _ in range(100):  # a worker that lost the race may read before the winner wrote
        text = path.read_text().strip()
        if text:
            return bytes.fromhex(text)
        os.sched_yield()
    raise RuntimeError(f"{path} is empty")


@dataclass(frozen=True)
class CustomerKey:
    """An SSE-C key as a request sent it (checked: 256 bits, its MD5 as sent)."""

    key: bytes
    md5: str  # base64, as the x-amz-…-customer-key-MD5 header (answers echo it)

    @classmethod
    def of(cls, p: Mapping[str, Any], prefix: str = "") -> CustomerKey | None:
        """The key of `p`'s SSECustomer* members (`prefix` "CopySource": a copy's source's)."""
        algorithm, key, md5 = (p.get(prefix + name) for name in _CUSTOMER_HEADERS)
        if algorithm is None and key is None and md5 is None:
            return None
        if algorithm is None or key is None:
            raise CloudError(
                "InvalidArgument",
                "Requests specifying Server Side Encryption with Customer provided keys must provide "
                "both the encryption algorithm and the encryption key.",
            )
        if algorithm != ALGORITHM:
            raise CloudError(
                "InvalidEncryptionAlgorithmError", "The encryption request you specified is not valid."
            )
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != KEY_BYTES:
            raise CloudError("InvalidArgument", "The secret key was invalid for the specified algorithm.")
        digest = base64.b64encode(hashlib.md5(raw).digest()).decode()
        if md5 is not None and md5 != digest:
            raise CloudError(
                "InvalidArgument",
                "The calculated MD5 hash of the key did not match the hash that was provided.",
            )
        return cls(raw, digest)


@dataclass(frozen=True)
class Sealing:
    """How new bytes are stored: `mode` "" (in clear), SSE_S3 or SSE_C (with `customer`)."""

    mode: str = ""
    customer: CustomerKey | None = None


PLAIN = Sealing()


@dataclass(frozen=True)
class NewKey:
    """A data key for one blob or row, and how it is stored (wrapped)."""

    key: bytes
    wrapped: str


SegmentKeys = Callable[[int], bytes | None]  # an object's segment number -> its data key (None: in clear)


def in_clear(_number: int) -> bytes | None:
    """The SegmentKeys of an object stored in clear."""
    return None


class Keys:
    """Wraps and unwraps data keys under the master key or a customer's key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._master = master_key

    def new_key(self, sealing: Sealing) -> NewKey | None:
        """A fresh data key for bytes to store under `sealing` (None: stored in clear)."""
        if not sealing.mode:
            return None
        key = os.urandom(KEY_BYTES)
        nonce = os.urandom(12)
        wrapped = nonce + AESGCM(self._wrapping_key(sealing.mode, sealing.customer)).encrypt(
            nonce, key, _WRAP_AAD
        )
        return NewKey(key, _WRAP_PREFIX + base64.urlsafe_b64encode(wrapped).decode())

    def unwrap(self, wrapped: str, mode: str, customer: CustomerKey | None) -> bytes:
        raw = base64.urlsafe_b64decode(wrapped.removeprefix(_WRAP_PREFIX))
        try:
            return AESGCM(self._wrapping_key(mode, customer)).decrypt(raw[:12], raw[12:], _WRAP_AAD)
        except InvalidTag:  # the HMAC check comes first; this is a key that was tampered with
            raise CloudError("AccessDenied", "Access Denied", 403) from None

    def customer_hmac(self, customer: CustomerKey) -> str:
        """What is kept of a customer's key: enough to recognise it, nothing to recover it."""
        return hmac.new(self._master, b"sse-c:" + customer.key, hashlib.sha256).hexdigest()

    def _wrapping_key(self, mode: str, customer: CustomerKey | None) -> bytes:
        if mode == SSE_C:
            assert customer is not None
            return customer.key
        return self._master


def sealing_for_write(p: Mapping[str, Any], bucket_default: str) -> Sealing:
    """How a write (PutObject, CopyObject's new object, CreateMultipartUpload) stores its bytes:
    as its headers ask, else as the bucket's default encryption says (`bucket_default`)."""
    customer = CustomerKey.of(p)
    asked = p.get("ServerSideEncryption")
    if customer is not None:
        if asked is not None:
            raise CloudError(
                "InvalidArgument",
                "Server Side Encryption with Customer provided key is incompatible with the encryption "
                "method specified",
            )
        return Sealing(SSE_C, customer)
    if asked is not None:
        return Sealing(check_algorithm(asked))
    return Sealing(bucket_default)


def default_algorithm(stored: str) -> str:
    """The algorithm a stored configuration applies to new objects."""
    rules = json.loads(stored)
    return str(rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]) if rules else ""


def check_algorithm(value: str) -> str:
    """An x-amz-server-side-encryption value Walrus can honour (KMS: refused by name)."""
    if value == SSE_S3:
        return SSE_S3
    if value.startswith("aws:kms"):
        raise CloudError(
            "NotImplemented", f"Server-side encryption with {value} (KMS) is not supported.", 501
        )
    raise CloudError("InvalidArgument", "The encryption method specified is not supported")


def customer_for_read(
    keys: Keys, p: Mapping[str, Any], sse: str, key_hmac: str, prefix: str = ""
) -> CustomerKey | None:
    """The customer's key a read of an object stored as `sse` must carry (GetObject, HeadObject,
    a copy's source, UploadPart into an SSE-C upload): none for others, the right one for SSE-C."""
    customer = CustomerKey.of(p, prefix)
    if sse != SSE_C:
        if customer is not None:
            raise CloudError("InvalidRequest", _NOT_APPLICABLE)
        return None
    if customer is None:
        raise CloudError("InvalidRequest", _KEY_NEEDED)
    if not hmac.compare_digest(keys.customer_hmac(customer), key_hmac):
        raise CloudError("AccessDenied", "Access Denied", 403)
    return customer


def answer(sse: str, customer: CustomerKey | None) -> dict[str, str]:
    """The encryption members of an answer about bytes stored as `sse`."""
    if sse == SSE_S3:
        return {"ServerSideEncryption": SSE_S3}
    if sse == SSE_C and customer is not None:
        return {"SSECustomerAlgorithm": ALGORITHM, "SSECustomerKeyMD5": customer.md5}
    return {}


def positioned(key: bytes, offset: int) -> CipherContext:
    """AES-256-CTR positioned at byte `offset` of the stream (encrypting and decrypting are one)."""
    block, skip = divmod(offset, _BLOCK)
    context = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(_BLOCK, "big"))).encryptor()
    if skip:
        context.update(bytes(skip))
    return context


def crypt(key: bytes, offset: int, data: bytes | memoryview) -> bytes:
    """`data` found at `offset` of a stream under `key`, in clear (or the reverse)."""
    return positioned(key, offset).update(data)


class StreamCipher:
    """Encrypts a stream written in order from its start (a body as it arrives)."""

    def __init__(self, key: bytes) -> None:
        self._context = positioned(key, 0)

    def update(self, data: bytes) -> bytes:
        return self._context.update(data)
