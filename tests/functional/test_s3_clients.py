"""Walrus through unmodified real clients with default settings: the aws CLI's `s3` commands,
s3cmd, and presigned URLs (SigV4 and SigV2) fetched with plain HTTP."""

from __future__ import annotations

import hashlib
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig

from support.cloud import Cloud


def _aws(cloud: Cloud, *args: str) -> str:
    result = cloud.run("aws", "--profile", "mallee", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_aws_s3_mb_cp_sync_rm_rb(cloud: Cloud, tmp_path: Path) -> None:
    bucket = f"cli-{secrets.token_hex(4)}"
    _aws(cloud, "s3", "mb", f"s3://{bucket}")
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    for name, size in (("a.txt", 10), ("nested/b.bin", 300_000), ("nested/deeper/c with space.txt", 1)):
        (src / name).write_bytes(os.urandom(size))
    _aws(cloud, "s3", "cp", str(src / "a.txt"), f"s3://{bucket}/single/a.txt")
    _aws(cloud, "s3", "sync", str(src), f"s3://{bucket}/tree")
    listing = _aws(cloud, "s3", "ls", "--recursive", f"s3://{bucket}")
    assert "tree/nested/deeper/c with space.txt" in listing and "single/a.txt" in listing
    dst = tmp_path / "dst"
    _aws(cloud, "s3", "sync", f"s3://{bucket}/tree", str(dst))
    for name in ("a.txt", "nested/b.bin", "nested/deeper/c with space.txt"):
        assert _digest(dst / name) == _digest(src / name)
    again = _aws(cloud, "s3", "sync", str(src), f"s3://{bucket}/tree")
    assert again.strip() == ""  # nothing changed: nothing uploaded
    _aws(cloud, "s3", "rm", "--recursive", f"s3://{bucket}")
    _aws(cloud, "s3", "rb", f"s3://{bucket}")
    assert bucket not in _aws(cloud, "s3", "ls")


def test_aws_s3_cp_large_file_round_trip(cloud: Cloud, tmp_path: Path) -> None:
    bucket = f"big-{secrets.token_hex(4)}"
    _aws(cloud, "s3", "mb", f"s3://{bucket}")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))  # above the CLI's 8 MiB multipart threshold
    _aws(cloud, "s3", "cp", str(src), f"s3://{bucket}/big.bin")
    _aws(cloud, "s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert _digest(tmp_path / "back.bin") == _digest(src)


def _s3cmd(cloud: Cloud, tmp_path: Path, *args: str) -> str:
    host = cloud.endpoint.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {cloud.admin.access_key_id}\nsecret_key = {cloud.admin.secret_access_key}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nbucket_location = {cloud.region}\n"
        "signature_v2 = False\n"
    )
    result = cloud.run("s3cmd", "-c", str(config), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_s3cmd_put_get_ls_del_sync(cloud: Cloud, tmp_path: Path) -> None:
    bucket = f"s3cmd-{secrets.token_hex(4)}"
    _s3cmd(cloud, tmp_path, "mb", f"s3://{bucket}")
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(100_000))
    _s3cmd(cloud, tmp_path, "put", str(src), f"s3://{bucket}/dir/file.bin")
    assert "dir/file.bin" in _s3cmd(cloud, tmp_path, "ls", "--recursive", f"s3://{bucket}")
    _s3cmd(cloud, tmp_path, "get", f"s3://{bucket}/dir/file.bin", str(tmp_path / "back.bin"))
    assert _digest(tmp_path / "back.bin") == _digest(src)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "x.txt").write_text("x")
    (tree / "y.txt").write_text("y")
    _s3cmd(cloud, tmp_path, "sync", str(tree) + "/", f"s3://{bucket}/tree/")
    listed = _s3cmd(cloud, tmp_path, "ls", f"s3://{bucket}/tree/")
    assert "tree/x.txt" in listed and "tree/y.txt" in listed
    url = _s3cmd(cloud, tmp_path, "signurl", f"s3://{bucket}/dir/file.bin", "+300").strip()
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == src.read_bytes()
    _s3cmd(cloud, tmp_path, "del", "--recursive", "--force", f"s3://{bucket}")
    _s3cmd(cloud, tmp_path, "rb", f"s3://{bucket}")


def test_s3cmd_multipart_upload(cloud: Cloud, tmp_path: Path) -> None:
    bucket = f"s3cmdmp-{secrets.token_hex(4)}"
    _s3cmd(cloud, tmp_path, "mb", f"s3://{bucket}")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    _s3cmd(cloud, tmp_path, "put", "--multipart-chunk-size-mb=5", str(src), f"s3://{bucket}/big.bin")
    _s3cmd(cloud, tmp_path, "get", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert _digest(tmp_path / "back.bin") == _digest(src)


def test_s3cmd_setacl_public_and_private(cloud: Cloud, tmp_path: Path) -> None:
    bucket = f"s3cmdacl-{secrets.token_hex(4)}"
    _s3cmd(cloud, tmp_path, "mb", f"s3://{bucket}")
    _s3cmd(cloud, tmp_path, "setownership", f"s3://{bucket}", "ObjectWriter")  # ACLs on
    _s3cmd(cloud, tmp_path, "setblockpublicaccess", f"s3://{bucket}", "")  # every block off
    src = tmp_path / "page.html"
    src.write_bytes(b"<p>hello</p>")
    _s3cmd(cloud, tmp_path, "put", str(src), f"s3://{bucket}/page.html")
    url = f"{cloud.endpoint}/{bucket}/page.html"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url, timeout=10)
    assert denied.value.code == 403
    _s3cmd(cloud, tmp_path, "setacl", "--acl-public", f"s3://{bucket}/page.html")
    assert "*anon*: READ" in _s3cmd(cloud, tmp_path, "info", f"s3://{bucket}/page.html")
    with urllib.request.urlopen(url, timeout=10) as response:  # anonymous
        assert response.read() == b"<p>hello</p>"
    _s3cmd(cloud, tmp_path, "setacl", "--acl-private", f"s3://{bucket}/page.html")
    with pytest.raises(urllib.error.HTTPError) as again:
        urllib.request.urlopen(url, timeout=10)
    assert again.value.code == 403
    _s3cmd(cloud, tmp_path, "del", f"s3://{bucket}/page.html")
    _s3cmd(cloud, tmp_path, "rb", f"s3://{bucket}")


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_get_and_put(cloud: Cloud, signature_version: str) -> None:
    s3 = cloud.client(
        "s3", config=BotoConfig(signature_version=signature_version, s3={"addressing_style": "path"})
    )
    bucket = f"presign-{secrets.token_hex(4)}"
    cloud.client("s3").create_bucket(Bucket=bucket)
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60
    )
    # urllib would add a form Content-Type, which SigV2 signs: send the (empty) type that was signed.
    request = urllib.request.Request(
        put_url, data=b"uploaded by url", method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60
    )
    with urllib.request.urlopen(get_url, timeout=10) as response:
        assert response.read() == b"uploaded by url"
    tampered = get_url.replace("up.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert err.value.code == 403
    assert b"SignatureDoesNotMatch" in err.value.read()


def test_expired_presigned_url_is_access_denied(cloud: Cloud) -> None:
    import time

    s3 = cloud.client("s3")
    bucket = f"expiry-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=1)
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 403
    assert b"<Code>AccessDenied</Code>" in err.value.read()


def test_boto3_default_session_with_profile(cloud: Cloud, tmp_path: Path) -> None:
    """boto3.Session(profile_name="mallee") needs nothing else: endpoint and region come from the profile."""
    import os as _os

    old = {k: _os.environ.get(k) for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
    _os.environ.update({k: cloud.env[k] for k in old})
    try:
        s3 = boto3.Session(profile_name="mallee").client("s3")
        bucket = f"profile-{secrets.token_hex(4)}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"v")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    finally:
        for k, v in old.items():
            if v is None:
                _os.environ.pop(k, None)
            else:
                _os.environ[k] = v
