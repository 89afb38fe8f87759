"""CMS SignedData verification: every SignerInfo checked, one report per signer.

Structure problems raise :class:`MalformedMessageError` (with ``where``), unknown algorithms
:class:`UnsupportedAlgorithmError`; a signature that does not hold is not an exception but a
``SignerReport`` with ``valid=False`` and the reason, so a caller can show "signature broken"
next to the content. Trust in the certificate (path validation, revocation) is not decided here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.core.cms.sign_attrs import (
    ATTRIBUTE_NAMES,
    ID_SIGNED_DATA,
    OID_CONTENT_TYPE,
    OID_MESSAGE_DIGEST,
    OID_SIGNING_CERTIFICATE,
    OID_SIGNING_CERTIFICATE_V2,
    OID_SIGNING_TIME,
    OID_SMIME_CAPABILITIES,
    Tlv,
    children,
    der_length,
    expect,
    octet_segments,
    read_oid,
    read_tlv,
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
    ci = expect(read_tlv(der, 0, n, "ContentInfo"), 0x30, "ContentInfo", "a SEQUENCE")
    if ci.end != n and der[ci.end :].strip(b"\x00 \t\r\n"):  # a file's final newline is fine
        raise MalformedMessageError("trailing data after the ContentInfo", "ContentInfo")
    parts = children(der, ci, "ContentInfo")
    if len(parts) != 2:
        raise MalformedMessageError("expected contentType and content", "ContentInfo")
    oid = read_oid(der, parts[0], "ContentInfo.contentType")
    if oid != ID_SIGNED_DATA:
        raise MalformedMessageError(f"content type {oid} is not signedData", "ContentInfo")
    explicit = expect(parts[1], 0xA0, "ContentInfo.content", "[0]")
    inner = children(der, explicit, "ContentInfo.content", 1)
    if len(inner) != 1:
        raise MalformedMessageError("expected one SignedData", "ContentInfo.content")
    sd = expect(inner[0], 0x30, "SignedData", "a SEQUENCE")
    fields = children(der, sd, "SignedData", 2)
    if len(fields) < 4:
        raise MalformedMessageError("missing fields", "SignedData")
    expect(fields[0], 0x02, "SignedData.version", "an INTEGER")
    expect(fields[1], 0x31, "SignedData.digestAlgorithms", "a SET")
    encap = expect(fields[2], 0x30, "SignedData.encapContentInfo", "a SEQUENCE")
    signer_set = expect(fields[-1], 0x31, "SignedData.signerInfos", "a SET")
    certificates: list[Tlv] = []
    for extra in fields[3:-1]:
        if extra.tag == 0xA0 and not certificates:
            certificates = children(der, extra, "SignedData.certificates", 3)
        elif extra.tag != 0xA1:  # [1] crls are not used here
            raise MalformedMessageError(
                f"unexpected field tag 0x{extra.tag:02x}", "SignedData.certificates"
            )

    where = "SignedData.encapContentInfo"
    encap_fields = children(der, encap, where, 3)
    if not encap_fields or len(encap_fields) > 2:
        raise MalformedMessageError("expected eContentType and eContent", where)
    content_type = read_oid(der, encap_fields[0], where + ".eContentType")
    segments = None
    if len(encap_fields) == 2:
        wrapper = expect(encap_fields[1], 0xA0, where + ".eContent", "[0]")
        octets = children(der, wrapper, where + ".eContent", 4)
        if len(octets) != 1:
            raise MalformedMessageError("expected one OCTET STRING", where + ".eContent")
        inner_content = octets[0]
        if inner_content.tag in (0x04, 0x24):
            segments = octet_segments(der, inner_content, where + ".eContent", 5)
        else:  # PKCS#7 v1.5 (RFC 2315 §9.3): any type, the digest covers its contents octets
            segments = [(inner_content.cstart, inner_content.cend)]
    return _Parsed(
        content_type,
        segments,
        certificates,
        children(der, signer_set, "SignedData.signerInfos", 3),
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
        for cert in certs:
            try:
                ski: bytes | None = cert.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                ).value.digest
            except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
                ski = None
            try:
                issuer = asn1_x509.Name.load(cert.issuer.public_bytes())
                serial = cert.serial_number
            except ValueError:
                continue
            self._entries.append((cert, issuer, serial, ski))

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


def _describe_sid(sid: cms.SignerIdentifier) -> str:
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
            out.append(x509.load_der_x509_certificate(der[element.start : element.end]))
        except (ValueError, x509.InvalidVersion):
            continue  # a certificate we cannot read cannot be the signer's either
    return out


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
        key = cert.public_key()
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


def _read_attrs(signed_attrs: Any, where: str) -> _Attrs:
    covered: list[str] = []
    seen: set[str] = set()
    found: dict[str, Any] = {}
    ess: list[tuple[Digest, bytes]] = []
    problem = None
    for attr in signed_attrs:
        oid = attr["type"].dotted
        name = ATTRIBUTE_NAMES.get(oid, oid)
        covered.append(name)
        if oid in seen:
            problem = f"signed attribute {name} appears more than once"
        seen.add(oid)
        try:
            if oid == OID_CONTENT_TYPE:
                found[oid] = _single(attr, name).dotted
            elif oid == OID_MESSAGE_DIGEST:
                found[oid] = bytes(_single(attr, name).native)
            elif oid == OID_SIGNING_TIME:
                found[oid] = _single(attr, name).native
            elif oid == OID_SMIME_CAPABILITIES:
                found[oid] = Capabilities.from_asn1(_single(attr, name))
            elif oid in (OID_SIGNING_CERTIFICATE, OID_SIGNING_CERTIFICATE_V2):
                first = _single(attr, name)["certs"][0]
                if oid == OID_SIGNING_CERTIFICATE:
                    ess.append((Digest.SHA1, bytes(first["cert_hash"].native)))
                else:
                    hash_oid = first["hash_algorithm"]["algorithm"].dotted
                    ess.append((_digest(hash_oid, where), bytes(first["cert_hash"].native)))
        except (CaduceeError, *_ASN1_ERRORS) as exc:
            if isinstance(exc, UnsupportedAlgorithmError):
                raise
            raise MalformedMessageError(f"bad {name} attribute", f"{where}.{name}") from None
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


def _ess_problem(cert: x509.Certificate, ess: list[tuple[Digest, bytes]]) -> str | None:
    der = cert.public_bytes(Encoding.DER)
    for algorithm, expected in ess:
        h = hashes.Hash(algorithm.hash())
        h.update(der)
        if h.finalize() != expected:
            return "signing certificate attribute does not match the signer certificate"
    return None


# -- per signer ---------------------------------------------------------------------------------


def _check_signer(
    der: bytes,
    element: Tlv,
    where: str,
    content_type: str,
    content_digest: Callable[[Digest], bytes],
    pool: _CertPool,
) -> SignerReport:
    try:
        si = cms.SignerInfo.load(der[element.start : element.end])
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
            attrs_der = b"\x31" + der_length(len(body)) + body  # signed as a SET (RFC 5652 §5.4)
        attrs = _read_attrs(signed_attrs, where + ".signedAttrs") if has_attrs else None
        cert = pool.find(sid)
    except (UnsupportedAlgorithmError, MalformedMessageError):
        raise
    except _ASN1_ERRORS as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MalformedMessageError(f"cannot parse the SignerInfo ({first_line})", where) from None

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
