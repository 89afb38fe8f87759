"""Software keys: a private key held in process memory (cardless users, tests, operator tools)."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12

from caducee.core.algorithms import Digest, KeyTransport, SignatureScheme
from caducee.errors import KeyStoreError, UnsupportedAlgorithmError, UsageError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _oaep(hash_alg: hashes.HashAlgorithm) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hash_alg), algorithm=hash_alg, label=None)


class SoftwareKey:
    """An RSA or EC private key with its certificate; implements both key protocols."""

    __slots__ = ("_cert", "_key")

    def __init__(self, private_key: PrivateKey, certificate: x509.Certificate) -> None:
        if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise UnsupportedAlgorithmError("only RSA and EC private keys are supported")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if private_key.public_key().public_bytes(
            der, spki
        ) != certificate.public_key().public_bytes(der, spki):
            raise UsageError("the private key does not match the certificate")
        self._key = private_key
        self._cert = certificate

    def __repr__(self) -> str:  # never show key material
        return f"<SoftwareKey for {self._cert.subject.rfc4514_string()}>"

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    # -- hand-over to a worker process -------------------------------------------------------

    def to_worker(self) -> tuple[bytes, bytes]:
        """(unencrypted PKCS#8 DER, certificate DER) to hand this key to a worker process of
        the same user through its start-up pipe (:mod:`caducee.opening`); never write it to
        disk. Card keys have no such method: they never leave the card."""
        der = serialization.Encoding.DER
        pkcs8 = self._key.private_bytes(
            der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pkcs8, self._cert.public_bytes(der)

    @classmethod
    def from_worker(cls, material: tuple[bytes, bytes]) -> SoftwareKey:
        """The key again, from what :meth:`to_worker` gave."""
        pkcs8, cert_der = material
        return cls(load_private_key(pkcs8), x509.load_der_x509_certificate(cert_der))

    # -- SigningKey ------------------------------------------------------------------------------

    def signature_schemes(self) -> frozenset[SignatureScheme]:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return frozenset({SignatureScheme.RSA_PKCS1V15, SignatureScheme.RSA_PSS})
        return frozenset({SignatureScheme.ECDSA})

    def sign_digest(self, digest: bytes, algorithm: Digest, scheme: SignatureScheme) -> bytes:
        prehashed = utils.Prehashed(algorithm.hash())
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            if scheme is SignatureScheme.RSA_PKCS1V15:
                return key.sign(digest, padding.PKCS1v15(), prehashed)
            if scheme is SignatureScheme.RSA_PSS:
                pss = padding.PSS(mgf=padding.MGF1(algorithm.hash()), salt_length=algorithm.size)
                return key.sign(digest, pss, prehashed)
        elif scheme is SignatureScheme.ECDSA:
            return key.sign(digest, ec.ECDSA(prehashed))
        raise UnsupportedAlgorithmError(f"this key cannot sign with {scheme.value}")

    # -- DecryptionKey ---------------------------------------------------------------------------

    def key_transports(self) -> frozenset[KeyTransport]:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return frozenset(KeyTransport)
        return frozenset()

    def decrypt_key(self, encrypted_key: bytes, padding_: KeyTransport) -> bytes:
        key = self._key
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UnsupportedAlgorithmError("RSA key transport needs an RSA key")
        if padding_ is KeyTransport.RSA_PKCS1V15:
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
        elif padding_ is KeyTransport.RSA_OAEP_SHA1:
            pad = _oaep(hashes.SHA1())  # noqa: S303 - OAEP-SHA1 is RFC 3560, and cards need it
        else:
            pad = _oaep(hashes.SHA256())
        return key.decrypt(encrypted_key, pad)

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        key = self._key
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UnsupportedAlgorithmError("ECDH key agreement needs an EC key")
        return key.exchange(ec.ECDH(), peer_public_key)


# -- loading ------------------------------------------------------------------------------------


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """Load a PEM or DER private key (PKCS#8 or traditional, optionally encrypted)."""
    loaders = (
        (serialization.load_pem_private_key,)
        if b"-----BEGIN" in data
        else (serialization.load_der_private_key,)
    )
    for loader in loaders:
        try:
            key = loader(data, password)
        except TypeError as exc:  # password missing or given for an unencrypted key
            raise KeyStoreError(f"private key password: {exc}") from None
        except (ValueError, UnsupportedAlgorithm):
            raise KeyStoreError(
                "cannot read the private key (wrong password, or not a PEM/DER key)"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise UnsupportedAlgorithmError("only RSA and EC private keys are supported")
        return key
    raise KeyStoreError("cannot read the private key")  # pragma: no cover


def load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    """Load a PKCS#12 file: (private key, its certificate, the other certificates)."""
    try:
        p12 = pkcs12.load_pkcs12(data, password)
    except (ValueError, TypeError):
        raise KeyStoreError(
            "cannot read the PKCS#12 file (wrong password or not PKCS#12)"
        ) from None
    if p12.key is None or p12.cert is None:
        raise KeyStoreError("the PKCS#12 file holds no private key with its certificate")
    key = p12.key
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UnsupportedAlgorithmError("only RSA and EC private keys are supported")
    return key, p12.cert.certificate, [c.certificate for c in p12.additional_certs]
