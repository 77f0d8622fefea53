"""First start of a cloud: the data directory, its keys, the database, the administrator.

Idempotent: each step checks what exists and creates only what is missing, so `mallee up` can run
it on every start.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mallee.core import awsprofile, clock
from mallee.core.config import Config
from mallee.db import migrate
from mallee.db.session import Database
from mallee.services.clc.ec2.instance_types import install_defaults
from mallee.services.clc.iam import store
from mallee.services.clc.tables import AccessKey, Cluster, StorageController

log = logging.getLogger(__name__)

SYSTEM_ACCOUNT = "mallee"  # the cloud administrator's account (Eucalyptus calls it "eucalyptus")
ADMIN_PROFILE = "mallee"


@dataclass(frozen=True)
class AdminCredentials:
    account_id: str
    access_key_id: str
    secret_access_key: str
    created: bool  # whether this start created them


def _private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_keys(cfg: Config) -> None:
    """The deployment key (components' rpc) and the cloud's RSA certificate (image bundles)."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not cfg.deployment_key_file.exists():
        _private_file(cfg.deployment_key_file, (secrets.token_hex(32) + "\n").encode())
    key_file, cert_file = cfg.data_dir / "cloud-pk.pem", cfg.data_dir / "cloud-cert.pem"
    if not key_file.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "mallee cloud"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mallee"),
            ]
        )
        now = clock.now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        _private_file(
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_database(cfg: Config) -> AdminCredentials:
    db = Database(cfg.database_url_for("clc"))
    try:
        migrate.upgrade(db.engine, "clc")
        with db.session() as s:
            install_defaults(s)
            own = s.get(Cluster, cfg.zone)
            if own is None:
                s.add(
                    Cluster(
                        zone=cfg.zone,
                        name=f"cluster-{cfg.zone}",
                        host=cfg.host,
                        port=cfg.port("cc"),
                        created=clock.now(),
                    )
                )
            else:  # the CLC's own zone's controller is the configured one, wherever it moved
                own.host, own.port = cfg.host, cfg.port("cc")
            own_sc = s.get(StorageController, cfg.zone)
            if own_sc is None:
                s.add(
                    StorageController(
                        zone=cfg.zone,
                        name=f"sc-{cfg.zone}",
                        host=cfg.host,
                        port=cfg.port("sc"),
                        created=clock.now(),
                    )
                )
            else:  # and so is its storage controller
                own_sc.host, own_sc.port = cfg.host, cfg.port("sc")
            account = store.system_account(s)
            created = account is None
            if account is None:
                account = store.create_account(s, SYSTEM_ACCOUNT, is_system=True)
            key = s.scalar(
                select(AccessKey)
                .where(
                    AccessKey.account_id == account.id,
                    AccessKey.user_id.is_(None),
                    AccessKey.session_token.is_(None),
                )
                .order_by(AccessKey.created)
            )
            if key is None:
                key = store.create_access_key(s, account.id, None)
                created = True
            return AdminCredentials(account.id, key.id, key.secret, created)
    finally:
        db.dispose()


def initialise(cfg: Config) -> AdminCredentials:
    ensure_keys(cfg)
    admin = ensure_database(cfg)
    if admin.created or not awsprofile.has_profile(cfg.aws_config_file, ADMIN_PROFILE):
        awsprofile.write_profile(
            cfg.aws_config_file,
            cfg.aws_credentials_file,
            ADMIN_PROFILE,
            admin.access_key_id,
            admin.secret_access_key,
            cfg.region,
            cfg.endpoint_url,
        )
        awsprofile.write_eucarc(
            cfg.data_dir / "credentials" / f"{ADMIN_PROFILE}.eucarc",
            admin.access_key_id,
            admin.secret_access_key,
            cfg.region,
            cfg.endpoint_url,
            admin.account_id,
        )
    return admin
