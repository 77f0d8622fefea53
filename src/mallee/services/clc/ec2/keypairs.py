"""Key pairs: CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair.

Only the public half is stored (OpenSSH format, for the metadata service's `public-keys/`). The
private key of a created pair is returned once and forgotten. Fingerprints are what AWS shows:

- created RSA: SHA-1 of the DER PKCS#8 private key (`openssl pkcs8 … -topk8 -nocrypt | openssl sha1 -c`);
- imported RSA: MD5 of the DER SubjectPublicKeyInfo (`openssl rsa -pubout -outform DER | openssl md5 -c`);
- ED25519 (both): base64 of the SHA-256 of the OpenSSH public key blob, *with* its `=` padding and
  without OpenSSH's `SHA256:` prefix (what EC2 answers; `ssh-keygen -l` shows it unpadded).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select

from mallee.core import clock, ids
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import filters, tags
from mallee.services.clc.tables import KeyPair

RSA_BITS = 2048
_MIN_RSA_BITS = 1024
_MAX_RSA_BITS = 16384


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def _ssh_blob(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def ed25519_fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    return base64.b64encode(hashlib.sha256(_ssh_blob(key)).digest()).decode()


def created_rsa_fingerprint(key: rsa.RSAPrivateKey) -> str:
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _colons(hashlib.sha1(der).digest())  # noqa: S324 - AWS's definition


def imported_rsa_fingerprint(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _colons(hashlib.md5(der).digest())  # noqa: S324 - AWS's definition


def openssh_line(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey, comment: str) -> str:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def _check_name(name: str) -> None:
    # Printable ASCII only: a control character (NUL, tab) would be stored, listed and then not
    # deletable by its listed name.
    if not name or len(name) > 255 or not name.isascii() or not name.isprintable() or name != name.strip():
        raise CloudError(
            "InvalidParameterValue",
            "Key pair names are 1-255 printable ASCII characters without leading or trailing spaces.",
        )


def _store(
    ctx: RequestContext, name: str, key_type: str, fingerprint: str, public_key: str, specs: Any
) -> KeyPair:
    s = ctx.session
    if s.scalar(select(KeyPair).where(KeyPair.account_id == ctx.account_id, KeyPair.name == name)):
        raise CloudError("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
    row = KeyPair(
        id=ids.resource_id("key"),
        account_id=ctx.account_id,
        name=name,
        key_type=key_type,
        fingerprint=fingerprint,
        public_key=public_key,
        created=clock.now(),
    )
    s.add(row)
    s.flush()
    tags.from_specifications(s, str(ctx.account_id), row.id, "key-pair", specs)
    return row


@EC2.operation()
def create_key_pair(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    name = p["KeyName"]
    _check_name(name)
    key_type = p.get("KeyType") or "rsa"
    key_format = p.get("KeyFormat") or "pem"
    if key_format == "ppk":
        raise CloudError(
            "UnsupportedOperation",
            "Mallee does not write PuTTY (ppk) keys yet; create a pem key and convert it with puttygen.",
        )
    if key_format != "pem":
        raise CloudError("InvalidParameterValue", f"Invalid KeyFormat: {key_format}")
    if key_type == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        material = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        fingerprint = created_rsa_fingerprint(rsa_key)
        public = openssh_line(rsa_key.public_key(), name)
    elif key_type == "ed25519":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        material = ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        fingerprint = ed25519_fingerprint(ed_key.public_key())
        public = openssh_line(ed_key.public_key(), name)
    else:
        raise CloudError("InvalidParameterValue", f"Invalid KeyType: {key_type}")
    row = _store(ctx, name, key_type, fingerprint, public, p.get("TagSpecifications"))
    return {
        "KeyName": row.name,
        "KeyFingerprint": row.fingerprint,
        "KeyMaterial": material,
        "KeyPairId": row.id,
        "Tags": tags.tags_of(ctx.session, [row.id])[row.id],
    }


def _rfc4716_to_openssh(text: str) -> str:
    """`---- BEGIN SSH2 PUBLIC KEY ----` files (RFC 4716) to an OpenSSH line."""
    body: list[str] = []
    lines = iter(text.strip().splitlines()[1:-1])
    for line in lines:
        if ":" in line and not body:  # a header, possibly continued with a trailing backslash
            while line.endswith("\\"):
                line = next(lines, "")
            continue
        body.append(line.strip())
    blob = base64.b64decode("".join(body))
    algorithm = blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode()
    return f"{algorithm} {base64.b64encode(blob).decode()}"


def parse_public_key(material: bytes) -> tuple[str, str, str]:
    """(key type, fingerprint, OpenSSH line) of an imported public key, or InvalidKey.Format."""
    try:
        text = material.decode("ascii").strip()
        comment = ""
        if text.startswith("---- BEGIN SSH2 PUBLIC KEY"):
            text = _rfc4716_to_openssh(text)
        if text.startswith("-----BEGIN"):
            key: Any = serialization.load_pem_public_key(text.encode())
        elif text.startswith(("ssh-", "ecdsa-")):
            parts = text.split(None, 2)
            comment = parts[2] if len(parts) > 2 else ""
            key = serialization.load_ssh_public_key(" ".join(parts[:2]).encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except (ValueError, UnicodeDecodeError, binascii.Error, IndexError, TypeError) as exc:
        raise CloudError("InvalidKey.Format", "Key is not in valid OpenSSH public key format") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if not _MIN_RSA_BITS <= key.key_size <= _MAX_RSA_BITS:
            raise CloudError(
                "InvalidKey.Format", f"RSA keys must have {_MIN_RSA_BITS} to {_MAX_RSA_BITS} bits."
            )
        return "rsa", imported_rsa_fingerprint(key), openssh_line(key, comment)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", ed25519_fingerprint(key), openssh_line(key, comment)
    raise CloudError("InvalidKey.Format", "Key is not in valid OpenSSH public key format (rsa or ed25519)")


@EC2.operation()
def import_key_pair(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    name = p["KeyName"]
    _check_name(name)
    key_type, fingerprint, public = parse_public_key(p["PublicKeyMaterial"])
    row = _store(ctx, name, key_type, fingerprint, public, p.get("TagSpecifications"))
    return {
        "KeyName": row.name,
        "KeyFingerprint": row.fingerprint,
        "KeyPairId": row.id,
        "Tags": tags.tags_of(ctx.session, [row.id])[row.id],
    }


_FILTERS: dict[str, filters.Getter[dict[str, Any]]] = {
    "key-name": lambda v: v["KeyName"],
    "key-pair-id": lambda v: v["KeyPairId"],
    "fingerprint": lambda v: v["KeyFingerprint"],
    "key-type": lambda v: v["KeyType"],
}


@EC2.operation()
def describe_key_pairs(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    rows = list(
        ctx.session.scalars(
            select(KeyPair).where(KeyPair.account_id == ctx.account_id).order_by(KeyPair.name)
        )
    )
    names, key_ids = p.get("KeyNames") or [], p.get("KeyPairIds") or []
    by_name, by_id = {r.name: r for r in rows}, {r.id: r for r in rows}
    for name in names:
        if name not in by_name:
            raise CloudError("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    for key_id in key_ids:
        if key_id not in by_id:
            raise CloudError("InvalidKeyPair.NotFound", f"The key pair ID '{key_id}' does not exist")
    if names or key_ids:
        rows = [r for r in rows if r.name in names or r.id in key_ids]
    tag_map = tags.tags_of(ctx.session, [r.id for r in rows])
    views = []
    for r in rows:
        view: dict[str, Any] = {
            "KeyPairId": r.id,
            "KeyName": r.name,
            "KeyFingerprint": r.fingerprint,
            "KeyType": r.key_type,
            "Tags": tag_map[r.id],
            "CreateTime": r.created,
        }
        if p.get("IncludePublicKey"):
            view["PublicKey"] = r.public_key
        views.append(view)
    return {"KeyPairs": tags.with_tag_filters(views, p.get("Filters"), _FILTERS)}


@EC2.operation()
def delete_key_pair(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    name, key_id = p.get("KeyName"), p.get("KeyPairId")
    if not name and not key_id:
        raise CloudError("MissingParameter", "The request must contain the parameter KeyName or KeyPairId")
    q = select(KeyPair).where(KeyPair.account_id == ctx.account_id)
    q = q.where(KeyPair.id == key_id) if key_id else q.where(KeyPair.name == name)
    row = ctx.session.scalar(q)
    if row is None:  # deleting a key pair that is not there succeeds, as on AWS
        return {"Return": True}
    tags.remove_all(ctx.session, row.id)
    ctx.session.delete(row)
    return {"Return": True, "KeyPairId": row.id}


def public_key_of(s: Any, account_id: str, name: str) -> str | None:
    """The OpenSSH public key of an account's key pair (for RunInstances and the metadata service)."""
    row = s.scalar(select(KeyPair).where(KeyPair.account_id == account_id, KeyPair.name == name))
    return row.public_key if row is not None else None
