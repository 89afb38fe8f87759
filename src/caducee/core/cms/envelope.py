"""Encrypt: build AuthEnvelopedData (AES-GCM, RFC 5083/5084) or EnvelopedData (AES-CBC).

The small structures (RecipientInfos, algorithm identifiers) are built with asn1crypto; the outer
headers and the ciphertext are written by hand into one buffer, and the cipher encrypts straight
into it (``update_into``), so a 20 MB message costs one ciphertext-sized allocation.

Randomness (content-encryption key, nonce/IV, ephemeral ECDH scalar) comes only from the caller's
``random``. The RSA-OAEP seed is drawn inside OpenSSL; cryptography offers no way to pass it in.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.cms import envelope_asn1 as a
from caducee.core.cms.der import der_header, der_oid, der_set_of, tlv
from caducee.errors import PolicyError, UnsupportedAlgorithmError, UsageError

__all__ = [
    "Recipient",
    "encrypt_data",
    "encrypt_data_stream",
    "encrypt_data_view",
    "transport_padding",
]

RandomSource = Callable[[int], bytes]

GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
AES_BLOCK = 16


@dataclasses.dataclass(frozen=True)
class Recipient:
    """Who can decrypt, and how their content-encryption key is wrapped."""

    certificate: x509.Certificate
    key_transport: KeyTransport = KeyTransport.RSA_OAEP_SHA256  # ignored for EC certificates
    use_ski: bool = False  # identify by subjectKeyIdentifier instead of issuerAndSerialNumber


def transport_padding(kt: KeyTransport) -> padding.AsymmetricPadding:
    """The cryptography padding object for a key transport."""
    if kt is KeyTransport.RSA_PKCS1V15:
        return padding.PKCS1v15()
    digest: hashes.HashAlgorithm = (
        hashes.SHA1()  # noqa: S303 - OAEP-SHA1 (RFC 3560) is what cards decrypt
        if kt is KeyTransport.RSA_OAEP_SHA1
        else hashes.SHA256()
    )
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def _take(random: RandomSource, size: int) -> bytes:
    value = random(size)
    if not isinstance(value, bytes) or len(value) != size:
        raise UsageError(f"the random source did not return {size} bytes")
    return value


@functools.lru_cache(maxsize=64)
def _ski_of(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return bytes(ext.value.digest)


def _ski(cert: x509.Certificate) -> bytes:
    ski = _ski_of(cert)
    if ski is None:
        raise PolicyError(
            f"certificate of {cert.subject.rfc4514_string()} has no subjectKeyIdentifier;"
            " identify this recipient by issuer and serial number"
        )
    return ski


def _integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


@functools.lru_cache(maxsize=64)
def _issuer_serial(cert: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber, the issuer copied from the certificate as encoded there."""
    return tlv(0x30, cert.issuer.public_bytes() + _integer(cert.serial_number))


def _algorithm(oid: str, parameters_der: bytes) -> bytes:
    """DER AlgorithmIdentifier; ``parameters_der`` may be empty (absent)."""
    return tlv(0x30, der_oid(oid) + parameters_der)


def _oaep_sha256_parameters() -> bytes:
    sha256 = _algorithm("2.16.840.1.101.3.4.2.1", b"\x05\x00")
    mgf1 = _algorithm(a.OID_MGF1, sha256)
    return tlv(0x30, tlv(0xA0, sha256) + tlv(0xA1, mgf1))


#: Key-encryption AlgorithmIdentifiers, DER. OAEP-SHA1 has all-default (empty) parameters.
_KT_ALGORITHMS = {
    KeyTransport.RSA_PKCS1V15: _algorithm(a.OID_RSA_ENCRYPTION, b"\x05\x00"),
    KeyTransport.RSA_OAEP_SHA1: _algorithm(a.OID_RSAES_OAEP, b"\x30\x00"),
    KeyTransport.RSA_OAEP_SHA256: _algorithm(a.OID_RSAES_OAEP, _oaep_sha256_parameters()),
}
_AES256_WRAP = _algorithm(a.OID_AES256_WRAP, b"")  # RFC 5753: parameters absent
_EC_PUBLIC_KEY = _algorithm(a.OID_EC_PUBLIC_KEY, b"")  # RFC 5753: parameters absent


def _ktri(recipient: Recipient, public_key: rsa.RSAPublicKey, cek: bytes) -> bytes:
    """DER KeyTransRecipientInfo (RFC 5652 §6.2.1)."""
    kt = recipient.key_transport
    if not isinstance(kt, KeyTransport):
        raise UsageError(f"unknown key transport {kt!r}")
    cert = recipient.certificate
    if recipient.use_ski:
        version, rid = b"\x02\x01\x02", tlv(0x80, _ski(cert))
    else:
        version, rid = b"\x02\x01\x00", _issuer_serial(cert)
    encrypted = public_key.encrypt(cek, transport_padding(kt))
    return tlv(0x30, version + rid + _KT_ALGORITHMS[kt] + tlv(0x04, encrypted))


def _ephemeral_key(curve: a.CurveProfile, random: RandomSource) -> ec.EllipticCurvePrivateKey:
    """A scalar in [1, n-1] from 64 extra bits of randomness (bias below 2**-64)."""
    size = (curve.order.bit_length() + 7) // 8 + 8
    scalar = int.from_bytes(_take(random, size), "big") % (curve.order - 1) + 1
    return ec.derive_private_key(scalar, curve.curve)


def _kari(
    recipient: Recipient, public_key: ec.EllipticCurvePublicKey, cek: bytes, random: RandomSource
) -> bytes:
    """DER [1] KeyAgreeRecipientInfo (RFC 5652 §6.2.2, RFC 5753 §3.1), one ephemeral key each."""
    profile = a.CURVES.get(public_key.curve.name)
    if profile is None:
        raise UnsupportedAlgorithmError(
            f"ECDH on curve {public_key.curve.name} is not supported (P-256, P-384, P-521 are)"
        )
    ephemeral = _ephemeral_key(profile, random)
    shared = ephemeral.exchange(ec.ECDH(), public_key)
    kdf = X963KDF(
        algorithm=a.KDF_HASHES[profile.kdf_hash](),
        length=32,
        sharedinfo=a.shared_info(_AES256_WRAP, None, 256),
    )
    wrapped = aes_key_wrap(kdf.derive(shared), cek)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    originator_key = tlv(0xA1, _EC_PUBLIC_KEY + tlv(0x03, b"\x00" + point))
    cert = recipient.certificate
    # [0] RecipientKeyIdentifier, or IssuerAndSerialNumber
    ski_rid = recipient.use_ski
    rid = tlv(0xA0, tlv(0x04, _ski(cert))) if ski_rid else _issuer_serial(cert)
    encrypted_keys = tlv(0x30, tlv(0x30, rid + tlv(0x04, wrapped)))
    scheme = _algorithm(a.ECDH_STD_SCHEME_BY_HASH[profile.kdf_hash], _AES256_WRAP)
    body = b"\x02\x01\x03" + tlv(0xA0, originator_key) + scheme + encrypted_keys
    return tlv(0xA1, body)


@functools.lru_cache(maxsize=64)
def _public_key(cert: x509.Certificate) -> object:
    """The certificate's public key; certificates are immutable, the recipients recur."""
    return cert.public_key()


def _recipient_infos(
    recipients: Sequence[Recipient], cek: bytes, random: RandomSource
) -> tuple[bytes, bool]:
    """DER RecipientInfos, and whether every one is a version-0 KeyTransRecipientInfo."""
    infos = []
    all_v0 = True
    for recipient in recipients:
        if not isinstance(recipient, Recipient):
            raise UsageError("recipients must be Recipient values")
        public_key = _public_key(recipient.certificate)
        if isinstance(public_key, rsa.RSAPublicKey):
            infos.append(_ktri(recipient, public_key, cek))
            all_v0 = all_v0 and not recipient.use_ski
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            infos.append(_kari(recipient, public_key, cek, random))
            all_v0 = False
        else:
            raise UnsupportedAlgorithmError(
                f"cannot encrypt for {recipient.certificate.subject.rfc4514_string()}:"
                " only RSA and EC (P-256/384/521) certificates are supported"
            )
    return der_set_of(infos), all_v0


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything written around the ciphertext, known before a byte is encrypted."""

    prefix: bytes  # DER up to and including the encryptedContent header
    ct_len: int
    cipher: ContentCipher
    cek: bytes
    iv: bytes  # GCM nonce or CBC IV

    @property
    def total(self) -> int:
        return len(self.prefix) + self.ct_len + (2 + GCM_TAG_SIZE if self.cipher.aead else 0)


def _gcm_parameters(nonce: bytes) -> bytes:
    """DER GCMParameters (RFC 5084 §3.2) with the ICV length written out, as asn1crypto does."""
    return tlv(0x30, tlv(0x04, nonce) + _integer(GCM_TAG_SIZE))


def _plan(
    size: int,
    recipients: Sequence[Recipient],
    random: RandomSource,
    cipher: ContentCipher,
    content_type: str,
) -> _Plan:
    if not recipients:
        raise UsageError("at least one recipient is needed to encrypt")
    if not isinstance(cipher, ContentCipher):
        raise UsageError(f"unknown content cipher {cipher!r}")
    try:
        content_type_der = der_oid(content_type)
    except (ValueError, TypeError):
        raise UsageError(f"invalid content type OID {content_type!r}") from None
    cek = _take(random, cipher.key_size)
    ri_der, all_v0 = _recipient_infos(recipients, cek, random)
    if cipher.aead:
        iv = _take(random, GCM_NONCE_SIZE)
        params = _gcm_parameters(iv)
        ct_len = size
        outer_oid = a.OID_AUTH_ENVELOPED_DATA
        version = b"\x02\x01\x00"  # AuthEnvelopedData version is always 0
        trailer_len = 2 + GCM_TAG_SIZE  # mac OCTET STRING
    else:
        iv = _take(random, AES_BLOCK)
        params = tlv(0x04, iv)
        ct_len = (size // AES_BLOCK + 1) * AES_BLOCK
        outer_oid = a.OID_ENVELOPED_DATA
        version = b"\x02\x01\x00" if all_v0 else b"\x02\x01\x02"  # RFC 5652 §6.1
        trailer_len = 0
    alg_der = _algorithm(cipher.oid, params)
    # Assemble from the inside out: only lengths are needed before encrypting.
    ct_header = der_header(0x80, ct_len)  # [0] IMPLICIT OCTET STRING
    eci_body_len = len(content_type_der) + len(alg_der) + len(ct_header) + ct_len
    eci_header = der_header(0x30, eci_body_len)
    env_body_len = len(version) + len(ri_der) + len(eci_header) + eci_body_len + trailer_len
    env_header = der_header(0x30, env_body_len)
    explicit_header = der_header(0xA0, len(env_header) + env_body_len)
    outer_oid_der = der_oid(outer_oid)
    ci_body_len = len(outer_oid_der) + len(explicit_header) + len(env_header) + env_body_len
    prefix = b"".join(
        (
            der_header(0x30, ci_body_len),
            outer_oid_der,
            explicit_header,
            env_header,
            version,
            ri_der,
            eci_header,
            content_type_der,
            alg_der,
            ct_header,
        )
    )
    return _Plan(prefix, ct_len, cipher, cek, iv)


#: Plaintext bytes encrypted per step when streaming (a few hundred KB stays in cache).
STREAM_CHUNK = 1 << 18


def encrypt_data_stream(
    content: bytes | memoryview,
    recipients: Sequence[Recipient],
    *,
    random: RandomSource,
    cipher: ContentCipher = ContentCipher.AES_256_GCM,
    content_type: str = a.OID_DATA,
) -> tuple[int, Iterator[bytes]]:
    """Like :func:`encrypt_data`, but as (total DER length, the DER in pieces in order).

    The recipients are processed (and every error raised) before this returns; the pieces are
    encrypted as they are asked for, so a caller that encodes them on the fly never holds the
    whole ciphertext. Randomness is drawn in the same order as :func:`encrypt_data`.
    """
    plan = _plan(len(content), recipients, random, cipher, content_type)
    return plan.total, _stream(plan, memoryview(content).cast("B"))


def _stream(plan: _Plan, content: memoryview) -> Iterator[bytes]:
    yield plan.prefix
    size = len(content)
    if plan.cipher.aead:
        gcm = Cipher(algorithms.AES(plan.cek), modes.GCM(plan.iv)).encryptor()
        for offset in range(0, size, STREAM_CHUNK):
            yield gcm.update(content[offset : offset + STREAM_CHUNK])
        gcm.finalize()
        yield bytes((0x04, GCM_TAG_SIZE)) + gcm.tag
        return
    cbc = Cipher(algorithms.AES(plan.cek), modes.CBC(plan.iv)).encryptor()
    whole = size - size % AES_BLOCK
    for offset in range(0, whole, STREAM_CHUNK):
        yield cbc.update(content[offset : min(offset + STREAM_CHUNK, whole)])
    pad = AES_BLOCK - size % AES_BLOCK
    yield cbc.update(bytes(content[whole:]) + bytes((pad,)) * pad) + cbc.finalize()


def encrypt_data_view(
    content: bytes | memoryview,
    recipients: Sequence[Recipient],
    *,
    random: RandomSource,
    cipher: ContentCipher = ContentCipher.AES_256_GCM,
    content_type: str = a.OID_DATA,
) -> memoryview:
    """Like :func:`encrypt_data` but returns a view of the DER in its working buffer (no copy)."""
    size = len(content)
    plan = _plan(size, recipients, random, cipher, content_type)
    prefix, ct_len, total = plan.prefix, plan.ct_len, plan.total
    # update_into wants block_size - 1 spare bytes after the data it writes.
    buf = bytearray(total + AES_BLOCK)
    view = memoryview(buf)
    view[: len(prefix)] = prefix
    start = len(prefix)
    if cipher.aead:
        gcm = Cipher(algorithms.AES(plan.cek), modes.GCM(plan.iv)).encryptor()
        written = gcm.update_into(content, view[start:])
        gcm.finalize()
        view[start + ct_len : total] = bytes((0x04, GCM_TAG_SIZE)) + gcm.tag
    else:
        cbc = Cipher(algorithms.AES(plan.cek), modes.CBC(plan.iv)).encryptor()
        whole = size - size % AES_BLOCK
        written = cbc.update_into(memoryview(content)[:whole], view[start:])
        pad = AES_BLOCK - size % AES_BLOCK
        last = bytes(memoryview(content)[whole:]) + bytes((pad,)) * pad
        written += cbc.update_into(last, view[start + written :])
        cbc.finalize()
    if written != ct_len:  # pragma: no cover - cryptography contract
        raise AssertionError("ciphertext length mismatch")
    return view[:total]


def encrypt_data(
    content: bytes,
    recipients: Sequence[Recipient],
    *,
    random: RandomSource,
    cipher: ContentCipher = ContentCipher.AES_256_GCM,
    content_type: str = a.OID_DATA,
) -> bytes:
    """Encrypt ``content`` for every recipient; returns a DER ContentInfo.

    AES-GCM gives AuthEnvelopedData (the default); AES-CBC gives EnvelopedData for legacy peers.
    RSA certificates get a KeyTransRecipientInfo (their ``key_transport``), EC certificates a
    KeyAgreeRecipientInfo (ECDH with an ephemeral key, X9.63 KDF, AES-256 key wrap).
    """
    return bytes(
        encrypt_data_view(
            content, recipients, random=random, cipher=cipher, content_type=content_type
        )
    )
