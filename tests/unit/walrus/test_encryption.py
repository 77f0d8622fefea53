"""Encryption at rest (`walrus/encryption.py`): CTR at any offset, data keys wrapped and
unwrapped under the master key or a customer's key, SSE-C keys checked as S3 checks them, and how a
write's and a bucket's settings choose the encryption."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from mallee.core.errors import CloudError
from mallee.services.walrus.encryption import (
    SSE_C,
    SSE_S3,
    CustomerKey,
    Keys,
    Sealing,
    StreamCipher,
    crypt,
    customer_for_read,
    default_algorithm,
    load_master_key,
    sealing_for_write,
)


def _customer(key: bytes | None = None) -> dict[str, str]:
    key = key or os.urandom(32)
    return {
        "SSECustomerAlgorithm": "AES256",
        "SSECustomerKey": base64.b64encode(key).decode(),
        "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode(),
    }


def test_a_stream_decrypts_at_any_offset() -> None:
    key = os.urandom(32)
    plain = os.urandom(100_003)
    stream = StreamCipher(key)
    stored = b"".join(stream.update(plain[n : n + 4099]) for n in range(0, len(plain), 4099))
    assert stored != plain and len(stored) == len(plain)
    for offset, length in ((0, 10), (15, 2), (16, 16), (17, 5000), (99_990, 13)):
        assert crypt(key, offset, stored[offset : offset + length]) == plain[offset : offset + length]


def test_data_keys_unwrap_only_under_their_wrapping_key() -> None:
    keys = Keys(os.urandom(32))
    new = keys.new_key(Sealing(SSE_S3))
    assert new is not None and new.key not in base64.urlsafe_b64decode(new.wrapped[3:])
    assert keys.unwrap(new.wrapped, SSE_S3, None) == new.key
    with pytest.raises(CloudError):
        Keys(os.urandom(32)).unwrap(new.wrapped, SSE_S3, None)  # another cloud's master key
    customer = CustomerKey.of(_customer())
    assert customer is not None
    sealed = keys.new_key(Sealing(SSE_C, customer))
    assert sealed is not None and keys.unwrap(sealed.wrapped, SSE_C, customer) == sealed.key
    other = CustomerKey.of(_customer())
    with pytest.raises(CloudError) as err:
        keys.unwrap(sealed.wrapped, SSE_C, other)
    assert err.value.code == "AccessDenied"
    assert keys.new_key(Sealing()) is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"SSECustomerKey": base64.b64encode(b"short").decode()}, "InvalidArgument"),
        ({"SSECustomerKeyMD5": base64.b64encode(b"0" * 16).decode()}, "InvalidArgument"),
        ({"SSECustomerAlgorithm": "AES128"}, "InvalidEncryptionAlgorithmError"),
        ({"SSECustomerAlgorithm": None}, "InvalidArgument"),
        ({"SSECustomerKey": "not base64!"}, "InvalidArgument"),
    ],
)
def test_customer_keys_are_checked_as_s3_checks_them(change: dict[str, str | None], code: str) -> None:
    params = {**_customer(), **change}
    with pytest.raises(CloudError) as err:
        CustomerKey.of({k: v for k, v in params.items() if v is not None})
    assert err.value.code == code


def test_reads_need_the_key_they_were_written_with() -> None:
    keys = Keys(os.urandom(32))
    raw = os.urandom(32)
    customer = CustomerKey.of(_customer(raw))
    assert customer is not None
    mac = keys.customer_hmac(customer)
    assert raw.hex() not in mac and customer_for_read(keys, _customer(raw), SSE_C, mac) == customer
    for params, code in (({}, "InvalidRequest"), (_customer(), "AccessDenied")):
        with pytest.raises(CloudError) as err:
            customer_for_read(keys, params, SSE_C, mac)
        assert err.value.code == code
    with pytest.raises(CloudError) as err:
        customer_for_read(keys, _customer(raw), SSE_S3, "")
    assert err.value.code == "InvalidRequest"
    assert customer_for_read(keys, {}, SSE_S3, "") is None


def test_a_write_takes_its_headers_else_the_buckets_default() -> None:
    assert sealing_for_write({}, "") == Sealing()
    assert sealing_for_write({}, SSE_S3) == Sealing(SSE_S3)
    assert sealing_for_write({"ServerSideEncryption": "AES256"}, "").mode == SSE_S3
    assert sealing_for_write(_customer(), SSE_S3).mode == SSE_C
    for params, code in (
        ({"ServerSideEncryption": "aws:kms"}, "NotImplemented"),
        ({"ServerSideEncryption": "AES128"}, "InvalidArgument"),
        ({"ServerSideEncryption": "AES256", **_customer()}, "InvalidArgument"),
    ):
        with pytest.raises(CloudError) as err:
            sealing_for_write(params, "")
        assert err.value.code == code
    stored = '[{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": false}]'
    assert default_algorithm(stored) == SSE_S3


def test_the_master_key_is_made_once_private(tmp_path: Path) -> None:
    path = tmp_path / "walrus-master.key"
    first = load_master_key(path)
    assert len(first) == 32 and load_master_key(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_bucket_encryption_and_object_lock_calls_are_the_iam_actions_aws_names() -> None:
    from mallee.services.walrus.access import action_of

    assert [
        action_of(op, {}) for op in ("PutBucketEncryption", "GetBucketEncryption", "DeleteBucketEncryption")
    ] == [
        "s3:PutEncryptionConfiguration",
        "s3:GetEncryptionConfiguration",
        "s3:PutEncryptionConfiguration",
    ]
    assert action_of("PutObjectLockConfiguration", {}) == "s3:PutBucketObjectLockConfiguration"
    assert action_of("GetObjectRetention", {"VersionId": "v"}) == "s3:GetObjectRetention"
