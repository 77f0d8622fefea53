"""Writing credentials where clients look for them: an aws CLI / boto3 profile (with endpoint_url
and region, so `aws --profile NAME …` needs nothing else) and a Eucalyptus-style eucarc."""

from __future__ import annotations

import configparser
import os
from pathlib import Path


def _update_ini(path: Path, section: str, values: dict[str, str], mode: int) -> None:
    parser = configparser.RawConfigParser()
    if path.exists():
        parser.read(path)
    if not parser.has_section(section):
        parser.add_section(section)
    for k, v in values.items():
        parser.set(section, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        parser.write(f)
    os.replace(tmp, path)


def has_profile(config_file: Path, name: str) -> bool:
    parser = configparser.RawConfigParser()
    if config_file.exists():
        parser.read(config_file)
    return parser.has_section(_config_section(name))


def _config_section(name: str) -> str:
    return "default" if name == "default" else f"profile {name}"


def write_profile(
    config_file: Path,
    credentials_file: Path,
    name: str,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    endpoint_url: str,
    session_token: str | None = None,
) -> None:
    creds = {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
    if session_token:
        creds["aws_session_token"] = session_token
    _update_ini(credentials_file, name, creds, 0o600)
    _update_ini(
        config_file,
        _config_section(name),
        # Mallee serves EC2, IAM, STS and S3 on one endpoint; path-style S3 needs no DNS set-up.
        {"region": region, "endpoint_url": endpoint_url, "s3": "\naddressing_style = path"},
        0o644,
    )


def write_eucarc(
    path: Path, access_key_id: str, secret_access_key: str, region: str, endpoint_url: str, account_id: str
) -> None:
    lines = [
        f"export AWS_ACCESS_KEY_ID={access_key_id}",
        f"export AWS_SECRET_ACCESS_KEY={secret_access_key}",
        f"export AWS_DEFAULT_REGION={region}",
        f"export AWS_ENDPOINT_URL={endpoint_url}",
        f"export EC2_URL={endpoint_url}/services/compute",
        f"export S3_URL={endpoint_url}/services/objectstorage",
        f"export EUARE_URL={endpoint_url}/services/Euare",
        f"export TOKEN_URL={endpoint_url}/services/Tokens",
        f"export EC2_ACCESS_KEY={access_key_id}",
        f"export EC2_SECRET_KEY={secret_access_key}",
        f"export EC2_ACCOUNT_NUMBER={account_id}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
