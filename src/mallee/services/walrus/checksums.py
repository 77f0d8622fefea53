"""S3's flexible checksums: CRC32, CRC32C, CRC64NVME, SHA1, SHA256, sent as x-amz-checksum-* headers
or aws-chunked trailers (boto3 >= 1.36 and the aws CLI send CRC32 or CRC64NVME by default)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from collections.abc import Callable, Collection

from mallee.core.context import Headers
from mallee.core.errors import CloudError

try:  # awscrt has fast C implementations of the CRCs botocore uses
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - awscrt is a dependency
    _crt = None

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


class _Crc:
    def __init__(self, fn: Callable[[bytes, int], int], width: int) -> None:
        self._fn, self._width, self._value = fn, width, 0

    def update(self, data: bytes) -> None:
        self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


def _new(algorithm: str) -> _Crc | hashlib._Hash:
    if algorithm == "crc32":
        return _Crc(zlib.crc32, 4)
    if algorithm == "sha1":
        return hashlib.sha1()
    if algorithm == "sha256":
        return hashlib.sha256()
    if _crt is None:
        raise CloudError("InvalidRequest", f"Checksum algorithm {algorithm} is not supported by this server.")
    if algorithm == "crc32c":
        return _Crc(_crt.crc32c, 4)
    return _Crc(_crt.crc64nvme, 8)


def requested(headers: Headers) -> list[str]:
    """The algorithms the client sent (or announced as a trailer) values for."""
    found = [a for a in ALGORITHMS if headers.get(f"x-amz-checksum-{a}")]
    for name in (headers.get("x-amz-trailer") or "").split(","):
        name = name.strip().lower()
        if name.startswith("x-amz-checksum-") and name[15:] in ALGORITHMS and name[15:] not in found:
            found.append(name[15:])
    algorithm = (
        headers.get("x-amz-sdk-checksum-algorithm") or headers.get("x-amz-checksum-algorithm") or ""
    ).lower()
    if algorithm and algorithm not in ALGORITHMS:
        raise CloudError("InvalidRequest", f"Checksum algorithm {algorithm} is not supported.")
    return found


class Hashers:
    def __init__(self, algorithms: list[str]) -> None:
        self._hashers = {a: _new(a) for a in algorithms}

    def update(self, data: bytes) -> None:
        for h in self._hashers.values():
            h.update(data)

    def values(self) -> dict[str, str]:
        """algorithm -> base64 value of what was seen (no client value to compare with)."""
        return {a: base64.b64encode(h.digest()).decode() for a, h in self._hashers.items()}

    def verify(
        self, headers: Headers, trailers: dict[str, str], unsent: Collection[str] = ()
    ) -> dict[str, str]:
        """Compare with what the client sent (`unsent`: algorithms computed for ourselves, that it
        need not have sent); return algorithm -> base64 value to store."""
        values = self.values()
        for algorithm, computed in values.items():
            name = f"x-amz-checksum-{algorithm}"
            sent = trailers.get(name) or headers.get(name)
            if sent is None and algorithm in unsent:
                continue
            if sent is None:
                raise CloudError("InvalidRequest", f"The {name} trailer was announced but not sent.")
            sent = sent.strip()
            if not _well_formed(sent, computed):  # not a digest of this algorithm at all
                raise CloudError("InvalidRequest", f"Value for {name} header is invalid.")
            if not hmac.compare_digest(sent, computed):
                raise CloudError(
                    "BadDigest",
                    f"The {algorithm.upper()} you specified did not match the calculated checksum.",
                )
        return values


def _well_formed(sent: str, computed: str) -> bool:
    """Whether `sent` is base64 of as many bytes as the `computed` digest (it is then ASCII, which
    hmac.compare_digest requires of strings)."""
    try:
        decoded = base64.b64decode(sent.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):  # binascii.Error is a ValueError
        return False
    return len(decoded) == len(base64.b64decode(computed))


def checksum_type(sums: dict[str, str]) -> str:
    """An object's ChecksumType: COMPOSITE when its checksum is over its parts' (stored as
    "<value>-<parts>"), else FULL_OBJECT."""
    return "COMPOSITE" if any("-" in value for value in sums.values()) else "FULL_OBJECT"
