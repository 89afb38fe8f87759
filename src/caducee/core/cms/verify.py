"""CMS SignedData verification: every SignerInfo checked, one report per signer.

Structure problems raise :class:`MalformedMessageError` (with ``where``), unknown algorithms
:class:`UnsupportedAlgorithmError`; a signature that does not hold is not an exception but a
``SignerReport`` with ``valid=False`` and the reason, so a caller can show "signature broken"
next to the content. Trust in the certificate (path validation, revocation) is not decided here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.core.cms.der import (
    Memo,
    Tlv,
    children,
    expect,
    octet_segments,
    read_oid,
    read_tlv,
    tlv,
)
from caducee.core.cms.sign_attrs import (
    ATTRIBUTE_NAMES,
    ID_SIGNED_DATA,
    OID_CONTENT_TYPE,
    OID_MESSAGE_DIGEST,
    OID_SIGNING_CERTIFICATE,
    OID_SIGNING_CERTIFICATE_V2,
    OID_SIGNING_TIME,
    OID_SMIME_CAPABILITIES,
)
from caducee.errors import (
    CaduceeError,
    MalformedMessageError,
    MissingCertificateError,
    SignatureError,
    UnsupportedAlgorithmError,
    UsageError,
)

__all__ = ["SignedReport", "SignerReport", "verify_signed_data"]

#: Exceptions asn1crypto raises on bad input while parsing lazily.
_ASN1_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)

ERR_NO_CERT = "signer certificate not found"
ERR_SIGNATURE = "signature does not verify"
ERR_DIGEST = "content digest does not match"

_RSA_PKCS1 = {
    "1.2.840.113549.1.1.1",  # rsaEncryption
    "1.2.840.113549.1.1.5",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.11",
    "1.2.840.113549.1.1.12",
    "1.2.840.113549.1.1.13",
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_MGF1 = "1.2.840.113549.1.1.8"
_ECDSA = {
    "1.2.840.10045.2.1",  # id-ecPublicKey, written by some old clients
    "1.2.840.10045.4.1",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.2",
    "1.2.840.10045.4.3.3",
    "1.2.840.10045.4.3.4",
}


@dataclasses.dataclass(frozen=True)
class SignerReport:
    """What one SignerInfo says and whether it holds (cryptographically)."""

    certificate: x509.Certificate | None
    digest: Digest
    scheme: SignatureScheme
    signing_time: datetime | None
    capabilities: Capabilities | None
    covered: tuple[str, ...]  # names of the signed attributes
    valid: bool
    error: str | None
    signer_id: str = ""  # how the SignerInfo names its certificate, for messages


@dataclasses.dataclass(frozen=True)
class SignedReport:
    content: bytes
    content_type: str
    detached: bool
    signers: tuple[SignerReport, ...]
    certificates: tuple[x509.Certificate, ...]

    @property
    def valid(self) -> bool:
        """At least one signer, and every signer valid."""
        return bool(self.signers) and all(s.valid for s in self.signers)

    def raise_for_invalid(self) -> None:
        if not self.signers:
            raise SignatureError("the message has no signer")
        for index, signer in enumerate(self.signers, 1):
            if signer.valid:
                continue
            text = f"signer {index} ({signer.signer_id}): {signer.error}"
            if signer.error == ERR_NO_CERT:
                raise MissingCertificateError(text)
            raise SignatureError(text)

    def __repr__(self) -> str:  # never show the content
        return (
            f"<SignedReport valid={self.valid} content_type={self.content_type} "
            f"detached={self.detached} signers={len(self.signers)}>"
        )


# -- outer structure ----------------------------------------------------------------------------


class _Parsed(NamedTuple):
    content_type: str
    segments: list[tuple[int, int]] | None  # None: detached
    certificates: list[Tlv]
    signer_infos: list[Tlv]


def _parse_outer(der: bytes) -> _Parsed:
    n = len(der)
    memo: Memo = {}  # BER from `openssl cms -stream` nests indefinite lengths: walk them once
    ci = expect(read_tlv(der, 0, n, "ContentInfo", memo=memo), 0x30, "ContentInfo")
    if ci.next != n and der[ci.next :].strip(b"\x00 \t\r\n"):  # a file's final newline is fine
        raise MalformedMessageError("trailing data after the ContentInfo", "ContentInfo")
    parts = children(der, ci, "ContentInfo", memo=memo)
    if len(parts) != 2:
        raise MalformedMessageError("expected contentType and content", "ContentInfo")
    oid = read_oid(der, parts[0], "ContentInfo.contentType")
    if oid != ID_SIGNED_DATA:
        raise MalformedMessageError(f"content type {oid} is not signedData", "ContentInfo")
    explicit = expect(parts[1], 0xA0, "ContentInfo.content")
    inner = children(der, explicit, "ContentInfo.content", 1, memo)
    if len(inner) != 1:
        raise MalformedMessageError("expected one SignedData", "ContentInfo.content")
    sd = expect(inner[0], 0x30, "SignedData")
    fields = children(der, sd, "SignedData", 2, memo)
    if len(fields) < 4:
        raise MalformedMessageError("missing fields", "SignedData")
    expect(fields[0], 0x02, "SignedData.version")
    expect(fields[1], 0x31, "SignedData.digestAlgorithms")
    encap = expect(fields[2], 0x30, "SignedData.encapContentInfo")
    signer_set = expect(fields[-1], 0x31, "SignedData.signerInfos")
    certificates: list[Tlv] = []
    for extra in fields[3:-1]:
        if extra.tag == 0xA0 and not certificates:
            certificates = children(der, extra, "SignedData.certificates", 3, memo)
        elif extra.tag != 0xA1:  # [1] crls are not used here
            raise MalformedMessageError(
                f"unexpected field tag 0x{extra.tag:02x}", "SignedData.certificates"
            )

    where = "SignedData.encapContentInfo"
    encap_fields = children(der, encap, where, 3, memo)
    if not encap_fields or len(encap_fields) > 2:
        raise MalformedMessageError("expected eContentType and eContent", where)
    content_type = read_oid(der, encap_fields[0], where + ".eContentType")
    segments = None
    if len(encap_fields) == 2:
        wrapper = expect(encap_fields[1], 0xA0, where + ".eContent")
        octets = children(der, wrapper, where + ".eContent", 4, memo)
        if len(octets) != 1:
            raise MalformedMessageError("expected one OCTET STRING", where + ".eContent")
        inner_content = octets[0]
        if inner_content.tag in (0x04, 0x24):
            segments = octet_segments(der, inner_content, where + ".eContent", 5, memo)
        else:  # PKCS#7 v1.5 (RFC 2315 §9.3): any type, the digest covers its contents octets
            segments = [(inner_content.body, inner_content.end)]
    return _Parsed(
        content_type,
        segments,
        certificates,
        children(der, signer_set, "SignedData.signerInfos", 3, memo),
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what cryptography and asn1crypto warn about odd certificates (negative serials,
    over-long attributes): such a certificate is judged by its signature, not by a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CryptographyDeprecationWarning included
        yield


# -- certificates -------------------------------------------------------------------------------


class _CertPool:
    """Certificates from the message and the caller, looked up by issuer/serial or SKI."""

    def __init__(self, certs: Sequence[x509.Certificate]) -> None:
        self._entries: list[tuple[x509.Certificate, asn1_x509.Name, int, bytes | None]] = []
        self._issuers: list[bytes] = []  # DER of each entry's issuer, for byte comparison
        for cert in certs:
            ids = _pool_ids(cert)
            if ids is not None:
                self._entries.append((cert, *ids[:3]))
                self._issuers.append(ids[3])

    def find_raw(self, der: bytes, sid: Tlv) -> x509.Certificate | bool | None:
        """Like :meth:`find` for a DER SignerIdentifier at ``sid``, without asn1crypto; False
        when only :meth:`find` can tell (an issuer spelled differently, odd encodings)."""
        if sid.tag == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
            wanted = der[sid.body : sid.end]
            return next((c for c, _, _, ski in self._entries if ski == wanted), None)
        parts = children(der, sid, "SignerIdentifier")
        if len(parts) != 2 or parts[0].tag != 0x30 or parts[1].tag != 0x02:
            return False
        issuer, number = parts
        if number.end == number.body or issuer.indefinite:
            return False
        serial = int.from_bytes(der[number.body : number.end], "big", signed=True)
        issuer_der = der[issuer.start : issuer.next]
        for (cert, _, cert_serial, _), cert_issuer in zip(
            self._entries, self._issuers, strict=True
        ):
            if cert_serial == serial:
                return cert if cert_issuer == issuer_der else False
        return None

    def find(self, sid: cms.SignerIdentifier) -> x509.Certificate | None:
        if sid.name == "subject_key_identifier":
            wanted = bytes(sid.chosen.native)
            return next((c for c, _, _, ski in self._entries if ski == wanted), None)
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        issuer_der = issuer.dump()
        for cert, cert_issuer, cert_serial, _ in self._entries:
            # Byte equality first: asn1crypto's Name comparison (LDAP string prep) is slow.
            if cert_serial == serial and (
                cert_issuer.dump() == issuer_der or cert_issuer == issuer
            ):
                return cert
        return None


@functools.lru_cache(maxsize=64)
def _pool_ids(cert: x509.Certificate) -> tuple[asn1_x509.Name, int, bytes | None, bytes] | None:
    """(issuer, serial, SKI, issuer DER) of a certificate, derived once per certificate (the
    same signers and CAs come back message after message); None for one we cannot index."""
    try:
        ski: bytes | None = cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        ski = None
    try:
        issuer_der = cert.issuer.public_bytes()
        issuer = asn1_x509.Name.load(issuer_der)
        serial = cert.serial_number
    except ValueError:
        return None
    return issuer, serial, ski, issuer_der


def _describe_sid(sid: cms.SignerIdentifier) -> str:
    return _describe_sid_der(bytes(sid.dump()))


@functools.lru_cache(maxsize=64)
def _describe_sid_der(der: bytes) -> str:
    """Text naming a SignerIdentifier; the issuer's readable form is slow to build."""
    sid = cms.SignerIdentifier.load(der)
    if sid.name == "subject_key_identifier":
        return f"subject key identifier {bytes(sid.chosen.native).hex()}"
    issuer = sid.chosen["issuer"].human_friendly
    return f"issuer {issuer}, serial {sid.chosen['serial_number'].native:x}"


def _load_certificates(der: bytes, elements: list[Tlv]) -> list[x509.Certificate]:
    out = []
    for element in elements:
        if element.tag != 0x30:  # attribute certificates and other formats
            continue
        try:
            out.append(_load_certificate(der[element.start : element.next]))
        except (ValueError, x509.InvalidVersion):
            continue  # a certificate we cannot read cannot be the signer's either
    return out


@functools.lru_cache(maxsize=64)
def _load_certificate(der: bytes) -> x509.Certificate:
    """Certificates are immutable: a sender's certificate, met in each of its messages, is
    loaded once."""
    return x509.load_der_x509_certificate(der)


# -- algorithms ---------------------------------------------------------------------------------


class _SigAlg(NamedTuple):
    scheme: SignatureScheme
    pss_hash: Digest | None = None
    mgf_hash: Digest | None = None
    salt: int = 0


def _digest(oid: str, where: str) -> Digest:
    digest = Digest.from_oid(oid)
    if digest is None:
        raise UnsupportedAlgorithmError(f"unsupported digest algorithm {oid} in {where}", oid=oid)
    return digest


def _signature_algorithm(alg: Any, where: str) -> _SigAlg:
    oid = alg["algorithm"].dotted
    if oid in _RSA_PKCS1:
        return _SigAlg(SignatureScheme.RSA_PKCS1V15)
    if oid in _ECDSA:
        return _SigAlg(SignatureScheme.ECDSA)
    if oid != _RSA_PSS:
        raise UnsupportedAlgorithmError(
            f"unsupported signature algorithm {oid} in {where}", oid=oid
        )
    params = alg["parameters"]
    if params.native is None:
        raise MalformedMessageError("RSASSA-PSS without parameters", where)
    hash_oid = params["hash_algorithm"]["algorithm"].dotted
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != _MGF1:
        raise UnsupportedAlgorithmError(
            f"unsupported PSS mask generation {mgf['algorithm'].dotted}",
            oid=mgf["algorithm"].dotted,
        )
    mgf_oid = mgf["parameters"]["algorithm"].dotted
    if params["trailer_field"].native != "trailer_field_bc":
        raise MalformedMessageError("unsupported PSS trailer field", where)
    return _SigAlg(
        SignatureScheme.RSA_PSS,
        _digest(hash_oid, where),
        _digest(mgf_oid, where),
        int(params["salt_length"].native),
    )


def _signature_holds(
    cert: x509.Certificate, alg: _SigAlg, digest: Digest, signature: bytes, hashed: bytes
) -> str | None:
    """None when the signature holds, else the reason."""
    try:
        key = _public_key(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "the signer certificate's public key cannot be read"
    prehashed = utils.Prehashed(digest.hash())
    try:
        if alg.scheme is SignatureScheme.ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "signer key does not match the signature algorithm"
            key.verify(signature, hashed, ec.ECDSA(prehashed))
            return None
        if not isinstance(key, rsa.RSAPublicKey):
            return "signer key does not match the signature algorithm"
        if alg.scheme is SignatureScheme.RSA_PKCS1V15:
            key.verify(signature, hashed, padding.PKCS1v15(), prehashed)
            return None
        assert alg.mgf_hash is not None
        if alg.pss_hash is not digest:
            return "PSS hash algorithm differs from the digest algorithm"
        pss = padding.PSS(mgf=padding.MGF1(alg.mgf_hash.hash()), salt_length=alg.salt)
        key.verify(signature, hashed, pss, prehashed)
        return None
    except (InvalidSignature, ValueError, TypeError, OverflowError):
        return ERR_SIGNATURE


# -- signed attributes --------------------------------------------------------------------------


class _Attrs(NamedTuple):
    covered: tuple[str, ...]
    content_type: str | None
    message_digest: bytes | None
    signing_time: datetime | None
    capabilities: Capabilities | None
    ess_ids: list[tuple[Digest, bytes]]  # (hash algorithm, certificate hash) from ESS attributes
    problem: str | None


def _single(attr: Any, name: str) -> Any:
    values = attr["values"]
    if len(values) != 1:
        raise ValueError(f"{name} must have exactly one value")
    return values[0]


def _read_attrs(attr_ders: Iterable[bytes], where: str) -> _Attrs:
    covered: list[str] = []
    seen: set[str] = set()
    found: dict[str, Any] = {}
    ess: list[tuple[Digest, bytes]] = []
    problem = None
    for attr_der in attr_ders:
        oid, value = _read_attr(attr_der, where)
        name = ATTRIBUTE_NAMES.get(oid, oid)
        covered.append(name)
        if oid in seen:
            problem = f"signed attribute {name} appears more than once"
        seen.add(oid)
        if oid in (OID_SIGNING_CERTIFICATE, OID_SIGNING_CERTIFICATE_V2):
            ess.append(value)
        elif value is not None:
            found[oid] = value
    if OID_CONTENT_TYPE not in found or OID_MESSAGE_DIGEST not in found:
        problem = problem or "signed attributes lack contentType or messageDigest"
    return _Attrs(
        tuple(covered),
        found.get(OID_CONTENT_TYPE),
        found.get(OID_MESSAGE_DIGEST),
        found.get(OID_SIGNING_TIME),
        found.get(OID_SMIME_CAPABILITIES),
        ess,
        problem,
    )


@functools.lru_cache(maxsize=256)
def _read_attr(attr_der: bytes, where: str) -> tuple[str, Any]:
    """(type OID, value read) of one signed attribute. Cached on its DER: contentType,
    signingCertificateV2 and smimeCapabilities are the same in every message of a signer, and
    asn1crypto takes longer to read them than the signature takes to check. The values are
    immutable; errors are raised, never cached."""
    attr = cms.CMSAttribute.load(attr_der)
    oid = attr["type"].dotted
    name = ATTRIBUTE_NAMES.get(oid, oid)
    try:
        if oid == OID_CONTENT_TYPE:
            return oid, _single(attr, name).dotted
        if oid == OID_MESSAGE_DIGEST:
            return oid, bytes(_single(attr, name).native)
        if oid == OID_SIGNING_TIME:
            return oid, _single(attr, name).native
        if oid == OID_SMIME_CAPABILITIES:
            return oid, Capabilities.from_asn1(_single(attr, name))
        if oid in (OID_SIGNING_CERTIFICATE, OID_SIGNING_CERTIFICATE_V2):
            first = _single(attr, name)["certs"][0]
            if oid == OID_SIGNING_CERTIFICATE:
                return oid, (Digest.SHA1, bytes(first["cert_hash"].native))
            hash_oid = first["hash_algorithm"]["algorithm"].dotted
            return oid, (_digest(hash_oid, where), bytes(first["cert_hash"].native))
    except (CaduceeError, *_ASN1_ERRORS) as exc:
        if isinstance(exc, UnsupportedAlgorithmError):
            raise
        raise MalformedMessageError(f"bad {name} attribute", f"{where}.{name}") from None
    return oid, None


def _ess_problem(cert: x509.Certificate, ess: list[tuple[Digest, bytes]]) -> str | None:
    for algorithm, expected in ess:
        if _certificate_hash(cert, algorithm) != expected:
            return "signing certificate attribute does not match the signer certificate"
    return None


@functools.lru_cache(maxsize=64)
def _certificate_hash(cert: x509.Certificate, algorithm: Digest) -> bytes:
    h = hashes.Hash(algorithm.hash())
    h.update(cert.public_bytes(Encoding.DER))
    return h.finalize()


@functools.lru_cache(maxsize=64)
def _public_key(cert: x509.Certificate) -> Any:
    return cert.public_key()


# -- per signer ---------------------------------------------------------------------------------


class _SignerFields(NamedTuple):
    signer_id: str
    digest: Digest
    alg: _SigAlg
    signature: bytes
    attrs_der: bytes  # the signed attributes as a SET, what the signature covers
    attrs: _Attrs | None
    cert: x509.Certificate | None


def _signer_fields_raw(
    der: bytes, element: Tlv, where: str, pool: _CertPool
) -> _SignerFields | None:
    """The SignerInfo read with the bounded DER walker and per-DER caches (the algorithm
    identifiers and most attributes are the same in every message of a signer). None when it
    is not plain DER of the expected shape, or anything is wrong: the asn1crypto reading then
    decides, with its error messages."""
    try:
        fields = children(der, element, where)
        if not 5 <= len(fields) <= 7 or any(f.indefinite for f in fields):
            return None  # indefinite lengths, missing or extra fields
        version, sid, digest_alg = fields[:3]
        index = 3
        attrs_tlv = None
        if fields[3].tag == 0xA0:
            attrs_tlv = fields[3]
            index = 4
        if len(fields) < index + 2 or len(fields) > index + 3:
            return None
        sig_alg, signature = fields[index], fields[index + 1]
        if (
            version.tag != 0x02
            or sid.tag not in (0x30, 0x80)
            or digest_alg.tag != 0x30
            or sig_alg.tag != 0x30
            or signature.tag != 0x04
            or any(f.tag != 0xA1 for f in fields[index + 2 :])
        ):
            return None
        cert = pool.find_raw(der, sid)
        if cert is False:
            return None
        assert cert is None or isinstance(cert, x509.Certificate)
        digest = _digest_of(der[digest_alg.start : digest_alg.next], where)
        alg = _signature_algorithm_of(der[sig_alg.start : sig_alg.next], where)
        attrs = None
        attrs_der = b""
        if attrs_tlv is not None:
            body = der[attrs_tlv.body : attrs_tlv.end]
            attrs_der = tlv(0x31, body)  # signed as a SET (RFC 5652 5.4)
            elements = children(der, attrs_tlv, where)
            if any(t.indefinite for t in elements):
                return None
            attrs = _read_attrs((der[t.start : t.next] for t in elements), where + ".signedAttrs")
        return _SignerFields(
            _describe_sid_der(der[sid.start : sid.next]),
            digest,
            alg,
            der[signature.body : signature.end],
            attrs_der,
            attrs,
            cert,
        )
    except (CaduceeError, *_ASN1_ERRORS):
        return None


@functools.lru_cache(maxsize=32)
def _digest_of(der: bytes, where: str) -> Digest:
    return _digest(algos.DigestAlgorithm.load(der)["algorithm"].dotted, where)


@functools.lru_cache(maxsize=32)
def _signature_algorithm_of(der: bytes, where: str) -> _SigAlg:
    return _signature_algorithm(algos.SignedDigestAlgorithm.load(der), where)


def _signer_fields(der: bytes, element: Tlv, where: str, pool: _CertPool) -> _SignerFields:
    try:
        si = cms.SignerInfo.load(der[element.start : element.next])
        sid = si["sid"]
        signer_id = _describe_sid(sid)
        digest = _digest(si["digest_algorithm"]["algorithm"].dotted, where)
        alg = _signature_algorithm(si["signature_algorithm"], where)
        signature = bytes(si["signature"].native)
        signed_attrs = si["signed_attrs"]
        has_attrs = not isinstance(signed_attrs, core.Void)
        attrs_der = b""
        if has_attrs:
            # Take the bytes as received before reading the attributes: asn1crypto re-serialises
            # a structure whose children were parsed, which costs more than the whole signature.
            body = bytes(signed_attrs.contents)
            attrs_der = tlv(0x31, body)  # signed as a SET (RFC 5652 §5.4)
        attrs = (
            _read_attrs((bytes(a.dump()) for a in signed_attrs), where + ".signedAttrs")
            if has_attrs
            else None
        )
        cert = pool.find(sid)
    except (UnsupportedAlgorithmError, MalformedMessageError):
        raise
    except _ASN1_ERRORS as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MalformedMessageError(f"cannot parse the SignerInfo ({first_line})", where) from None
    return _SignerFields(signer_id, digest, alg, signature, attrs_der, attrs, cert)


def _check_signer(
    der: bytes,
    element: Tlv,
    where: str,
    content_type: str,
    content_digest: Callable[[Digest], bytes],
    pool: _CertPool,
) -> SignerReport:
    fields = _signer_fields_raw(der, element, where, pool) or _signer_fields(
        der, element, where, pool
    )
    signer_id, digest, alg, signature, attrs_der, attrs, cert = fields

    def report(error: str | None) -> SignerReport:
        return SignerReport(
            certificate=cert,
            digest=digest,
            scheme=alg.scheme,
            signing_time=attrs.signing_time if attrs else None,
            capabilities=attrs.capabilities if attrs else None,
            covered=attrs.covered if attrs else (),
            valid=error is None,
            error=error,
            signer_id=signer_id,
        )

    if cert is None:
        return report(ERR_NO_CERT)
    if attrs is None:  # signature directly over the content
        return report(_signature_holds(cert, alg, digest, signature, content_digest(digest)))
    h = hashes.Hash(digest.hash())
    h.update(attrs_der)
    problem = _signature_holds(cert, alg, digest, signature, h.finalize())
    if problem:
        return report(problem)
    if attrs.problem:
        return report(attrs.problem)
    if attrs.message_digest != content_digest(digest):
        return report(ERR_DIGEST)
    if attrs.content_type != content_type:
        return report("content type attribute does not match the content")
    return report(_ess_problem(cert, attrs.ess_ids))


def verify_signed_data(
    der: bytes,
    *,
    detached_content: bytes | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
) -> SignedReport:
    """Check every SignerInfo of a DER/BER ``ContentInfo(SignedData)``.

    ``detached_content`` is the signed content when the message does not carry it.
    """
    if not isinstance(der, bytes):
        der = bytes(der)
    parsed = _parse_outer(der)
    if parsed.segments is None:
        if detached_content is None:
            raise UsageError("the signature is detached: the signed content must be supplied")
        content = detached_content
    elif len(parsed.segments) == 1:
        start, end = parsed.segments[0]
        content = der[start:end]
    else:
        content = b"".join(memoryview(der)[s:e] for s, e in parsed.segments)

    digests: dict[Digest, bytes] = {}

    def content_digest(algorithm: Digest) -> bytes:
        if algorithm not in digests:
            h = hashes.Hash(algorithm.hash())
            h.update(content)
            digests[algorithm] = h.finalize()
        return digests[algorithm]

    with _quiet():
        certificates = _load_certificates(der, parsed.certificates)
        pool = _CertPool([*certificates, *extra_certificates])
        signers = tuple(
            _check_signer(
                der, element, f"SignerInfo[{i}]", parsed.content_type, content_digest, pool
            )
            for i, element in enumerate(parsed.signer_infos)
        )
    return SignedReport(
        content=content,
        content_type=parsed.content_type,
        detached=parsed.segments is None,
        signers=signers,
        certificates=tuple(certificates),
    )
