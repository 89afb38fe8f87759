"""The CA's signing key behind one small interface, so a PKCS#11-held key plugs in unchanged.

Certificates and CRLs are built with cryptography's builders either way. With a software key the
builder signs directly. With any other :class:`CASigner` (a token key, reached through the
keys-layer ``sign_digest``), the builder first signs with a throw-away key of the same family to
obtain the DER ``TBSCertificate`` / ``TBSCertList`` — whose signature AlgorithmIdentifier depends
only on the family and the hash, never on the key — and the real signature over those TBS bytes
is then assembled with asn1crypto. The outer structure is checked against the CA's public key
before it is returned.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Protocol, runtime_checkable

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.errors import KeyStoreError
from caducee.keys.api import SigningKey
from caducee.pki.profiles import PublicKey

CAPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@runtime_checkable
class CASigner(Protocol):
    """What a CA needs from its key: the public half and a digest signature (PKCS#1 v1.5/ECDSA)."""

    def public_key(self) -> PublicKey: ...

    def sign_digest(self, digest: bytes, algorithm: Digest, scheme: SignatureScheme) -> bytes: ...


class SoftwareCASigner:
    """A CA key held in memory (loaded from the encrypted PKCS#8 file)."""

    __slots__ = ("_key",)

    def __init__(self, private_key: CAPrivateKey) -> None:
        self._key = private_key

    def __repr__(self) -> str:
        return "<SoftwareCASigner>"

    @property
    def private_key(self) -> CAPrivateKey:
        return self._key

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign_digest(self, digest: bytes, algorithm: Digest, scheme: SignatureScheme) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import utils

        prehashed = utils.Prehashed(algorithm.hash())
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(digest, padding.PKCS1v15(), prehashed)
        return self._key.sign(digest, ec.ECDSA(prehashed))


class SigningKeyCASigner:
    """Adapts a keys-layer :class:`SigningKey` (e.g. a PKCS#11 token key) to :class:`CASigner`."""

    __slots__ = ("_key",)

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"<SigningKeyCASigner {self._key!r}>"

    def public_key(self) -> PublicKey:
        key = self._key.certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise KeyStoreError("the CA signing key is neither RSA nor EC")
        return key

    def sign_digest(self, digest: bytes, algorithm: Digest, scheme: SignatureScheme) -> bytes:
        return self._key.sign_digest(digest, algorithm, scheme)


def digest_for(key: PublicKey) -> Digest:
    """SHA-384 for P-384 keys (matching strength), SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= 384:
        return Digest.SHA384
    return Digest.SHA256


@functools.cache
def _placeholder_key(family: str) -> CAPrivateKey:
    # Used only to make cryptography emit the TBS bytes; its signature is thrown away.
    if family == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _hash(digest: Digest) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    h = digest.hash()
    if not isinstance(h, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        raise KeyStoreError(f"{digest.label} is not allowed for CA signatures")
    return h


def _scheme(key: PublicKey) -> SignatureScheme:
    return (
        SignatureScheme.RSA_PKCS1V15 if isinstance(key, rsa.RSAPublicKey) else SignatureScheme.ECDSA
    )


def _external_signature(signer: CASigner, tbs: bytes, digest: Digest) -> bytes:
    h = hashes.Hash(digest.hash())
    h.update(tbs)
    try:
        return signer.sign_digest(h.finalize(), digest, _scheme(signer.public_key()))
    except KeyStoreError:
        raise
    except Exception as exc:  # a token adapter failing in its own way
        raise KeyStoreError(f"the CA key could not sign ({type(exc).__name__})") from None


def _check(signer: CASigner, signature: bytes, tbs: bytes, digest: Digest) -> None:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, tbs, padding.PKCS1v15(), digest.hash())
        else:
            key.verify(signature, tbs, ec.ECDSA(digest.hash()))
    except InvalidSignature:
        raise SignatureFaultError("the CA key produced a signature that does not verify") from None


class SignatureFaultError(KeyStoreError):
    """A signing key (often a token) returned a signature that does not verify."""


def sign_certificate(builder: x509.CertificateBuilder, signer: CASigner) -> x509.Certificate:
    digest = digest_for(signer.public_key())
    if isinstance(signer, SoftwareCASigner):
        return builder.sign(signer.private_key, _hash(digest))
    tbs = builder.sign(_placeholder(signer), _hash(digest)).tbs_certificate_bytes
    tbs_asn1 = asn1_x509.TbsCertificate.load(tbs)
    cert = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs_asn1,
            "signature_algorithm": tbs_asn1["signature"],
            "signature_value": _checked_signature(signer, tbs, digest),
        }
    )
    return x509.load_der_x509_certificate(cert.dump())


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: CASigner
) -> x509.CertificateRevocationList:
    digest = digest_for(signer.public_key())
    if isinstance(signer, SoftwareCASigner):
        return builder.sign(signer.private_key, _hash(digest))
    tbs = builder.sign(_placeholder(signer), _hash(digest)).tbs_certlist_bytes
    tbs_asn1 = asn1_crl.TbsCertList.load(tbs)
    crl = asn1_crl.CertificateList(
        {
            "tbs_cert_list": tbs_asn1,
            "signature_algorithm": tbs_asn1["signature"],
            "signature": _checked_signature(signer, tbs, digest),
        }
    )
    return x509.load_der_x509_crl(crl.dump())


def _placeholder(signer: CASigner) -> CAPrivateKey:
    """A key of the signer's family: lays out the to-be-signed bytes with the right algorithm;
    its signature is replaced by the external signer's."""
    family = "rsa" if isinstance(signer.public_key(), rsa.RSAPublicKey) else "ec"
    return _placeholder_key(family)


def _checked_signature(signer: CASigner, tbs: bytes, digest: Digest) -> bytes:
    signature = _external_signature(signer, tbs, digest)
    _check(signer, signature, tbs, digest)
    return signature


@functools.cache
def _placeholder_cert(family: str) -> x509.Certificate:
    key = _placeholder_key(family)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "placeholder")])
    start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def sign_ocsp(
    builder: ocsp.OCSPResponseBuilder, signer: CASigner, responder: x509.Certificate
) -> ocsp.OCSPResponse:
    """Sign an OCSP response as ``responder`` (responderID byKey).

    cryptography insists that the responder certificate matches the signing key, so for an
    external signer the draft is made with a placeholder pair and its responderID is replaced
    with the real key hash before the TBS bytes are signed.
    """
    digest = digest_for(signer.public_key())
    if isinstance(signer, SoftwareCASigner):
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
        return builder.sign(signer.private_key, _hash(digest))
    family = "rsa" if isinstance(signer.public_key(), rsa.RSAPublicKey) else "ec"
    draft = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, _placeholder_cert(family)).sign(
        _placeholder_key(family), _hash(digest)
    )
    outer = asn1_ocsp.OCSPResponse.load(draft.public_bytes(serialization.Encoding.DER))
    basic = outer["response_bytes"]["response"].parsed
    tbs_asn1 = asn1_ocsp.ResponseData.load(draft.tbs_response_bytes)
    key_hash = asn1_x509.Certificate.load(
        responder.public_bytes(serialization.Encoding.DER)
    ).public_key.sha1
    tbs_asn1["responder_id"] = asn1_ocsp.ResponderId(name="by_key", value=key_hash)
    tbs = tbs_asn1.dump(force=True)
    signature = _external_signature(signer, tbs, digest)
    _check(signer, signature, tbs, digest)
    final = asn1_ocsp.BasicOCSPResponse(
        {
            "tbs_response_data": asn1_ocsp.ResponseData.load(tbs),
            "signature_algorithm": basic["signature_algorithm"],
            "signature": signature,
        }
    )
    response = asn1_ocsp.OCSPResponse(
        {
            "response_status": "successful",
            "response_bytes": {"response_type": "basic_ocsp_response", "response": final},
        }
    )
    return ocsp.load_der_ocsp_response(response.dump())
