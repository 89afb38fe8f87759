"""The CA with its key on a PKCS#11 token (SoftHSM2), and cards issued by a real operator CA."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from caducee.errors import KeyStoreError
from caducee.pki import (
    CAConfig,
    CertificateAuthority,
    SigningKeyCASigner,
    TrustStore,
    validate_certificate,
)
from caducee.pki.ca import ca_name

from .conftest import ALICE, T0, TwoOperators, at

pytestmark = pytest.mark.softhsm

SOFTHSM2 = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN, USER_PIN = "87654321", "4321"


@pytest.fixture
def hsm(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    if not os.path.exists(SOFTHSM2):
        pytest.skip(f"SoftHSM2 is not installed ({SOFTHSM2} missing)")
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.delenv("CADUCEE_PIN", raising=False)
    yield conf
    import PyKCS11

    assert SOFTHSM2 not in PyKCS11.PyKCS11Lib._loaded_libs, "a SoftHSM2 module was left loaded"


def test_card_issued_by_the_operator_ca(two_ops: TwoOperators, hsm: pathlib.Path) -> None:
    from caducee.card import issue_card
    from caducee.keys.pkcs11 import Pkcs11Module

    with Pkcs11Module(SOFTHSM2) as module:
        issued = issue_card(
            module, label="alice", so_pin=SO_PIN, user_pin=USER_PIN,
            issuer=two_ops.op_a.issuer_for(ALICE, now=T0), kind="p256",
        )  # fmt: skip
    crls = two_ops.crls(at(1))
    for cert, purpose in (
        (issued.signature_certificate, "signature"),
        (issued.encryption_certificate, "encryption"),
    ):
        result = validate_certificate(
            cert, purpose=purpose, trust=two_ops.trust_b(), crls=crls, at=at(2), email=ALICE.email
        )
        assert result.trust_anchor == two_ops.root.certificate
    serials = {r.serial for r in two_ops.op_a.records()}
    assert issued.signature_certificate.serial_number in serials


def test_operator_ca_key_on_a_token(
    two_ops: TwoOperators, hsm: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from caducee.card.objects import generate_on_card, write_certificate
    from caducee.keys.pkcs11 import CardSession, Pkcs11Module

    with Pkcs11Module(SOFTHSM2) as module:
        module.init_token(module.free_slot(), SO_PIN, "op-t-ca")
        token = module.find_token(label="op-t-ca")
        with CardSession(module, token, SO_PIN, rw=True, so=True) as so:
            so.raw_session().initPin(USER_PIN)
        with CardSession(module, token, USER_PIN, rw=True) as card:
            _, public = generate_on_card(card, "p256", "ca")
            assert isinstance(public, ec.EllipticCurvePublicKey)
            ca_cert = two_ops.root.certify_ca(public, ca_name("Operator T CA"), now=T0)
            write_certificate(card, ca_cert, "ca")
            config = CAConfig("Operator T CA", "http://127.0.0.1:9/op-t.crl", key_on_token=True)
            CertificateAuthority.adopt(
                tmp_path / "op-t", config, ca_cert, [two_ops.root.certificate]
            )
            (token_key,) = card.keys()
            ca = CertificateAuthority.open(tmp_path / "op-t", signer=SigningKeyCASigner(token_key))
            ops_before = card.operations
            pro_key = ec.generate_private_key(ec.SECP384R1())
            cert = ca.issue(pro_key.public_key(), ALICE, "signature", now=T0)
            crl = ca.crl(now=at(1))
            assert card.operations == ops_before + 2  # one card signature per object
    assert crl.is_signature_valid(public)
    result = validate_certificate(
        cert, purpose="signature", trust=TrustStore([two_ops.root.certificate], [ca_cert]),
        crls=[crl, two_ops.root.crl(now=at(1))], at=at(2), email=ALICE.email,
    )  # fmt: skip
    assert [c.subject for c in result.path][1] == ca_cert.subject
    # without the token, the directory alone cannot sign
    reader = CertificateAuthority.open(tmp_path / "op-t")
    with pytest.raises(KeyStoreError, match="not loaded"):
        reader.crl(now=at(2))
    # the CLI signs a CRL with the token key (PIN from CADUCEE_PIN), passing no passphrase
    from click.testing import CliRunner

    from caducee.cli.ca import group

    uri = f"pkcs11:token=op-t-ca;object=ca?module-path={SOFTHSM2}"
    out = tmp_path / "op-t.crl"
    r = CliRunner().invoke(
        group, ["crl", "--ca", str(tmp_path / "op-t"), "--key-uri", uri, "--out", str(out)],
        env={"CADUCEE_PIN": USER_PIN, "CADUCEE_CA_PASS": None},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from cryptography import x509

    assert x509.load_der_x509_crl(out.read_bytes()).is_signature_valid(public)
    r = CliRunner().invoke(
        group, ["crl", "--ca", str(tmp_path / "op-t"), "--key-uri", uri],
        env={"CADUCEE_PIN": "0000", "CADUCEE_CA_PASS": None},
    )  # fmt: skip
    assert r.exit_code != 0
    assert "PIN" in str(r.exception)
