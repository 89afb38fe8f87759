"""Path validation across two operators: what is accepted, and each refusal with its reason."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.errors import TrustError, UsageError
from caducee.pki import CrlCache, TrustStore, validate_certificate
from caducee.pki.errors import (
    CertificateRevokedError,
    CrlSignatureError,
    EmailMismatchError,
    ExpiredError,
    NoDistributionPointError,
    RevocationUnavailableError,
    UnknownCAError,
    WrongUsageError,
)
from caducee.pki.profiles import EMAIL_PROTECTION, Purpose, key_usage_for

from .conftest import ALICE, BOB, PASS, T0, TwoOperators, at, professional


def test_a_validates_b_encryption_certificate(two_ops: TwoOperators) -> None:
    result = validate_certificate(
        two_ops.bob.enc, purpose="encryption", trust=two_ops.trust_a(),
        crls=two_ops.crls(at(1)), at=at(2), email=BOB.email,
    )  # fmt: skip
    assert result.path[0] == two_ops.bob.enc
    assert result.trust_anchor == two_ops.op_b.certificate
    assert result.describe().endswith("Operator B Root CA (trust anchor)")
    assert result.purpose is Purpose.ENCRYPTION


def test_b_validates_a_encryption_certificate_through_the_national_root(
    two_ops: TwoOperators,
) -> None:
    result = validate_certificate(
        two_ops.alice.enc, purpose="encryption", trust=two_ops.trust_b(),
        crls=two_ops.crls(at(1)), at=at(2), email="Alice.Martin@OP-A.test",
    )  # fmt: skip
    assert [c.subject for c in result.path] == [
        two_ops.alice.enc.subject,
        two_ops.op_a.certificate.subject,
        two_ops.root.certificate.subject,
    ]
    assert "Alice Martin (10003456789)" in result.describe()


def test_signature_certificates_validate_at_signing_time(two_ops: TwoOperators) -> None:
    crls = CrlCache(two_ops.crls(at(1)))
    for pro in (two_ops.alice, two_ops.bob):
        result = validate_certificate(
            pro.sig, purpose="signature", trust=two_ops.trust_a(), crls=crls, at=at(0.5),
            email=pro.identity.email, at_signing_time=True,
        )  # fmt: skip
        assert result.certificate == pro.sig


def test_intermediate_supplied_by_the_message(two_ops: TwoOperators) -> None:
    trust = TrustStore([two_ops.root.certificate])  # operator A's CA not in the bundle
    with pytest.raises(UnknownCAError):
        validate_certificate(
            two_ops.alice.sig, purpose="signature", trust=trust, crls=two_ops.crls(at(1)),
            at=at(2),
        )  # fmt: skip
    result = validate_certificate(
        two_ops.alice.sig, purpose="signature", trust=trust, crls=two_ops.crls(at(1)), at=at(2),
        intermediates=[two_ops.op_a.certificate],
    )  # fmt: skip
    assert len(result.path) == 3


def test_built_paths_follow_the_trust_store(two_ops: TwoOperators) -> None:
    trust = TrustStore([two_ops.root.certificate])
    crls = CrlCache(two_ops.crls(at(1)))
    with pytest.raises(UnknownCAError):  # a failure is not remembered...
        validate_certificate(two_ops.alice.sig, purpose="signature", trust=trust, crls=crls,
                             at=at(2))  # fmt: skip
    trust.add_intermediate(two_ops.op_a.certificate)  # ...so the new CA is seen at once
    for _ in range(2):  # the second time from the built path
        result = validate_certificate(
            two_ops.alice.sig, purpose="signature", trust=trust, crls=crls, at=at(2)
        )
        assert len(result.path) == 3
    assert len(trust.built_paths) == 1
    trust.add_anchor(two_ops.op_b.certificate)
    assert not trust.built_paths


@pytest.mark.parametrize(("who", "cert", "purpose", "missing"), [
    ("alice", "sig", "encryption", ["key_encipherment"]),
    ("alice", "enc", "signature", ["digital_signature"]),
    ("bob", "sig", "encryption", ["key_agreement"]),
    ("bob", "enc", "signature", ["digital_signature"]),
])  # fmt: skip
def test_wrong_usage_is_refused(
    two_ops: TwoOperators, who: str, cert: str, purpose: str, missing: list[str]
) -> None:
    with pytest.raises(WrongUsageError) as err:
        validate_certificate(
            getattr(getattr(two_ops, who), cert), purpose=purpose, trust=two_ops.trust_a(),
            crls=two_ops.crls(at(1)), at=at(2),
        )  # fmt: skip
    assert err.value.missing == missing
    assert err.value.purpose == purpose
    assert f"not a {purpose}" in str(err.value) or f"not an {purpose}" in str(err.value)


def test_unknown_ca_is_refused(two_ops: TwoOperators) -> None:
    trust = TrustStore([two_ops.root.certificate])  # operator B's root not trusted
    with pytest.raises(UnknownCAError) as err:
        validate_certificate(
            two_ops.bob.enc, purpose="encryption", trust=trust, crls=two_ops.crls(at(1)),
            at=at(2),
        )  # fmt: skip
    assert "Operator B Root CA" in err.value.issuer
    assert isinstance(err.value, TrustError)


def test_wrong_email_is_refused(two_ops: TwoOperators) -> None:
    with pytest.raises(EmailMismatchError) as err:
        validate_certificate(
            two_ops.bob.enc, purpose="encryption", trust=two_ops.trust_a(),
            crls=two_ops.crls(at(1)), at=at(2), email="someone.else@op-b.test",
        )  # fmt: skip
    assert err.value.found == [BOB.email]
    assert "someone.else@op-b.test" in str(err.value)


def test_revoked_certificate_reports_time_and_reason(two_ops: TwoOperators) -> None:
    lost = professional(two_ops.op_a, ALICE, "ec")
    crl = two_ops.op_a.revoke(lost.sig.serial_number, "keyCompromise", now=at(3))
    crls = [two_ops.root.crl(now=at(3)), crl]
    with pytest.raises(CertificateRevokedError) as err:
        validate_certificate(
            lost.sig, purpose="signature", trust=two_ops.trust_b(), crls=crls, at=at(4)
        )
    assert err.value.reason == "keyCompromise"
    assert err.value.revocation_time == at(3)
    assert err.value.is_ee
    assert "revoked on 2026-01-05 12:00:00 UTC (reason: keyCompromise)" in str(err.value)
    # the other certificate of the same person is untouched
    validate_certificate(
        lost.enc, purpose="encryption", trust=two_ops.trust_b(), crls=crls, at=at(4)
    )


def test_signing_time_before_revocation(two_ops: TwoOperators) -> None:
    pro = professional(two_ops.op_a, ALICE, "ec")
    two_ops.op_a.revoke(pro.sig.serial_number, "superseded", now=at(3))
    crl = two_ops.op_a.revoke(pro.enc.serial_number, "keyCompromise", now=at(3))
    crls = [two_ops.root.crl(now=at(3)), crl]
    # superseded after the signature was made: the signature stays valid
    validate_certificate(
        pro.sig, purpose="signature", trust=two_ops.trust_a(), crls=crls, at=at(1),
        at_signing_time=True,
    )  # fmt: skip
    # a compromised key cannot be rescued by a claimed signing time before the compromise
    with pytest.raises(CertificateRevokedError) as err:
        validate_certificate(
            pro.enc, purpose="encryption", trust=two_ops.trust_a(), crls=crls, at=at(1),
            at_signing_time=True,
        )  # fmt: skip
    assert err.value.reason == "keyCompromise"


def test_revoked_operator_ca(two_ops: TwoOperators, tmp_path: object) -> None:
    from caducee.pki import CAConfig, CertificateAuthority
    from caducee.pki.ca import generate_ca_key

    op_c = CertificateAuthority.init_subordinate(
        two_ops.base / "op-c", CAConfig("Operator C CA", "http://127.0.0.1:9/op-c.crl"),
        two_ops.root, key=generate_ca_key("p256"), passphrase=PASS, now=T0,
    )  # fmt: skip
    pro = professional(op_c, ALICE, "ec")
    root_crl = two_ops.root.revoke(
        op_c.certificate.serial_number, "cessationOfOperation", now=at(5)
    )
    trust = TrustStore([two_ops.root.certificate], [op_c.certificate])
    with pytest.raises(CertificateRevokedError) as err:
        validate_certificate(
            pro.enc, purpose="encryption", trust=trust, crls=[root_crl, op_c.crl(now=at(5))],
            at=at(6),
        )  # fmt: skip
    assert not err.value.is_ee
    assert err.value.reason == "cessationOfOperation"
    assert "CA certificate of Operator C CA" in str(err.value)


def test_expired_certificate(two_ops: TwoOperators) -> None:
    short = professional(two_ops.op_b, BOB, "ec", days=10)
    when = at(days=30)
    with pytest.raises(ExpiredError) as err:
        validate_certificate(
            short.enc, purpose="encryption", trust=two_ops.trust_a(), crls=two_ops.crls(when),
            at=when,
        )  # fmt: skip
    assert err.value.not_after == short.enc.not_valid_after_utc
    assert "expired on" in str(err.value)
    # the same certificate was fine when the signature was made
    validate_certificate(
        short.sig, purpose="signature", trust=two_ops.trust_a(), crls=two_ops.crls(when),
        at=at(days=5), at_signing_time=True,
    )  # fmt: skip


def test_an_expired_trust_anchor_vouches_for_nothing_after_its_end(two_ops: TwoOperators) -> None:
    """As OpenSSL and the mail clients do: an anchor past its validity is refused, by name;
    a signature made while it was valid is still judged at its signing time."""
    root = two_ops.op_b.certificate
    short_root = (
        x509.CertificateBuilder()
        .subject_name(root.subject)
        .issuer_name(root.issuer)
        .public_key(root.public_key())
        .serial_number(root.serial_number + 1)
        .not_valid_before(root.not_valid_before_utc)
        .not_valid_after(at(days=20))
    )
    for extension in root.extensions:
        short_root = short_root.add_extension(extension.value, extension.critical)
    anchor = short_root.sign(two_ops.op_b.store.load_key(PASS), hashes.SHA256())
    trust = TrustStore([anchor])
    validate_certificate(
        two_ops.bob.enc, purpose="encryption", trust=trust, crls=two_ops.crls(at(1)), at=at(2),
    )  # fmt: skip
    when = at(days=30)
    with pytest.raises(ExpiredError) as err:
        validate_certificate(
            two_ops.bob.enc, purpose="encryption", trust=trust, crls=two_ops.crls(when),
            at=when,
        )  # fmt: skip
    assert "Operator B Root CA (trust anchor)" in str(err.value) and "expired on" in str(err.value)
    validate_certificate(
        two_ops.bob.sig, purpose="signature", trust=trust, crls=two_ops.crls(when),
        at=at(days=5), at_signing_time=True,
    )  # fmt: skip


def _no_crldp_cert(two_ops: TwoOperators) -> x509.Certificate:
    ca_key = two_ops.op_a.store.load_key(PASS)
    key = ec.generate_private_key(ec.SECP256R1())
    ski = two_ops.op_a.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return (
        x509.CertificateBuilder()
        .subject_name(ALICE.to_name())
        .issuer_name(two_ops.op_a.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(at(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage_for(Purpose.ENCRYPTION, key.public_key()), critical=True)
        .add_extension(x509.ExtendedKeyUsage([EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(ALICE.email)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def test_certificate_without_distribution_point_is_refused(two_ops: TwoOperators) -> None:
    cert = _no_crldp_cert(two_ops)
    # even with a valid CRL of its issuer at hand
    with pytest.raises(NoDistributionPointError) as err:
        validate_certificate(
            cert, purpose="encryption", trust=two_ops.trust_a(), crls=two_ops.crls(at(1)),
            at=at(2),
        )  # fmt: skip
    assert "no CRL distribution point" in str(err.value)
    assert isinstance(err.value, RevocationUnavailableError)


def test_crl_with_a_bad_signature_is_rejected(two_ops: TwoOperators) -> None:
    good = two_ops.op_b.crl(now=at(1))
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(two_ops.op_b.certificate.subject)
        .last_update(at(1))
        .next_update(at(days=7))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    raw = bytearray(good.public_bytes(Encoding.DER))
    raw[-5] ^= 0x55  # inside the signature value
    tampered = x509.load_der_x509_crl(bytes(raw))
    for bad in (forged, tampered):
        with pytest.raises(CrlSignatureError) as err:
            validate_certificate(
                two_ops.bob.enc, purpose="encryption", trust=two_ops.trust_a(), crls=[bad],
                at=at(2),
            )  # fmt: skip
        assert "fails its signature check" in str(err.value)


def test_missing_or_stale_crl(two_ops: TwoOperators) -> None:
    crls = two_ops.crls(at(1))
    with pytest.raises(RevocationUnavailableError) as err:  # no CRL for the national root's level
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=two_ops.trust_b(), crls=crls[1:],
            at=at(2),
        )  # fmt: skip
    assert "Operator A Health CA" in str(err.value)
    with pytest.raises(RevocationUnavailableError) as err:  # CRLs past their nextUpdate
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=two_ops.trust_b(), crls=crls,
            at=at(days=20),
        )  # fmt: skip
    assert "not current" in str(err.value)


def test_naive_time_is_a_usage_error(two_ops: TwoOperators) -> None:
    with pytest.raises(UsageError):
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=two_ops.trust_a(), crls=[],
            at=dt.datetime(2026, 1, 6),
        )  # fmt: skip


def test_reused_trust_store_still_sees_revocation_and_staleness(two_ops: TwoOperators) -> None:
    """A path already checked is not re-scaliced by pyhanko, but never at the cost of a verdict."""
    pro = professional(two_ops.op_b, BOB, "ec")
    trust = two_ops.trust_a()
    crls = CrlCache(two_ops.crls(at(1)))
    for _ in range(2):
        validate_certificate(pro.enc, purpose="encryption", trust=trust, crls=crls, at=at(2))
    assert len(trust.passed_paths) == 1
    with pytest.raises(RevocationUnavailableError, match="not current"):
        validate_certificate(pro.enc, purpose="encryption", trust=trust, crls=crls, at=at(days=9))
    new_crl = two_ops.op_b.revoke(pro.enc.serial_number, "superseded", now=at(3))
    with pytest.raises(CertificateRevokedError):
        validate_certificate(pro.enc, purpose="encryption", trust=trust, crls=[new_crl], at=at(4))
    # and with the old CRL the same reused store still accepts it (the CRL is what decides)
    validate_certificate(pro.enc, purpose="encryption", trust=trust, crls=crls, at=at(2))


def test_certificate_with_a_forged_signature(two_ops: TwoOperators) -> None:
    """Same issuer name, AKI and CRLDP as operator A's certificates, signed by another key."""
    from caducee.pki.errors import InvalidCertificateError

    genuine = two_ops.alice.enc
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(genuine.issuer)
        .public_key(impostor_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(genuine.not_valid_before_utc)
        .not_valid_after(genuine.not_valid_after_utc)
    )
    for ext in genuine.extensions:
        if not isinstance(ext.value, x509.SubjectKeyIdentifier | x509.KeyUsage):
            builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(
        key_usage_for(Purpose.ENCRYPTION, impostor_key.public_key()), critical=True
    )
    forged = builder.sign(impostor_key, hashes.SHA256())
    with pytest.raises(InvalidCertificateError) as err:
        validate_certificate(
            forged, purpose="encryption", trust=two_ops.trust_b(), crls=two_ops.crls(at(1)),
            at=at(2), email=ALICE.email,
        )  # fmt: skip
    assert "signature" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_newest_crl_generation_decides(two_ops: TwoOperators) -> None:
    pro = professional(two_ops.op_b, BOB, "ec")
    before = two_ops.op_b.crl(now=at(1))
    after = two_ops.op_b.revoke(pro.enc.serial_number, "affiliationChanged", now=at(5))
    cache = CrlCache([after, before])  # both generations at hand, in any order
    with pytest.raises(CertificateRevokedError):
        validate_certificate(pro.enc, purpose="encryption", trust=two_ops.trust_a(), crls=cache,
                             at=at(6))  # fmt: skip
    # at 3h the newest CRL usable is the one issued at 1h: not revoked then
    result = validate_certificate(
        pro.enc, purpose="encryption", trust=two_ops.trust_a(), crls=cache, at=at(3)
    )
    assert result.certificate == pro.enc
