"""Image bundles: a round trip through bundle_file and unbundle, and what unbundle refuses."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mallee.images import bundle


def _cloud(tmp_path: Path) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test cloud")])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem


@pytest.fixture(scope="module")
def cloud_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    return _cloud(tmp_path_factory.mktemp("cloud"))


def _image(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "disk.img"
    # Half random, half zeros: compressible but not trivially.
    path.write_bytes(os.urandom(size // 2) + bytes(size - size // 2))
    return path


def _unbundle(made: bundle.Bundle, private_pem: bytes) -> bytes:
    directory = made.manifest.parent
    return b"".join(
        bundle.unbundle(made.manifest.read_bytes(), lambda n: (directory / n).read_bytes(), private_pem)
    )


def test_round_trip_over_several_parts(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    cert, private = cloud_keys
    source = _image(tmp_path, 300_000)
    made = bundle.bundle_file(
        source,
        tmp_path / "out",
        image_type="machine",
        cloud_cert_pem=cert,
        user="123456789012",
        kernel_id="aki-0123456789abcdef0",
        part_size=64 * 1024,
    )
    assert made.manifest.name == "disk.img.manifest.xml"
    assert len(made.parts) > 1 and made.size == 300_000
    assert sum(p.stat().st_size for p in made.parts) == made.bundled_size
    assert _unbundle(made, private) == source.read_bytes()

    root = ET.fromstring(made.manifest.read_bytes())
    assert root.findtext("version") == "2011-12-19"
    assert root.findtext("image/type") == "machine"
    assert root.findtext("image/user") == "123456789012"
    assert root.findtext("machine_configuration/kernel_id") == "aki-0123456789abcdef0"
    assert root.find("image/parts").get("count") == str(len(made.parts))  # type: ignore[union-attr]
    first = root.find("image/parts/part")
    assert first is not None and first.get("index") == "0"
    assert first.findtext("digest") == hashlib.sha1(made.parts[0].read_bytes()).hexdigest()


def test_round_trip_to_file_and_signature(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    cert, private = cloud_keys
    user_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    user_pem = user_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    source = _image(tmp_path, 5000)
    made = bundle.bundle_file(
        source, tmp_path / "out", image_type="kernel", cloud_cert_pem=cert, user_key_pem=user_pem
    )
    out = tmp_path / "back.img"
    assert bundle.unbundle_to_file(made.manifest, out, private) == 5000
    assert out.read_bytes() == source.read_bytes()
    manifest = bundle.parse_manifest(made.manifest.read_bytes())
    assert manifest.image_type == "kernel"
    user_public = user_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bundle.verify_signature(manifest, user_public)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(bundle.BundleError):
        bundle.verify_signature(
            manifest,
            other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )


def test_empty_file_round_trips(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    cert, private = cloud_keys
    source = tmp_path / "empty"
    source.write_bytes(b"")
    made = bundle.bundle_file(source, tmp_path / "out", image_type="ramdisk", cloud_cert_pem=cert)
    assert _unbundle(made, private) == b""


def test_tampered_part_is_refused(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    cert, private = cloud_keys
    made = bundle.bundle_file(
        _image(tmp_path, 200_000),
        tmp_path / "out",
        image_type="machine",
        cloud_cert_pem=cert,
        part_size=50_000,
    )
    data = bytearray(made.parts[1].read_bytes())
    data[100] ^= 0xFF
    made.parts[1].write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="digest"):
        _unbundle(made, private)


def test_tampered_manifest_digest_is_refused(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    # A consistent set of parts whose manifest claims another image digest.
    cert, private = cloud_keys
    made = bundle.bundle_file(
        _image(tmp_path, 1000), tmp_path / "out", image_type="machine", cloud_cert_pem=cert
    )
    root = ET.fromstring(made.manifest.read_bytes())
    digest = root.findtext("image/digest") or ""
    made.manifest.write_text(made.manifest.read_text().replace(digest, "0" * 40))
    with pytest.raises(bundle.BundleError, match="digest"):
        _unbundle(made, private)


def test_another_clouds_key_cannot_unbundle(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    cert, _ = cloud_keys
    _, other_private = _cloud(tmp_path)
    made = bundle.bundle_file(
        _image(tmp_path, 1000), tmp_path / "out", image_type="machine", cloud_cert_pem=cert
    )
    with pytest.raises(bundle.BundleError, match="private key"):
        _unbundle(made, other_private)


def test_bad_type_and_not_a_manifest(tmp_path: Path, cloud_keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(bundle.BundleError):
        bundle.bundle_file(_image(tmp_path, 10), tmp_path, image_type="floppy", cloud_cert_pem=cloud_keys[0])
    with pytest.raises(bundle.BundleError):
        bundle.parse_manifest(b"<notes/>")
