"""sign_data / verify_signed_data with our own peer: every key type, scheme and digest."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes, serialization

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.capabilities import LEGACY_GPGSM, Capabilities
from caducee.core.cms.sign import sign_data
from caducee.core.cms.verify import verify_signed_data
from caducee.errors import (
    MissingCertificateError,
    SignatureError,
    UnsupportedAlgorithmError,
    UsageError,
)
from tests.conftest import TestPKI as PKI
from tests.core_sign.conftest import DIGESTS, SIGNERS, T0, identity

CONTENT = b"Content-Type: text/plain\r\n\r\nResultats de laboratoire\r\n"


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", DIGESTS, ids=lambda d: d.label)
@pytest.mark.parametrize(("who", "scheme"), SIGNERS, ids=lambda v: getattr(v, "value", v))
def test_round_trip(
    pki: PKI, who: str, scheme: SignatureScheme, digest: Digest, detached: bool
) -> None:
    key = identity(pki, who).signing
    der = sign_data(
        CONTENT,
        key,
        signing_time=T0,
        digest=digest,
        scheme=scheme,
        detached=detached,
        capabilities=Capabilities(),
    )
    report = verify_signed_data(der, detached_content=CONTENT if detached else None)
    assert report.valid, report.signers
    report.raise_for_invalid()
    assert report.content == CONTENT
    assert report.detached is detached
    assert report.content_type == "1.2.840.113549.1.7.1"
    (signer,) = report.signers
    assert signer.certificate == key.certificate
    assert (signer.digest, signer.scheme) == (digest, scheme)
    assert signer.signing_time == T0
    assert signer.capabilities == Capabilities()
    assert set(signer.covered) == {
        "contentType",
        "messageDigest",
        "signingTime",
        "smimeCapabilities",
        "signingCertificateV2",
    }
    assert report.certificates == (key.certificate,)


def test_default_scheme_follows_the_key(pki: PKI) -> None:
    rsa_der = sign_data(CONTENT, pki.alice.signing, signing_time=T0)
    ec_der = sign_data(CONTENT, pki.carol.signing, signing_time=T0)
    rsa_report = verify_signed_data(rsa_der, detached_content=CONTENT)
    ec_report = verify_signed_data(ec_der, detached_content=CONTENT)
    assert rsa_report.signers[0].scheme is SignatureScheme.RSA_PKCS1V15
    assert ec_report.signers[0].scheme is SignatureScheme.ECDSA
    assert rsa_report.signers[0].capabilities is None  # not announced unless given
    assert "smimeCapabilities" not in rsa_report.signers[0].covered


def test_structure_is_what_rfc_5652_asks(pki: PKI) -> None:
    key = pki.alice.signing
    der = sign_data(
        CONTENT,
        key,
        signing_time=T0,
        detached=False,
        capabilities=LEGACY_GPGSM,
        extra_certificates=[pki.ca.certificate, key.certificate],
    )
    info = cms.ContentInfo.load(der)
    assert info.dump(force=True) == der  # strict DER: re-encoding changes nothing
    sd = info["content"]
    assert sd["version"].native == "v1"
    assert sd["encap_content_info"]["content"].native == CONTENT
    assert len(sd["certificates"]) == 2  # the signer's certificate is not repeated
    si = sd["signer_infos"][0]
    assert si["sid"].name == "issuer_and_serial_number"
    assert si["sid"].chosen["serial_number"].native == key.certificate.serial_number
    assert si["digest_algorithm"]["parameters"].native is None
    attrs = {a["type"].dotted: a["values"][0] for a in si["signed_attrs"]}
    ess = attrs["1.2.840.113549.1.9.16.2.47"]["certs"][0]
    cert_hash = hashes.Hash(hashes.SHA256())
    cert_hash.update(key.certificate.public_bytes(serialization.Encoding.DER))
    assert ess["cert_hash"].native == cert_hash.finalize()
    assert ess["issuer_serial"]["serial_number"].native == key.certificate.serial_number
    assert Capabilities.from_asn1(attrs["1.2.840.113549.1.9.15"]) == LEGACY_GPGSM
    assert attrs["1.2.840.113549.1.9.5"].name == "utc_time"


def test_generalized_time_after_2049(pki: PKI) -> None:
    when = dt.datetime(2051, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    der = sign_data(CONTENT, pki.alice.signing, signing_time=when)
    report = verify_signed_data(der, detached_content=CONTENT)
    assert report.valid
    assert report.signers[0].signing_time == when


def test_other_content_type(pki: PKI) -> None:
    der = sign_data(
        b"\x30\x00", pki.dave.signing, signing_time=T0, content_type="1.2.840.113549.1.9.16.1.4"
    )
    report = verify_signed_data(der, detached_content=b"\x30\x00")
    assert report.valid
    assert report.content_type == "1.2.840.113549.1.9.16.1.4"
    assert cms.ContentInfo.load(der)["content"]["version"].native == "v3"


def test_empty_and_binary_content(pki: PKI) -> None:
    for content in (b"", bytes(range(256)) * 3):
        der = sign_data(content, pki.carol.signing, signing_time=T0, detached=False)
        report = verify_signed_data(der)
        assert report.valid and report.content == content


# -- what must fail -------------------------------------------------------------------------------


def test_altered_content_is_reported(pki: PKI) -> None:
    der = sign_data(CONTENT, pki.alice.signing, signing_time=T0)
    report = verify_signed_data(der, detached_content=CONTENT + b" ")
    assert not report.valid
    assert report.signers[0].error == "content digest does not match"
    with pytest.raises(SignatureError, match="content digest does not match"):
        report.raise_for_invalid()


def test_altered_encapsulated_content_is_reported(pki: PKI) -> None:
    der = sign_data(CONTENT, pki.dave.signing, signing_time=T0, detached=False)
    tampered = der.replace(b"laboratoire", b"LABORATOIRE")
    report = verify_signed_data(tampered)
    assert report.signers[0].error == "content digest does not match"


def test_tampered_signed_attribute_breaks_the_signature(pki: PKI) -> None:
    der = sign_data(CONTENT, pki.bob.signing, signing_time=T0, scheme=SignatureScheme.RSA_PSS)
    utc = b"261129083000Z"
    assert der.count(utc) == 1
    report = verify_signed_data(der.replace(utc, b"261129093000Z"), detached_content=CONTENT)
    assert report.signers[0].error == "signature does not verify"
    assert report.signers[0].signing_time == T0 + dt.timedelta(hours=1)


def test_missing_certificate(pki: PKI) -> None:
    der = sign_data(CONTENT, pki.carol.signing, signing_time=T0)
    info = cms.ContentInfo.load(der)
    info["content"]["certificates"] = []
    stripped = info.dump(force=True)
    report = verify_signed_data(stripped, detached_content=CONTENT)
    assert report.signers[0].error == "signer certificate not found"
    assert report.signers[0].certificate is None
    with pytest.raises(MissingCertificateError, match=r"Operator 1 CA.*not found"):
        report.raise_for_invalid()
    supplied = verify_signed_data(
        stripped, detached_content=CONTENT, extra_certificates=[pki.carol.signing.certificate]
    )
    assert supplied.valid
    assert supplied.certificates == ()


def test_wrong_certificate_supplied(pki: PKI) -> None:
    """A certificate with the signer's issuer and serial but another key must not verify."""
    der = sign_data(CONTENT, pki.alice.signing, signing_time=T0)
    info = cms.ContentInfo.load(der)
    sid = info["content"]["signer_infos"][0]["sid"].chosen
    sid["serial_number"] = pki.bob.signing.certificate.serial_number
    report = verify_signed_data(
        info.dump(force=True),
        detached_content=CONTENT,
        extra_certificates=[pki.bob.signing.certificate],
    )
    assert report.signers[0].certificate == pki.bob.signing.certificate
    assert report.signers[0].error == "signature does not verify"


def test_substituted_certificate_caught_by_signing_certificate_v2(pki: PKI) -> None:
    """Same key, another certificate: ESS signingCertificateV2 (RFC 5035) notices."""
    from caducee import devpki

    key = pki.alice.signing
    twin_cert = devpki.issue_certificate(pki.ca, "mallory@op1.test", key._key, purpose="both")
    der = sign_data(CONTENT, key, signing_time=T0)
    info = cms.ContentInfo.load(der)
    sid = info["content"]["signer_infos"][0]["sid"].chosen
    sid["serial_number"] = twin_cert.serial_number
    info["content"]["certificates"] = []
    report = verify_signed_data(
        info.dump(force=True), detached_content=CONTENT, extra_certificates=[twin_cert]
    )
    assert report.signers[0].error == (
        "signing certificate attribute does not match the signer certificate"
    )


def test_detached_without_content_is_a_usage_error(pki: PKI) -> None:
    der = sign_data(CONTENT, pki.alice.signing, signing_time=T0)
    with pytest.raises(UsageError, match="detached"):
        verify_signed_data(der)


def test_signing_refuses_bad_choices(pki: PKI) -> None:
    with pytest.raises(UnsupportedAlgorithmError, match="verifying only"):
        sign_data(CONTENT, pki.alice.signing, signing_time=T0, digest=Digest.SHA1)
    with pytest.raises(UnsupportedAlgorithmError, match="EC key cannot sign with rsa-pss"):
        sign_data(CONTENT, pki.carol.signing, signing_time=T0, scheme=SignatureScheme.RSA_PSS)
    with pytest.raises(UnsupportedAlgorithmError, match="RSA key cannot sign with ecdsa"):
        sign_data(CONTENT, pki.alice.signing, signing_time=T0, scheme=SignatureScheme.ECDSA)
    with pytest.raises(UsageError, match="time zone"):
        sign_data(CONTENT, pki.alice.signing, signing_time=dt.datetime(2026, 1, 1))


class _OneCallKey:
    """Wraps a key to count sign_digest calls: one key operation per message."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def certificate(self):  # type: ignore[no-untyped-def]
        return self.inner.certificate  # type: ignore[attr-defined]

    def signature_schemes(self):  # type: ignore[no-untyped-def]
        return frozenset({SignatureScheme.RSA_PKCS1V15})  # a card without PSS

    def sign_digest(self, digest, algorithm, scheme):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner.sign_digest(digest, algorithm, scheme)  # type: ignore[attr-defined]


def test_one_key_operation_and_scheme_offer(pki: PKI) -> None:
    key = _OneCallKey(pki.alice.signing)
    der = sign_data(CONTENT * 1000, key, signing_time=T0, digest=Digest.SHA512)
    assert key.calls == 1
    assert verify_signed_data(der, detached_content=CONTENT * 1000).valid
    with pytest.raises(UnsupportedAlgorithmError, match="does not offer rsa-pss"):
        sign_data(CONTENT, key, signing_time=T0, scheme=SignatureScheme.RSA_PSS)
    assert key.calls == 1
