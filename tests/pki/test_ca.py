"""The CA: profiles, CSR checks, key policy, on-disk state, external signer, OpenSSL agreement."""

from __future__ import annotations

import calendar
import pathlib
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from caducee.errors import KeyStoreError, UsageError
from caducee.keys.software import SoftwareKey
from caducee.pki import (
    CertificateAuthority,
    ProfessionalIdentity,
    SigningKeyCASigner,
    TrustStore,
    validate_certificate,
)
from caducee.pki.ca import load_csr
from caducee.pki.errors import CSRError, KeyPolicyError
from caducee.pki.store import KEY

from .conftest import ALICE, PASS, T0, TwoOperators, at, professional, run


def _csr(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "card")]))
        .sign(key, hashes.SHA256())
    )


def test_signature_profile(two_ops: TwoOperators) -> None:
    cert = two_ops.alice.sig
    ext = cert.extensions
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    assert not ku.value.key_encipherment and not ku.value.key_agreement
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION
    ]
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.RFC822Name
    ) == [ALICE.email]
    dps = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dps[0].full_name == [x509.UniformResourceIdentifier(two_ops.op_a.config.crl_url)]
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "10003456789"
    assert subject.get_attributes_for_oid(NameOID.TITLE)[0].value == "Médecin généraliste"
    assert subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Alice"
    assert subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Martin"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Alice Martin"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Cabinet des Tilleuls"
    )
    assert ProfessionalIdentity.from_certificate(cert) == ALICE
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 3 * 365


def test_encryption_profile_per_key_type(two_ops: TwoOperators) -> None:
    rsa_ku = two_ops.alice.enc.extensions.get_extension_for_class(x509.KeyUsage).value
    ec_ku = two_ops.bob.enc.extensions.get_extension_for_class(x509.KeyUsage).value
    assert rsa_ku.key_encipherment and not rsa_ku.key_agreement
    assert ec_ku.key_agreement and not ec_ku.key_encipherment
    assert not rsa_ku.digital_signature and not ec_ku.digital_signature


def test_issue_from_csr_pem_and_der(two_ops: TwoOperators) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    csr = _csr(key)
    for data in (csr.public_bytes(Encoding.PEM), csr.public_bytes(Encoding.DER)):
        cert = two_ops.op_a.issue_from_csr(data, ALICE, "signature", now=T0)
        assert cert.public_key() == key.public_key()
        assert cert.subject == ALICE.to_name()  # the CA's identity, not the CSR's "CN=card"


def test_csr_with_bad_signature_is_refused() -> None:
    der = bytearray(_csr(ec.generate_private_key(ec.SECP256R1())).public_bytes(Encoding.DER))
    der[-3] ^= 0x01
    with pytest.raises(CSRError, match="signature does not verify"):
        load_csr(bytes(der), "card.csr")
    with pytest.raises(CSRError, match=r"card\.csr: not a PEM or DER"):
        load_csr(b"garbage", "card.csr")


@pytest.mark.parametrize("key", [
    rsa.generate_private_key(public_exponent=65537, key_size=1024),
    ec.generate_private_key(ec.SECP521R1()),
    ec.generate_private_key(ec.SECP256K1()),
], ids=["rsa1024", "p521", "secp256k1"])  # fmt: skip
def test_key_policy(two_ops: TwoOperators, key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(KeyPolicyError):
        two_ops.op_a.issue_from_csr(_csr(key), ALICE, "encryption", now=T0)


@pytest.mark.parametrize(("field", "value"), [
    ("professional_id", "1234"), ("professional_id", "1000345678X"), ("email", "alice"),
    ("given_name", " "), ("country", "FRA"),
])  # fmt: skip
def test_identity_is_checked(field: str, value: str) -> None:
    import dataclasses

    with pytest.raises(UsageError):
        dataclasses.replace(ALICE, **{field: value})


def test_unknown_serial_and_reason(two_ops: TwoOperators) -> None:
    with pytest.raises(UsageError, match="no certificate with this serial"):
        two_ops.op_a.revoke(0xDEADBEEF, "superseded", now=at(1))
    with pytest.raises(UsageError, match="unknown revocation reason"):
        two_ops.op_a.revoke(two_ops.alice.sig.serial_number, "lost", now=at(1))


def test_key_file_is_encrypted_and_private(two_ops: TwoOperators) -> None:
    path = two_ops.op_a.store.path / KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        CertificateAuthority.open(two_ops.op_a.store.path, passphrase=b"wrong")
    reader = CertificateAuthority.open(two_ops.op_a.store.path)  # no key: read-only
    assert any(r.serial == two_ops.alice.sig.serial_number for r in reader.records())
    with pytest.raises(KeyStoreError, match="passphrase needed"):
        reader.crl(now=at(1))


def test_index_records_revocations(two_ops: TwoOperators) -> None:
    pro = professional(two_ops.op_a, ALICE, "ec")
    two_ops.op_a.revoke(pro.enc.serial_number, "certificateHold", now=at(1))
    two_ops.op_a.revoke(pro.enc.serial_number, "keyCompromise", now=at(2))  # hold -> revoked
    with pytest.raises(UsageError, match="already revoked"):
        two_ops.op_a.revoke(pro.enc.serial_number, "superseded", now=at(3))
    record = two_ops.op_a.store.get(pro.enc.serial_number)
    assert (record.status, record.reason, record.revocation_time) == (
        "revoked", "keyCompromise", at(2),
    )  # fmt: skip
    crl = two_ops.op_a.crl(now=at(4))
    entry = crl.get_revoked_certificate_by_serial_number(pro.enc.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )


def test_external_signer_path(two_ops: TwoOperators, tmp_path: pathlib.Path) -> None:
    """A CA whose key is reached only through the keys-layer sign_digest (as a PKCS#11 key)."""
    key = two_ops.op_b.store.load_key(PASS)
    signer = SigningKeyCASigner(SoftwareKey(key, two_ops.op_b.certificate))
    ca = CertificateAuthority.open(two_ops.op_b.store.path, signer=signer)
    pro = professional(ca, ALICE, "ec")
    crl = ca.crl(now=at(1))
    assert crl.is_signature_valid(two_ops.op_b.certificate.public_key())  # type: ignore[arg-type]
    pro.enc.verify_directly_issued_by(two_ops.op_b.certificate)
    validate_certificate(
        pro.enc, purpose="encryption", trust=TrustStore([two_ops.op_b.certificate]),
        crls=[crl], at=at(2),
    )  # fmt: skip
    # EC external signer too: a subordinate of the national root
    ec_key = two_ops.op_a.store.load_key(PASS)
    ec_ca = CertificateAuthority.open(
        two_ops.op_a.store.path,
        signer=SigningKeyCASigner(SoftwareKey(ec_key, two_ops.op_a.certificate)),
    )
    professional(ec_ca, ALICE, "ec").sig.verify_directly_issued_by(two_ops.op_a.certificate)


def test_signer_must_match_the_ca(two_ops: TwoOperators) -> None:
    key = two_ops.op_b.store.load_key(PASS)
    with pytest.raises(KeyStoreError, match="does not match"):
        CertificateAuthority.open(
            two_ops.op_a.store.path,
            signer=SigningKeyCASigner(SoftwareKey(key, two_ops.op_b.certificate)),
        )


# -- OpenSSL, an independent implementation, agrees ------------------------------------------------


def _pem(*objs: object) -> bytes:
    return b"".join(o.public_bytes(Encoding.PEM) for o in objs)  # type: ignore[attr-defined]


@pytest.mark.interop
def test_openssl_verify_agrees(two_ops: TwoOperators, openssl: str, files) -> None:  # type: ignore[no-untyped-def]
    when = at(1)
    crls = two_ops.crls(when)
    bundle = files(
        "bundle.pem",
        _pem(two_ops.root.certificate, two_ops.op_a.certificate, two_ops.op_b.certificate, *crls),
    )
    attime = str(calendar.timegm(at(2).timetuple()))
    base = [openssl, "verify", "-crl_check_all", "-CAfile", bundle, "-attime", attime]
    # OpenSSL's smimeencrypt purpose demands keyEncipherment even for EC keys, so Bob's EC
    # encryption certificate (keyAgreement, RFC 5753) is checked with the default purpose.
    for cert, purpose in [
        (two_ops.alice.sig, ["-purpose", "smimesign"]),
        (two_ops.alice.enc, ["-purpose", "smimeencrypt"]),
        (two_ops.bob.sig, ["-purpose", "smimesign"]),
        (two_ops.bob.enc, []),
    ]:
        out = run([*base, *purpose, files("leaf.pem", _pem(cert))])
        assert out.strip().endswith(b": OK")
    # a revoked certificate is refused by OpenSSL as well
    pro = professional(two_ops.op_a, ALICE, "rsa")
    crl = two_ops.op_a.revoke(pro.enc.serial_number, "keyCompromise", now=at(1))
    bundle2 = files(
        "bundle2.pem", _pem(two_ops.root.certificate, two_ops.op_a.certificate, crls[0], crl)
    )
    out = run(
        [openssl, "verify", "-crl_check_all", "-CAfile", bundle2, "-attime", attime,
         files("revoked.pem", _pem(pro.enc))],
        check=False,
    )  # fmt: skip
    assert b"certificate revoked" in out


@pytest.mark.interop
def test_trust_bundle_formats(two_ops: TwoOperators, openssl: str, files) -> None:  # type: ignore[no-untyped-def]
    pem = files("chain.pem", _pem(two_ops.op_a.certificate, two_ops.root.certificate))
    p7b = files(
        "chain.p7b", run([openssl, "crl2pkcs7", "-nocrl", "-certfile", pem, "-outform", "DER"])
    )
    p7pem = files("chain.p7.pem", run([openssl, "crl2pkcs7", "-nocrl", "-certfile", pem]))
    der = files("opb.cer", two_ops.op_b.certificate.public_bytes(Encoding.DER))
    for bundle in (pem, p7b, p7pem):
        store = TrustStore.from_files(bundle, der)
        assert set(store.anchors) == {two_ops.root.certificate, two_ops.op_b.certificate}
        assert store.intermediates == [two_ops.op_a.certificate]
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=store, crls=two_ops.crls(at(1)),
            at=at(2),
        )  # fmt: skip
    with pytest.raises(UsageError, match="no self-signed root"):
        TrustStore.from_files(files("only-op-a.pem", _pem(two_ops.op_a.certificate)))
    with pytest.raises(UsageError, match="no readable certificate"):
        TrustStore.from_files(files("junk.pem", b"not a certificate"))


def test_listeners_hear_issuance_and_revocation(two_ops: TwoOperators) -> None:
    """What the directory hooks into: publish on issuance, withdraw on revocation."""

    class Published:
        def __init__(self) -> None:
            self.certs: dict[int, tuple[str, str]] = {}

        def issued(
            self, cert: x509.Certificate, identity: ProfessionalIdentity, purpose: str
        ) -> None:
            self.certs[cert.serial_number] = (identity.email, purpose)

        def revoked(self, cert: x509.Certificate, reason: str) -> None:
            del self.certs[cert.serial_number]

    directory = Published()
    two_ops.op_b.listeners.append(directory)
    try:
        pro = professional(two_ops.op_b, ALICE, "ec")
        assert directory.certs == {
            pro.sig.serial_number: (ALICE.email, "signature"),
            pro.enc.serial_number: (ALICE.email, "encryption"),
        }
        two_ops.op_b.revoke(pro.sig.serial_number, "superseded", now=at(1))
        assert list(directory.certs) == [pro.enc.serial_number]
    finally:
        two_ops.op_b.listeners.remove(directory)


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.interop
def test_openssl_cms_uses_our_certificates(two_ops: TwoOperators, openssl: str, files) -> None:  # type: ignore[no-untyped-def]
    """Alice (operator A, RSA) signs for Bob (operator B, EC) and encrypts to him, with OpenSSL."""
    crls = two_ops.crls(at(1))
    attime = str(calendar.timegm(at(2).timetuple()))
    msg = files("msg.txt", b"Compte rendu de consultation\r\n")
    signed = run([
        openssl, "cms", "-sign", "-in", msg, "-signer", files("a.pem", _pem(two_ops.alice.sig)),
        "-inkey", files("a.key", _key_pem(two_ops.alice.sig_key)),
        "-certfile", files("opa.pem", _pem(two_ops.op_a.certificate)), "-outform", "DER",
        "-nodetach",
    ])  # fmt: skip
    bundle = files("b.pem", _pem(two_ops.root.certificate, two_ops.op_b.certificate, *crls))
    out = run([
        openssl, "cms", "-verify", "-inform", "DER", "-in", files("s.der", signed),
        "-CAfile", bundle, "-crl_check_all", "-purpose", "smimesign", "-attime", attime,
    ])  # fmt: skip
    assert b"Verification successful" in out
    enc = run([
        openssl, "cms", "-encrypt", "-in", msg, "-aes-256-gcm", "-outform", "DER",
        files("bob.pem", _pem(two_ops.bob.enc)),
    ])  # fmt: skip
    clear = run([
        openssl, "cms", "-decrypt", "-inform", "DER", "-in", files("e.der", enc),
        "-recip", files("bob.pem", _pem(two_ops.bob.enc)),
        "-inkey", files("b.key", _key_pem(two_ops.bob.enc_key)),
    ])  # fmt: skip
    assert clear.startswith(b"Compte rendu de consultation")
