"""The node's image cache with bundles: fetch the parts (the manifest comes with the launch, as the
CLC read it at registration), verify, decrypt, cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mallee.images.bundle import bundle_file, parse_manifest
from mallee.rpc.node import BundleManifest
from mallee.services.node.imagecache import ImageCache, ImageFetchError, ImageSource, disk_format

BASE = "http://walrus.example/images/tiny/"
PAYLOAD = os.urandom(5000)


@pytest.fixture(scope="module")
def cloud_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _bundled(
    tmp_path: Path, key: rsa.RSAPrivateKey, payload: bytes
) -> tuple[dict[str, bytes], ImageSource, Path]:
    """A bundle of `payload` as URL -> bytes (what Walrus would serve), its source and the key file."""
    private, public = _pem(key)
    image = tmp_path / "rootfs.img"
    image.write_bytes(payload)
    made = bundle_file(
        image, tmp_path / "bundle", image_type="machine", cloud_cert_pem=public, part_size=1000
    )
    objects = {BASE + made.manifest.name: made.manifest.read_bytes()}
    objects |= {BASE + part.name + "?X-Amz-Signature=x": part.read_bytes() for part in made.parts}
    parts = tuple(url for url in objects if ".part." in url)
    manifest = parse_manifest(made.manifest.read_bytes())
    source = ImageSource(
        "ami-0123456789abcdef0",
        BASE + made.manifest.name,
        len(payload),
        None,
        "bundle",
        parts,
        BundleManifest(
            encrypted_key=manifest.ec2_encrypted_key,
            encrypted_iv=manifest.ec2_encrypted_iv,
            digest=manifest.digest,
            parts=manifest.parts,
        ),
    )
    key_file = tmp_path / "cloud-pk.pem"
    key_file.write_bytes(private)
    return objects, source, key_file


def test_a_bundle_is_fetched_part_by_part_and_cached_unbundled(
    tmp_path: Path, cloud_key: rsa.RSAPrivateKey
) -> None:
    payload = os.urandom(10_000)  # incompressible: several 1000-byte parts
    objects, source, key_file = _bundled(tmp_path, cloud_key, payload)
    fetched: list[str] = []

    def read(url: str) -> bytes:
        fetched.append(url)
        return objects[url]

    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=key_file, read=read)
    path = cache.get(source)
    assert path.read_bytes() == payload
    assert disk_format(source, path) == "raw"
    assert sorted(fetched) == sorted(source.parts) and len(fetched) > 3  # each part once, no manifest
    cache.get(source)
    assert len(fetched) == len(source.parts)  # cached: no second download


def test_parts_are_matched_by_name_whatever_their_order(tmp_path: Path, cloud_key: rsa.RSAPrivateKey) -> None:
    objects, source, key_file = _bundled(tmp_path, cloud_key, PAYLOAD)
    reordered = ImageSource(
        source.key, source.url, source.size, None, "bundle", tuple(reversed(source.parts)), source.bundle
    )
    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=key_file, read=objects.__getitem__)
    assert cache.get(reordered).read_bytes() == PAYLOAD


def test_a_damaged_part_leaves_nothing_cached(tmp_path: Path, cloud_key: rsa.RSAPrivateKey) -> None:
    objects, source, key_file = _bundled(tmp_path, cloud_key, PAYLOAD)
    damaged = source.parts[1]
    objects[damaged] = bytes([objects[damaged][0] ^ 0xFF]) + objects[damaged][1:]  # always a change
    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=key_file, read=objects.__getitem__)
    with pytest.raises(ImageFetchError, match="digest"):
        cache.get(source)
    assert list((tmp_path / "cache").iterdir()) == []


def test_another_clouds_key_does_not_decrypt(tmp_path: Path, cloud_key: rsa.RSAPrivateKey) -> None:
    objects, source, _key_file = _bundled(tmp_path, cloud_key, PAYLOAD)
    other = tmp_path / "other-pk.pem"
    other.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))[0])
    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=other, read=objects.__getitem__)
    with pytest.raises(ImageFetchError, match="private key"):
        cache.get(source)


def test_without_the_cloud_key_a_bundle_says_what_is_missing(
    tmp_path: Path, cloud_key: rsa.RSAPrivateKey
) -> None:
    objects, source, _key_file = _bundled(tmp_path, cloud_key, PAYLOAD)
    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=tmp_path / "absent.pem", read=objects.__getitem__)
    with pytest.raises(ImageFetchError, match="cloud's private key"):
        cache.get(source)


def test_missing_part_urls_are_an_error(tmp_path: Path, cloud_key: rsa.RSAPrivateKey) -> None:
    objects, source, key_file = _bundled(tmp_path, cloud_key, PAYLOAD)
    short = ImageSource(source.key, source.url, source.size, None, "bundle", source.parts[:1], source.bundle)
    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=key_file, read=objects.__getitem__)
    with pytest.raises(ImageFetchError, match="part URLs"):
        cache.get(short)


def test_a_bundle_launched_without_its_manifest_is_refused(
    tmp_path: Path, cloud_key: rsa.RSAPrivateKey
) -> None:
    objects, source, key_file = _bundled(tmp_path, cloud_key, PAYLOAD)
    bare = ImageSource(source.key, source.url, source.size, None, "bundle", source.parts)
    cache = ImageCache(tmp_path / "cache", 10**9, cloud_key=key_file, read=objects.__getitem__)
    with pytest.raises(ImageFetchError, match="no manifest"):
        cache.get(bare)


def test_the_format_of_an_unbundled_image_comes_from_its_magic(tmp_path: Path) -> None:
    qcow2, raw = tmp_path / "a", tmp_path / "b"
    qcow2.write_bytes(b"QFI\xfb" + b"\0" * 100)
    raw.write_bytes(b"\0" * 104)
    assert disk_format(ImageSource("k", "u", format="bundle"), qcow2) == "qcow2"
    assert disk_format(ImageSource("k", "u", format="bundle"), raw) == "raw"
    assert disk_format(ImageSource("k", "u", format="raw"), qcow2) == "raw"  # as registered
