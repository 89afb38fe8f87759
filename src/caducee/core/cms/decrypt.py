"""Decrypt EnvelopedData / AuthEnvelopedData (ours, openssl's, BER-streamed or DER).

The outer layers are walked by hand (``der.read_tlv``) so the encrypted content stays a
view into the caller's buffer; RecipientInfos and algorithm identifiers go to asn1crypto.

Exactly one private-key operation per message: we pick the RecipientInfo that names one of our
keys' certificates first, then ask that key once.

RSA PKCS#1 v1.5 (Bleichenbacher): OpenSSL's implicit rejection turns a bad block into a
pseudo-random one; if its length is wrong we derive a key from it (unpredictable without the
private key) and still decrypt the content, and a key that raises instead (a token) gets the
error a bad content gives. Either way a bad block fails like an altered content: IntegrityError
for AES-GCM, the one UNIFORM_FAILURE DecryptionError for AES-CBC (timing aside, for tokens).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.cms import envelope_asn1 as a
from caducee.core.cms.der import Memo, Tlv, children, expect, octet_segments, read_oid, read_tlv
from caducee.errors import (
    CaduceeError,
    DecryptionError,
    IntegrityError,
    MalformedMessageError,
    NoMatchingRecipientError,
    UnsupportedAlgorithmError,
    UsageError,
)
from caducee.keys.api import DecryptionKey

__all__ = ["DecryptedReport", "decrypt_data"]

#: One message for every failure an attacker could use as a padding oracle.
UNIFORM_FAILURE = "cannot decrypt: wrong key, or the message was altered"
INTEGRITY_FAILURE = "authentication failed: the message was altered, or it is not for this key"


@dataclasses.dataclass(frozen=True)
class DecryptedReport:
    """What was decrypted, and how."""

    content: bytes = dataclasses.field(repr=False)
    content_type: str
    cipher: ContentCipher
    authenticated: bool
    recipient_certificate: x509.Certificate
    key_transport: KeyTransport | None
    key_agreement: str | None  # e.g. "ecdh-sha256kdf-aes256-wrap"
    recipient_count: int


# --- parsing the outer layers ---------------------------------------------------------------


@dataclasses.dataclass
class _Envelope:
    authenticated: bool
    recipient_infos: bytes
    content_type: str
    algorithm: bytes  # DER contentEncryptionAlgorithm
    chunks: list[memoryview]
    auth_attrs: bytes | None  # re-tagged as SET OF, the AAD
    mac: bytes | None


def _next(items: list[Tlv], index: int) -> Tlv | None:
    return items[index] if index < len(items) else None


def _parse(buf: memoryview) -> _Envelope:
    where = "ContentInfo"
    memo: Memo = {}
    ci = expect(read_tlv(buf, 0, len(buf), where, memo=memo), 0x30, where)
    if ci.next != len(buf) and bytes(buf[ci.next :]).strip(b"\r\n\t \x00"):
        raise MalformedMessageError("trailing data after the message", where)
    parts = children(buf, ci, where, memo=memo)
    oid = read_oid(buf, _next(parts, 0), where)
    if oid == a.OID_AUTH_ENVELOPED_DATA:
        authenticated = True
        where = "AuthEnvelopedData"
    elif oid == a.OID_ENVELOPED_DATA:
        authenticated = False
        where = "EnvelopedData"
    else:
        raise MalformedMessageError(
            f"content type {oid} is not enveloped-data nor authEnveloped-data", where
        )
    explicit = expect(_next(parts, 1), 0xA0, where)
    inner = children(buf, explicit, where, memo=memo)
    if len(inner) != 1:
        raise MalformedMessageError("[0] content must hold one element", where)
    fields = children(buf, expect(inner[0], 0x30, where), where, memo=memo)
    expect(_next(fields, 0), 0x02, where + ".version")
    index = 1
    if _next(fields, index) is not None and fields[index].tag == 0xA0:
        index += 1  # originatorInfo: certificates for key agreement, unused here
    ris = expect(_next(fields, index), 0x31, where + ".recipientInfos")
    eci = expect(_next(fields, index + 1), 0x30, where + ".encryptedContentInfo")
    rest = fields[index + 2 :]
    where_eci = where + ".encryptedContentInfo"
    eci_fields = children(buf, eci, where_eci, memo=memo)
    content_type = read_oid(buf, _next(eci_fields, 0), where_eci)
    alg = expect(_next(eci_fields, 1), 0x30, where_eci + ".contentEncryptionAlgorithm")
    ct = _next(eci_fields, 2)
    if ct is None:
        raise MalformedMessageError("no encrypted content (detached content)", where_eci)
    if ct.tag not in (0x80, 0xA0) or len(eci_fields) > 3:
        raise MalformedMessageError("unexpected element", where_eci)
    segments = octet_segments(buf, ct, where_eci + ".encryptedContent", memo=memo)
    chunks = [buf[start:end] for start, end in segments]
    auth_attrs = mac = None
    if authenticated:
        i = 0
        if i < len(rest) and rest[i].tag == 0xA1:
            attrs = rest[i]
            auth_attrs = b"\x31" + bytes(buf[attrs.start + 1 : attrs.next])
            i += 1
        mac_tlv = expect(_next(rest, i), 0x04, where + ".mac")
        mac = bytes(buf[mac_tlv.body : mac_tlv.end])
        rest = rest[i + 1 :]
        allowed = {0xA2}
    else:
        allowed = {0xA1}
    if any(t.tag not in allowed for t in rest) or len(rest) > 1:
        raise MalformedMessageError("unexpected trailing element", where)
    return _Envelope(
        authenticated,
        bytes(buf[ris.start : ris.next]),
        content_type,
        bytes(buf[alg.start : alg.next]),
        chunks,
        auth_attrs,
        mac,
    )


# --- choosing the recipient -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _KeyIds:
    key: DecryptionKey
    issuer: bytes  # DER, as in the certificate
    serial: int
    ski: bytes | None
    is_rsa: bool
    is_ec: bool


def _key_ids(key: DecryptionKey) -> _KeyIds:
    return _KeyIds(key, *_certificate_ids(key.certificate))


@functools.lru_cache(maxsize=64)
def _certificate_ids(cert: x509.Certificate) -> tuple[bytes, int, bytes | None, bool, bool]:
    """(issuer DER, serial, SKI, is RSA, is EC): derived once per certificate, not per message."""
    try:
        ski: bytes | None = bytes(
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        )
    except x509.ExtensionNotFound:
        ski = None
    public = cert.public_key()
    return (
        cert.issuer.public_bytes(),
        cert.serial_number,
        ski,
        isinstance(public, rsa.RSAPublicKey),
        isinstance(public, ec.EllipticCurvePublicKey),
    )


def _matches(ids: _KeyIds, rid: core.Choice) -> bool:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        if ias["serial_number"].native != ids.serial:
            return False
        issuer = ias["issuer"]
        # Same bytes (the usual case), else compare as X.500 names (string prep is slow).
        return bool(issuer.dump() == ids.issuer or issuer == asn1_x509.Name.load(ids.issuer))
    if rid.name == "subject_key_identifier":
        return ids.ski is not None and bytes(rid.chosen.native) == ids.ski
    if rid.name == "r_key_id":
        return ids.ski is not None and bytes(rid.chosen["subject_key_identifier"].native) == ids.ski
    return False


@dataclasses.dataclass(frozen=True)
class _Match:
    ids: _KeyIds
    info: cms.RecipientInfo
    encrypted_key: bytes


def _select(
    recipient_infos: cms.RecipientInfos, keys: Sequence[DecryptionKey]
) -> tuple[_Match, int]:
    ids_list = [_key_ids(k) for k in keys]
    count = 0
    candidates: list[tuple[cms.RecipientInfo, core.Choice, bytes]] = []
    try:
        for info in recipient_infos:
            if info.name == "ktri":
                candidates.append((info, info.chosen["rid"], info.chosen["encrypted_key"].native))
                count += 1
            elif info.name == "kari":
                for rek in info.chosen["recipient_encrypted_keys"]:
                    candidates.append((info, rek["rid"], rek["encrypted_key"].native))
                    count += 1
            else:
                count += 1  # kekri, pwri, ori: not for a certificate holder
        for ids in ids_list:
            for info, rid, encrypted_key in candidates:
                kind_ok = ids.is_rsa if info.name == "ktri" else ids.is_ec
                if kind_ok and _matches(ids, rid):
                    return _Match(ids, info, bytes(encrypted_key)), count
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedMessageError(f"cannot parse ({exc})", "RecipientInfos") from None
    raise NoMatchingRecipientError(
        f"not encrypted for us: none of our {len(ids_list)} key(s) is among"
        f" the message's {count} recipient(s)"
    )


def _select_raw(recipient_infos: bytes, keys: Sequence[DecryptionKey]) -> tuple[_Match, int] | None:
    """:func:`_select` for the common case, RecipientInfos that are all plain-DER
    KeyTransRecipientInfos, matched by bytes without asn1crypto. None whenever anything is
    unusual (other kinds, odd encodings, an issuer spelled differently, no match): the
    asn1crypto reading then decides, with its error messages."""
    where = "RecipientInfos"
    try:
        buf = memoryview(recipient_infos)
        top = read_tlv(buf, 0, len(buf), where)
        candidates: list[tuple[Tlv, Tlv, int | None, Tlv]] = []  # (info, rid, serial, key)
        for info in children(buf, top, where):
            if info.tag != 0x30 or info.indefinite:
                return None
            fields = children(buf, info, where)
            if [f.tag for f in fields] not in ([0x02, 0x30, 0x30, 0x04], [0x02, 0x80, 0x30, 0x04]):
                return None
            rid = fields[1]
            serial = None
            if rid.tag == 0x30:
                parts = children(buf, rid, where)
                if [p.tag for p in parts] != [0x30, 0x02] or parts[1].end == parts[1].body:
                    return None
                serial = int.from_bytes(buf[parts[1].body : parts[1].end], "big", signed=True)
                rid = parts[0]  # the issuer
            if any(f.indefinite for f in (info, *fields, rid)):
                return None
            candidates.append((info, rid, serial, fields[3]))
        for ids in [_key_ids(k) for k in keys]:  # all first, as _select does
            if not ids.is_rsa:
                continue
            for info, rid, serial, encrypted_key in candidates:
                if serial is None:  # subjectKeyIdentifier
                    found = ids.ski is not None and buf[rid.body : rid.end] == ids.ski
                elif serial != ids.serial:
                    found = False
                elif buf[rid.start : rid.next] == ids.issuer:
                    found = True
                else:
                    return None  # same serial, issuer bytes differ: compare as names
                if found:
                    chosen = cms.RecipientInfo.load(bytes(buf[info.start : info.next]))
                    encrypted = bytes(buf[encrypted_key.body : encrypted_key.end])
                    return _Match(ids, chosen, encrypted), len(candidates)
    except MalformedMessageError:
        return None
    return None


# --- key recovery -----------------------------------------------------------------------------


def _oaep_transport(params: core.Asn1Value) -> KeyTransport:
    if isinstance(params, core.Void) or params.contents in (None, b""):
        return KeyTransport.RSA_OAEP_SHA1
    if isinstance(params, core.Null):
        return KeyTransport.RSA_OAEP_SHA1
    parsed = algos.RSAESOAEPParams.load(params.dump())
    hash_oid = parsed["hash_algorithm"]["algorithm"].dotted
    mgf = parsed["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != a.OID_MGF1:
        raise UnsupportedAlgorithmError(
            "OAEP mask generation is not MGF1", oid=mgf["algorithm"].dotted
        )
    mgf_hash = mgf["parameters"]["algorithm"].dotted
    if parsed["p_source_algorithm"]["parameters"].native not in (b"", None):
        raise UnsupportedAlgorithmError("OAEP with a non-empty label is not supported")
    by_oid = {
        "1.3.14.3.2.26": KeyTransport.RSA_OAEP_SHA1,
        "2.16.840.1.101.3.4.2.1": KeyTransport.RSA_OAEP_SHA256,
    }
    kt = by_oid.get(hash_oid)
    if kt is None or mgf_hash != hash_oid:
        raise UnsupportedAlgorithmError(
            f"OAEP with hash {hash_oid} and MGF1 hash {mgf_hash} is not supported"
            " (SHA-1 or SHA-256, same for both)",
            oid=hash_oid,
        )
    return kt


def _transport_of(ktri: cms.KeyTransRecipientInfo) -> KeyTransport:
    try:
        der = bytes(ktri["key_encryption_algorithm"].dump())
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedMessageError(
            f"cannot parse ({exc})", "KeyTransRecipientInfo.keyEncryptionAlgorithm"
        ) from None
    return _transport_of_der(der)


@functools.lru_cache(maxsize=32)
def _transport_of_der(der: bytes) -> KeyTransport:
    """The key transport an AlgorithmIdentifier names; a sender writes the same few encodings
    in every message, so each is parsed once (errors are raised, never cached)."""
    try:
        alg = cms.KeyEncryptionAlgorithm.load(der)
        oid = alg["algorithm"].dotted
        if oid == a.OID_RSA_ENCRYPTION:
            return KeyTransport.RSA_PKCS1V15
        if oid == a.OID_RSAES_OAEP:
            return _oaep_transport(alg["parameters"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedMessageError(
            f"cannot parse ({exc})", "KeyTransRecipientInfo.keyEncryptionAlgorithm"
        ) from None
    raise UnsupportedAlgorithmError(f"key transport algorithm {oid} is not supported", oid=oid)


def _key_error(exc: BaseException) -> bool:
    """Exceptions from a key operation that mean 'wrong key or altered data'."""
    return isinstance(
        exc, ValueError | TypeError | crypto_exceptions.InvalidKey
    ) and not isinstance(exc, CaduceeError)


def _recover_rsa(match: _Match, cipher: ContentCipher) -> tuple[bytes, KeyTransport]:
    ktri = match.info.chosen
    transport = _transport_of(ktri)
    key = match.ids.key
    if transport not in key.key_transports():
        raise UnsupportedAlgorithmError(
            f"this key cannot decrypt {transport.value} (a card limitation?)"
        )
    try:
        cek = key.decrypt_key(match.encrypted_key, transport)
    except Exception as exc:
        if not _key_error(exc):
            raise
        if transport is KeyTransport.RSA_PKCS1V15:
            raise _content_failure(cipher) from None  # look like a content failure
        raise DecryptionError(UNIFORM_FAILURE) from None
    if len(cek) != cipher.key_size:
        if transport is not KeyTransport.RSA_PKCS1V15:
            raise DecryptionError(UNIFORM_FAILURE)
        # Implicit rejection gave a pseudo-random block: keep going with a key derived from it.
        cek = hashlib.sha256(b"caducee pkcs1 v1.5 rejection" + cek).digest()[: cipher.key_size]
    return cek, transport


def _recover_ecdh(match: _Match) -> tuple[bytes, str]:
    where = "KeyAgreeRecipientInfo"
    kari = match.info.chosen
    try:
        originator = kari["originator"]
        if originator.name != "originator_key":
            raise UnsupportedAlgorithmError(
                "static-static ECDH (no originator key) is not supported"
            )
        spki = originator.chosen
        if spki["algorithm"]["algorithm"].dotted != a.OID_EC_PUBLIC_KEY:
            raise MalformedMessageError("originator key is not an EC key", where)
        point = bytes(spki["public_key"].contents[1:])  # BIT STRING: drop the unused-bits octet
        alg = kari["key_encryption_algorithm"]
        scheme = alg["algorithm"].dotted
        if scheme not in a.ECDH_SCHEMES:
            raise UnsupportedAlgorithmError(
                f"key agreement scheme {scheme} is not supported", oid=scheme
            )
        hash_name, cofactor = a.ECDH_SCHEMES[scheme]
        wrap_der = alg["parameters"].dump()
        wrap = algos.AlgorithmIdentifier.load(wrap_der)
        wrap_oid = wrap["algorithm"].dotted
        if wrap_oid not in a.AES_WRAPS:
            raise UnsupportedAlgorithmError(
                f"key wrap algorithm {wrap_oid} is not supported", oid=wrap_oid
            )
        ukm = kari["ukm"].native if kari["ukm"].contents is not None else None
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedMessageError(f"cannot parse ({exc})", where) from None
    wrap_name, kek_size = a.AES_WRAPS[wrap_oid]
    own_key = match.ids.key.certificate.public_key()
    assert isinstance(own_key, ec.EllipticCurvePublicKey)
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(own_key.curve, point)
    except ValueError:
        raise MalformedMessageError(
            "originator public key is not a point on our curve", where
        ) from None
    try:
        shared = match.ids.key.ecdh(peer)
    except Exception as exc:
        if _key_error(exc):
            raise DecryptionError(UNIFORM_FAILURE) from None
        raise
    info = a.shared_info(bytes(wrap_der), ukm, kek_size * 8)
    kek = X963KDF(algorithm=a.KDF_HASHES[hash_name](), length=kek_size, sharedinfo=info).derive(
        shared
    )
    try:
        cek = aes_key_unwrap(kek, match.encrypted_key)
    except (InvalidUnwrap, ValueError):
        raise DecryptionError(UNIFORM_FAILURE) from None
    label = f"ecdh-{'cofactor-' if cofactor else ''}{hash_name}kdf-{wrap_name}"
    return cek, label


# --- content decryption -----------------------------------------------------------------------


def _content_failure(cipher: ContentCipher) -> DecryptionError:
    """The error for a content that does not decrypt (also used to mask v1.5 failures)."""
    if cipher.aead:
        return IntegrityError(INTEGRITY_FAILURE)
    return DecryptionError(UNIFORM_FAILURE)


def _content_algorithm_raw(env: _Envelope) -> tuple[ContentCipher, bytes, int] | None:
    """:func:`_content_algorithm` for the DER every client writes, read without asn1crypto
    (it costs as much as the content decryption of a 100 KB message). None for anything
    unusual or wrong: the asn1crypto reading then decides, with its error messages."""
    buf = env.algorithm
    where = "contentEncryptionAlgorithm"
    try:
        top = read_tlv(buf, 0, len(buf), where)
        parts = children(buf, top, where) if top.tag == 0x30 else []
        if len(parts) != 2 or top.next != len(buf) or parts[1].indefinite:
            return None
        cipher = ContentCipher.from_oid(read_oid(buf, parts[0], where))
        params = parts[1]
        if cipher is None or cipher.aead != env.authenticated:
            return None
        if not cipher.aead:
            if params.tag != 0x04 or params.end - params.body != 16:
                return None
            return cipher, bytes(buf[params.body : params.end]), 0
        fields = children(buf, params, where) if params.tag == 0x30 else []
        if not 1 <= len(fields) <= 2 or fields[0].tag != 0x04:
            return None
        nonce = bytes(buf[fields[0].body : fields[0].end])
        icvlen = 12  # GCMParameters: aes-ICVlen DEFAULT 12
        if len(fields) == 2:
            if fields[1].tag != 0x02 or fields[1].end - fields[1].body != 1:
                return None
            icvlen = buf[fields[1].body]
        if not 12 <= icvlen <= 16 or not 8 <= len(nonce) <= 64:
            return None
        return cipher, nonce, icvlen
    except MalformedMessageError:
        return None


#: content ciphers older clients still write, refused: their names, for the message
_WEAK_CIPHERS = {
    "1.2.840.113549.3.7": "3DES (DES-EDE3-CBC)",
    "1.2.840.113549.3.2": "RC2",
    "1.3.14.3.2.7": "DES",
    "1.2.840.113549.3.4": "RC4",
}


def _unsupported_cipher(oid: str) -> str:
    """Why a content cipher is refused, in words the reader can pass on to the sender."""
    if oid in _WEAK_CIPHERS:
        return (
            f"content encrypted with {_WEAK_CIPHERS[oid]}, refused as too weak:"
            " ask the sender to use AES (128 or 256 bits)"
        )
    return f"content encryption algorithm {oid} is not supported"


def _content_algorithm(env: _Envelope) -> tuple[ContentCipher, bytes, int]:
    """(cipher, nonce or IV, GCM tag length)."""
    fast = _content_algorithm_raw(env)
    if fast is not None:
        return fast
    where = "contentEncryptionAlgorithm"
    try:
        alg = algos.AlgorithmIdentifier.load(env.algorithm)
        oid = alg["algorithm"].dotted
        cipher = ContentCipher.from_oid(oid)
        if cipher is None:
            raise UnsupportedAlgorithmError(_unsupported_cipher(oid), oid=oid)
        params = alg["parameters"]
        if cipher.aead:
            if not env.authenticated:
                raise UnsupportedAlgorithmError(
                    f"{cipher.label} inside EnvelopedData (it needs AuthEnvelopedData)", oid=oid
                )
            gcm = a.GCMParameters.load(params.dump())
            nonce = bytes(gcm["aes_nonce"].native)
            icvlen = int(gcm["aes_icvlen"].native)
            if not 12 <= icvlen <= 16 or not 8 <= len(nonce) <= 64:
                raise MalformedMessageError("GCM nonce or tag length out of range", where)
            return cipher, nonce, icvlen
        if env.authenticated:
            raise UnsupportedAlgorithmError(
                f"{cipher.label} inside AuthEnvelopedData (it needs an AEAD cipher)", oid=oid
            )
        iv = core.OctetString.load(params.dump()).native
        if len(iv) != 16:
            raise MalformedMessageError("CBC IV must be 16 bytes", where)
        return cipher, bytes(iv), 0
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedMessageError(f"cannot parse ({exc})", where) from None


def _decrypt_content(
    env: _Envelope, cipher: ContentCipher, iv: bytes, icvlen: int, cek: bytes
) -> bytes:
    if cipher.aead:
        assert env.mac is not None
        if len(env.mac) != icvlen:
            raise MalformedMessageError(f"mac is {len(env.mac)} bytes, icvlen says {icvlen}", "mac")
        decryptor = Cipher(
            algorithms.AES(cek), modes.GCM(iv, env.mac, min_tag_length=12)
        ).decryptor()
        if env.auth_attrs is not None:
            decryptor.authenticate_additional_data(env.auth_attrs)
        if len(env.chunks) == 1:
            plain = decryptor.update(env.chunks[0])
        else:
            plain = b"".join([decryptor.update(chunk) for chunk in env.chunks])
        try:
            decryptor.finalize()
        except crypto_exceptions.InvalidTag:
            raise _content_failure(cipher) from None
        return plain
    size = sum(len(c) for c in env.chunks)
    if size == 0 or size % 16:
        raise MalformedMessageError(
            f"CBC ciphertext of {size} bytes is not whole blocks", "encryptedContent"
        )
    cbc = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    if len(env.chunks) == 1:
        plain = cbc.update(env.chunks[0])
    else:
        plain = b"".join([cbc.update(chunk) for chunk in env.chunks])
    cbc.finalize()
    unpadder = sym_padding.PKCS7(128).unpadder()
    try:
        tail = unpadder.update(plain[-16:]) + unpadder.finalize()
    except ValueError:
        raise _content_failure(cipher) from None
    return plain[: len(plain) - 16 + len(tail)]


def decrypt_data(
    der: bytes | bytearray | memoryview, keys: Sequence[DecryptionKey]
) -> DecryptedReport:
    """Decrypt a DER/BER ContentInfo with whichever of ``keys`` it was encrypted for."""
    if not keys:
        raise UsageError("no decryption key given")
    env = _parse(memoryview(der).cast("B") if isinstance(der, memoryview) else memoryview(der))
    cipher, iv, icvlen = _content_algorithm(env)
    fast = _select_raw(env.recipient_infos, keys)
    if fast is not None:
        match, count = fast
    else:
        try:
            recipient_infos = cms.RecipientInfos.load(env.recipient_infos)
        except (ValueError, TypeError) as exc:
            raise MalformedMessageError(f"cannot parse ({exc})", "RecipientInfos") from None
        match, count = _select(recipient_infos, keys)
    transport: KeyTransport | None = None
    agreement: str | None = None
    if match.info.name == "ktri":
        cek, transport = _recover_rsa(match, cipher)
    else:
        cek, agreement = _recover_ecdh(match)
        if len(cek) != cipher.key_size:
            raise DecryptionError(UNIFORM_FAILURE)
    content = _decrypt_content(env, cipher, iv, icvlen, cek)
    return DecryptedReport(
        content=content,
        content_type=env.content_type,
        cipher=cipher,
        authenticated=env.authenticated,
        recipient_certificate=match.ids.key.certificate,
        key_transport=transport,
        key_agreement=agreement,
        recipient_count=count,
    )
