"""Image bundles as euca2ools and ec2-ami-tools make them, and their unbundling.

`bundle_file` streams a file through tar → gzip → AES-128-CBC (random key and IV) → parts of
`part_size` bytes, each with its SHA-1, and writes `<name>.manifest.xml`:

    <manifest><version>2011-12-19</version><bundler>…</bundler>
      <machine_configuration><architecture/><kernel_id/><ramdisk_id/></machine_configuration>
      <image><name/><user/><type/><digest algorithm="SHA1"/>   (SHA-1 of the tar stream)
        <size/><bundled_size/>
        <ec2_encrypted_key algorithm="AES-128-CBC"/><user_encrypted_key algorithm="AES-128-CBC"/>
        <ec2_encrypted_iv/><user_encrypted_iv/>
        <parts count="N"><part index="0"><filename/><digest algorithm="SHA1"/></part>…</parts>
      </image>
      <signature/></manifest>

As the ec2-ami-tools do, the *hex text* of the key and of the IV is RSA-encrypted (PKCS#1 v1.5) with
the cloud's certificate (`ec2_*`) and the user's key (`user_*`), and written as hex; the signature
is RSA-SHA1 (PKCS#1 v1.5), hex, over the `machine_configuration` element followed by the `image`
element exactly as they appear in the file. `unbundle` reverses it with the cloud's private key,
checking every part's digest and the tar digest.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MANIFEST_VERSION = "2011-12-19"
DEFAULT_PART_SIZE = 10 * 1024 * 1024
IMAGE_TYPES = ("machine", "kernel", "ramdisk")
_CHUNK = 1024 * 1024


class BundleError(Exception):
    """A bundle that cannot be made or does not verify (bad digest, wrong key, bad manifest)."""


@dataclass(frozen=True)
class Bundle:
    manifest: Path
    parts: list[Path]
    size: int  # bytes of the image file
    bundled_size: int  # bytes of all parts together


def _load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key: Any
    if b"CERTIFICATE" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise BundleError("bundles need an RSA certificate or public key")
    return key


def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BundleError("bundles need an RSA private key")
    return key


def _wrap(public: rsa.RSAPublicKey, secret: bytes) -> str:
    return public.encrypt(secret.hex().encode(), rsa_padding.PKCS1v15()).hex()


def _unwrap(private: rsa.RSAPrivateKey, wrapped_hex: str) -> bytes:
    try:
        text = private.decrypt(bytes.fromhex(wrapped_hex.strip()), rsa_padding.PKCS1v15())
        return bytes.fromhex(text.decode())
    except ValueError as exc:
        raise BundleError("the bundle's key does not decrypt with this cloud's private key") from exc


class _Parts(io.RawIOBase):
    """A write-only stream that splits what it is given into numbered part files."""

    def __init__(self, out_dir: Path, prefix: str, part_size: int) -> None:
        self.out_dir, self.prefix, self.part_size = out_dir, prefix, part_size
        self.parts: list[tuple[Path, str]] = []
        self.total = 0
        self._file: IO[bytes] | None = None
        self._hash: Any = None
        self._left = 0

    def writable(self) -> bool:
        return True

    def _next(self) -> None:
        self._finish_part()
        path = self.out_dir / f"{self.prefix}.part.{len(self.parts)}"
        self._file, self._hash, self._left = open(path, "wb"), hashlib.sha1(), self.part_size  # noqa: SIM115
        self.parts.append((path, ""))

    def _finish_part(self) -> None:
        if self._file is not None:
            self._file.close()
            self.parts[-1] = (self.parts[-1][0], self._hash.hexdigest())
            self._file = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            if self._file is None or self._left == 0:
                self._next()
            assert self._file is not None
            n = min(self._left, len(view) - done)
            chunk = view[done : done + n]
            self._file.write(chunk)
            self._hash.update(chunk)
            self._left -= n
            done += n
        self.total += done
        return done

    def close(self) -> None:
        if not self.closed:
            self._finish_part()
        super().close()


class _Encrypting(io.RawIOBase):
    def __init__(self, key: bytes, iv: bytes, sink: _Parts) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        self._pad = padding.PKCS7(128).padder()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = bytes(data)
        self._sink.write(self._enc.update(self._pad.update(raw)))
        return len(raw)

    def close(self) -> None:
        if not self.closed:
            self._sink.write(self._enc.update(self._pad.finalize()) + self._enc.finalize())
        super().close()


class _Hashing(io.RawIOBase):
    def __init__(self, sink: IO[bytes]) -> None:
        self.sha1 = hashlib.sha1()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = bytes(data)
        self.sha1.update(raw)
        self._sink.write(raw)
        return len(raw)


def bundle_file(
    source: Path,
    out_dir: Path,
    *,
    image_type: str,
    cloud_cert_pem: bytes,
    user_key_pem: bytes | None = None,
    user: str = "000000000000",
    architecture: str = "x86_64",
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    prefix: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
) -> Bundle:
    """Bundle `source` into `out_dir` for the cloud whose certificate is `cloud_cert_pem`.

    `user_key_pem` is the bundler's RSA private key (it signs the manifest and can unwrap the
    `user_*` copies); a new one is generated when none is given."""
    if image_type not in IMAGE_TYPES:
        raise BundleError(f"image type must be one of {', '.join(IMAGE_TYPES)}")
    if part_size <= 0:
        raise BundleError("part size must be positive")
    cloud_key = _load_public_key(cloud_cert_pem)
    user_key = (
        _load_private_key(user_key_pem)
        if user_key_pem
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    prefix = prefix or source.name
    out_dir.mkdir(parents=True, exist_ok=True)
    key, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    parts = _Parts(out_dir, prefix, part_size)
    encrypting = _Encrypting(key, iv, parts)
    size = source.stat().st_size
    # Closing the buffer closes the encryptor, which writes the last padded block into the parts.
    with io.BufferedWriter(encrypting, _CHUNK) as buffered:
        gz = _GzipWriter(buffered)
        hashing = _Hashing(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            info = tar.gettarinfo(str(source), arcname=source.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(source, "rb") as f:
                tar.addfile(info, f)
        gz.finish()
    parts.close()
    if not parts.parts:  # an empty file still makes one (empty-padded) part
        raise BundleError("nothing was written")
    machine = (
        "<machine_configuration>"
        f"<architecture>{escape(architecture)}</architecture>"
        + (f"<kernel_id>{escape(kernel_id)}</kernel_id>" if kernel_id else "")
        + (f"<ramdisk_id>{escape(ramdisk_id)}</ramdisk_id>" if ramdisk_id else "")
        + "</machine_configuration>"
    )
    part_xml = "".join(
        f'<part index="{i}"><filename>{escape(path.name)}</filename>'
        f'<digest algorithm="SHA1">{digest}</digest></part>'
        for i, (path, digest) in enumerate(parts.parts)
    )
    user_public = user_key.public_key()
    image = (
        "<image>"
        f"<name>{escape(source.name)}</name><user>{escape(user)}</user><type>{image_type}</type>"
        f'<digest algorithm="SHA1">{hashing.sha1.hexdigest()}</digest>'
        f"<size>{size}</size><bundled_size>{parts.total}</bundled_size>"
        f'<ec2_encrypted_key algorithm="AES-128-CBC">{_wrap(cloud_key, key)}</ec2_encrypted_key>'
        f'<user_encrypted_key algorithm="AES-128-CBC">{_wrap(user_public, key)}</user_encrypted_key>'
        f"<ec2_encrypted_iv>{_wrap(cloud_key, iv)}</ec2_encrypted_iv>"
        f"<user_encrypted_iv>{_wrap(user_public, iv)}</user_encrypted_iv>"
        f'<parts count="{len(parts.parts)}">{part_xml}</parts>'
        "</image>"
    )
    signature = user_key.sign((machine + image).encode(), rsa_padding.PKCS1v15(), hashes.SHA1()).hex()
    bundler = "<bundler><name>mallee</name><version>1</version><release>1</release></bundler>"
    manifest = (
        '<?xml version="1.0" ?>\n<manifest>'
        f"<version>{MANIFEST_VERSION}</version>{bundler}{machine}{image}"
        f"<signature>{signature}</signature></manifest>\n"
    )
    manifest_path = out_dir / f"{prefix}.manifest.xml"
    manifest_path.write_text(manifest)
    return Bundle(manifest_path, [p for p, _ in parts.parts], size, parts.total)


class _GzipWriter:
    """A gzip stream writer (zlib, wbits=31) that does not close what it writes to."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._z = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.write(self._z.compress(data))
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self._sink.write(self._z.flush())


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    image_type: str
    name: str
    user: str
    architecture: str
    kernel_id: str | None
    ramdisk_id: str | None
    size: int
    bundled_size: int
    digest: str
    ec2_encrypted_key: str
    ec2_encrypted_iv: str
    parts: list[tuple[str, str]]  # (filename, sha1 hex) in index order
    signed_text: bytes  # machine_configuration + image as they appear in the file
    signature: str


def parse_manifest(data: bytes) -> Manifest:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise BundleError(f"the manifest is not XML: {exc}") from exc
    image = root.find("image")
    if root.tag != "manifest" or image is None or image.find("parts") is None:
        raise BundleError("not an image bundle manifest")
    indexed = sorted(
        (int(p.get("index", "0")), p.findtext("filename") or "", (p.findtext("digest") or "").strip().lower())
        for p in image.iterfind("parts/part")
    )
    text = data.decode("utf-8", "replace")
    signed = "".join(
        m.group(0) if (m := re.search(rf"<{tag}>.*?</{tag}>", text, re.DOTALL)) else ""
        for tag in ("machine_configuration", "image")
    )
    return Manifest(
        image_type=image.findtext("type") or "machine",
        name=image.findtext("name") or "",
        user=image.findtext("user") or "",
        architecture=root.findtext("machine_configuration/architecture") or "x86_64",
        kernel_id=root.findtext("machine_configuration/kernel_id"),
        ramdisk_id=root.findtext("machine_configuration/ramdisk_id"),
        size=int(image.findtext("size") or 0),
        bundled_size=int(image.findtext("bundled_size") or 0),
        digest=(image.findtext("digest") or "").strip().lower(),
        ec2_encrypted_key=image.findtext("ec2_encrypted_key") or "",
        ec2_encrypted_iv=image.findtext("ec2_encrypted_iv") or "",
        parts=[(name, digest) for _, name, digest in indexed],
        signed_text=signed.encode(),
        signature=(root.findtext("signature") or "").strip(),
    )


def verify_signature(manifest: Manifest, user_cert_pem: bytes) -> None:
    """Raise BundleError unless the manifest was signed by the holder of this certificate's key."""
    try:
        _load_public_key(user_cert_pem).verify(
            bytes.fromhex(manifest.signature), manifest.signed_text, rsa_padding.PKCS1v15(), hashes.SHA1()
        )
    except Exception as exc:
        raise BundleError("the manifest's signature does not verify") from exc


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks, hashing what passes through."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")  # slicing a memoryview copies nothing: tar reads 512-byte blocks
        self.sha1 = hashlib.sha1()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self.sha1.update(self._buf[:n])
        self._buf = self._buf[n:]
        return n


def _inflated(inflate: Any, data: bytes) -> Iterator[bytes]:
    """Decompress `data` in bounded pieces: a part of a mostly empty disk inflates a thousandfold."""
    while data:
        out = inflate.decompress(data, 4 * _CHUNK)
        if out:
            yield out
        data = inflate.unconsumed_tail


def unbundle(
    manifest_bytes: bytes, read_part: Callable[[str], bytes], cloud_private_key_pem: bytes
) -> Iterator[bytes]:
    """The image file's bytes, in chunks (see `unbundle_parts`)."""
    manifest = parse_manifest(manifest_bytes)
    return unbundle_parts(
        manifest.ec2_encrypted_key,
        manifest.ec2_encrypted_iv,
        manifest.digest,
        manifest.parts,
        read_part,
        cloud_private_key_pem,
    )


def unbundle_parts(
    encrypted_key: str,
    encrypted_iv: str,
    digest: str,
    parts: list[tuple[str, str]],
    read_part: Callable[[str], bytes],
    cloud_private_key_pem: bytes,
) -> Iterator[bytes]:
    """The image file's bytes, in chunks, from what a manifest says (its wrapped key and IV, the tar
    stream's SHA-1, the parts' names and SHA-1s in order). `read_part(filename)` returns one part's
    bytes.

    Raises BundleError on a part whose SHA-1 differs from the manifest's, a key that does not
    decrypt, or a tar stream whose digest differs."""
    private = _load_private_key(cloud_private_key_pem)
    key, iv = _unwrap(private, encrypted_key), _unwrap(private, encrypted_iv)
    if len(key) != 16 or len(iv) != 16:
        raise BundleError("the bundle's key or IV has the wrong length")

    def decrypted() -> Iterator[bytes]:
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpad = padding.PKCS7(128).unpadder()
        inflate = zlib.decompressobj(31)
        for filename, part_digest in parts:
            data = read_part(filename)
            if hashlib.sha1(data).hexdigest() != part_digest:
                raise BundleError(f"part {filename} does not match its digest")
            yield from _inflated(inflate, unpad.update(dec.update(data)))
        try:
            tail = unpad.update(dec.finalize()) + unpad.finalize()
        except ValueError as exc:
            raise BundleError("the bundle does not decrypt (bad padding)") from exc
        yield from _inflated(inflate, tail)
        yield inflate.flush()

    reader = _ChunkReader(decrypted())
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise BundleError("the bundle holds no file")
            extracted = tar.extractfile(member)
            assert extracted is not None
            while chunk := extracted.read(_CHUNK):
                yield chunk
    except (tarfile.TarError, zlib.error) as exc:
        raise BundleError(f"the bundle's contents are damaged: {exc}") from exc
    while reader.read(_CHUNK):  # the rest of the tar stream, for its digest
        pass
    if digest and reader.sha1.hexdigest() != digest:
        raise BundleError("the image does not match the manifest's digest")


def unbundle_to_file(manifest_path: Path, out: Path, cloud_private_key_pem: bytes) -> int:
    """Unbundle a bundle directory's manifest into `out` (written atomically); its size."""
    directory = manifest_path.parent
    tmp = out.with_name(out.name + ".partial")
    size = 0
    with open(tmp, "wb") as f:
        for chunk in unbundle(
            manifest_path.read_bytes(), lambda name: (directory / name).read_bytes(), cloud_private_key_pem
        ):
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(out)
    return size
