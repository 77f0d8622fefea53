"""EC2 key pairs against a running cloud: create, import, describe, delete, fingerprints as AWS."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from functional.conftest import on_both_databases
from support.cloud import Cloud, Keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def _name() -> str:
    return f"kp-{secrets.token_hex(4)}"


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def test_create_rsa_key_pair_fingerprint_is_sha1_of_pkcs8(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    name = _name()
    made = ec2.create_key_pair(KeyName=name)
    assert made["KeyName"] == name and made["KeyPairId"].startswith("key-") and len(made["KeyPairId"]) == 21
    assert made["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(made["KeyMaterial"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert made["KeyFingerprint"] == _colons(hashlib.sha1(pkcs8).digest())
    shown = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"][0]
    assert shown["KeyFingerprint"] == made["KeyFingerprint"] and shown["KeyType"] == "rsa"
    expected = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert shown["PublicKey"].startswith(expected.decode())
    assert "PublicKey" not in ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"][0]


def test_create_ed25519_key_pair(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    made = ec2.create_key_pair(
        KeyName=_name(),
        KeyType="ed25519",
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "team", "Value": "blue"}]}],
    )
    assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(made["KeyMaterial"].encode(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    assert made["KeyFingerprint"] == base64.b64encode(hashlib.sha256(blob).digest()).decode()
    assert made["KeyFingerprint"].endswith("=")  # EC2 keeps base64's padding
    assert made["Tags"] == [{"Key": "team", "Value": "blue"}]
    found = ec2.describe_key_pairs(Filters=[{"Name": "tag:team", "Values": ["blue"]}])["KeyPairs"]
    assert [k["KeyPairId"] for k in found] == [made["KeyPairId"]]


def test_import_rsa_and_ed25519_public_keys(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_line = rsa_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    imported = ec2.import_key_pair(KeyName=_name(), PublicKeyMaterial=rsa_line + b" me@laptop")
    spki = rsa_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert imported["KeyFingerprint"] == _colons(hashlib.md5(spki).digest())

    ed_key = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_line = ed_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    ed_name = _name()
    ed = ec2.import_key_pair(KeyName=ed_name, PublicKeyMaterial=ed_line)
    digest = hashlib.sha256(base64.b64decode(ed_line.split()[1])).digest()
    assert ed["KeyFingerprint"] == base64.b64encode(digest).decode()
    shown = ec2.describe_key_pairs(KeyNames=[ed_name], IncludePublicKey=True)["KeyPairs"][0]
    assert shown["KeyType"] == "ed25519" and shown["PublicKey"].startswith(ed_line.decode())
    by_fp = ec2.describe_key_pairs(Filters=[{"Name": "fingerprint", "Values": [ed["KeyFingerprint"]]}])
    assert [k["KeyName"] for k in by_fp["KeyPairs"]] == [ed_name]


def test_import_rejects_garbage(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    for material in (b"ssh-rsa not-base64!!", b"hello"):
        with pytest.raises(ClientError) as bad:
            ec2.import_key_pair(KeyName=_name(), PublicKeyMaterial=material)
        assert _code(bad) == "InvalidKey.Format"


def test_errors_duplicates_and_idempotent_delete(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    name = _name()
    made = ec2.create_key_pair(KeyName=name)
    with pytest.raises(ClientError) as dup:
        ec2.create_key_pair(KeyName=name)
    assert _code(dup) == "InvalidKeyPair.Duplicate"
    with pytest.raises(ClientError) as missing:
        ec2.describe_key_pairs(KeyNames=["no-such-key"])
    assert _code(missing) == "InvalidKeyPair.NotFound"
    with pytest.raises(ClientError) as bad_type:
        ec2.create_key_pair(KeyName=_name(), KeyType="dsa")
    assert _code(bad_type) in ("InvalidParameterValue", "ValidationError")
    with pytest.raises(ClientError) as ppk:
        ec2.create_key_pair(KeyName=_name(), KeyFormat="ppk")
    assert _code(ppk) == "UnsupportedOperation"
    by_id = ec2.describe_key_pairs(KeyPairIds=[made["KeyPairId"]])["KeyPairs"]
    assert [k["KeyName"] for k in by_id] == [name]
    assert ec2.delete_key_pair(KeyPairId=made["KeyPairId"])["Return"] is True
    assert ec2.delete_key_pair(KeyName=name)["Return"] is True  # already gone: still succeeds
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"] == []


def test_key_pairs_are_per_account(cloud: Cloud, account: Keys) -> None:
    mine, theirs = cloud.client("ec2", account), cloud.client("ec2", cloud.new_account())
    name = _name()
    mine.create_key_pair(KeyName=name)
    assert theirs.describe_key_pairs()["KeyPairs"] == []
    theirs.create_key_pair(KeyName=name)  # the same name in another account is fine
    theirs.delete_key_pair(KeyName=name)
    assert [k["KeyName"] for k in mine.describe_key_pairs()["KeyPairs"]] == [name]
