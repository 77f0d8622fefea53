"""Signing instance identity documents with the cloud's certificate, as EC2 signs them with its
region's: `signature` (RSA with SHA-256 over the document's bytes) and `pkcs7` / `rsa2048` (a
detached PKCS #7 signature, base64 without the PEM armour). Anyone holding the certificate
(`mallee cloud-cert`, or `cloud-cert.pem` in the data directory) can check that a document came
from this cloud and was not changed:

    openssl x509 -pubkey -noout -in cloud-cert.pem > cloud.pub
    base64 -d signature > signature.bin
    openssl dgst -sha256 -verify cloud.pub -signature signature.bin document
    base64 -d pkcs7 > pkcs7.der
    openssl smime -verify -binary -inform DER -in pkcs7.der -content document \\
        -certfile cloud-cert.pem -noverify
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

_BINARY = pkcs7.PKCS7Options.Binary  # the document's bytes as they are (no MIME canonical line ends)


class DocumentSigner:
    def __init__(self, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def of(cls, data_dir: Path) -> DocumentSigner | None:
        """The cloud's signer (`cloud-pk.pem`, `cloud-cert.pem`; made by `mallee up` on its first
        start), or None where there is no certificate."""
        key_file, cert_file = data_dir / "cloud-pk.pem", data_dir / "cloud-cert.pem"
        if not (key_file.exists() and cert_file.exists()):
            return None
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_file} holds no RSA key")
        return cls(key, x509.load_pem_x509_certificate(cert_file.read_bytes()))

    def signature(self, document: bytes) -> str:
        signed = self.key.sign(document, padding.PKCS1v15(), hashes.SHA256())
        return _lines(base64.b64encode(signed).decode())

    def pkcs7(self, document: bytes) -> str:
        signed = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(document)
            .add_signer(self.certificate, self.key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
            )
        )
        return _lines(base64.b64encode(signed).decode())


def _lines(text: str) -> str:
    """Base64 in 64-column lines, as the metadata service serves it."""
    return "\n".join(textwrap.wrap(text, 64))
