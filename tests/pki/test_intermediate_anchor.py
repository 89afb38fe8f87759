"""An operator CA trusted directly, without its national root (defect #6 of the 2026-11-29 review).

Operator A's CA is an intermediate under the national root; an installation that trusts only
operator A's CA (``[trust] anchors = ["op-a.pem"]``) must validate A's people with A's CRL alone,
and still refuse what is revoked, stale or out of the CRL's scope.
"""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.cli.ca import group
from caducee.errors import UsageError
from caducee.pki import CrlCache, TrustStore, validate_certificate
from caducee.pki.errors import CertificateRevokedError, RevocationUnavailableError
from caducee.pki.signer import sign_crl
from caducee.pki.trust import is_self_signed

from .conftest import ALICE, PASS, T0, TwoOperators, at, professional


def _op_a_only(two_ops: TwoOperators) -> TrustStore:
    assert not is_self_signed(two_ops.op_a.certificate)  # an intermediate under the root
    return TrustStore([two_ops.op_a.certificate])


def test_operator_ca_as_anchor_validates_with_its_own_crl(two_ops: TwoOperators) -> None:
    for cert, purpose in ((two_ops.alice.enc, "encryption"), (two_ops.alice.sig, "signature")):
        result = validate_certificate(
            cert, purpose=purpose, trust=_op_a_only(two_ops),
            crls=[two_ops.op_a.crl(now=at(1))], at=at(2), email=ALICE.email,
        )  # fmt: skip
        assert result.path == (cert, two_ops.op_a.certificate)
        assert result.describe().endswith("Operator A Health CA (trust anchor)")
    # at a signing time too, with a CRL issued after it
    validate_certificate(
        two_ops.alice.sig, purpose="signature", trust=_op_a_only(two_ops),
        crls=[two_ops.op_a.crl(now=at(3))], at=at(2), at_signing_time=True,
    )  # fmt: skip


def test_operator_ca_given_both_as_anchor_and_intermediate(two_ops: TwoOperators) -> None:
    # the national root also present: both paths are acceptable, the first found wins
    trust = TrustStore([two_ops.op_a.certificate, two_ops.root.certificate])
    result = validate_certificate(
        two_ops.alice.enc, purpose="encryption", trust=trust,
        crls=CrlCache([two_ops.op_a.crl(now=at(1)), two_ops.root.crl(now=at(1))]), at=at(2),
    )  # fmt: skip
    assert result.path[0] == two_ops.alice.enc


def test_revoked_under_an_operator_ca_anchor(two_ops: TwoOperators) -> None:
    lost = professional(two_ops.op_a, ALICE, "ec")
    crl = two_ops.op_a.revoke(lost.enc.serial_number, "keyCompromise", now=at(3))
    with pytest.raises(CertificateRevokedError) as err:
        validate_certificate(
            lost.enc, purpose="encryption", trust=_op_a_only(two_ops), crls=[crl], at=at(4)
        )
    assert err.value.reason == "keyCompromise"
    assert err.value.is_ee


def test_missing_stale_or_future_crl_under_an_operator_ca_anchor(two_ops: TwoOperators) -> None:
    trust = _op_a_only(two_ops)
    with pytest.raises(RevocationUnavailableError, match="no CRL found for Alice Martin"):
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=trust,
            crls=[two_ops.root.crl(now=at(1))], at=at(2),
        )  # fmt: skip
    with pytest.raises(RevocationUnavailableError, match="not current"):
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=trust,
            crls=[two_ops.op_a.crl(now=at(1))], at=at(days=20),
        )  # fmt: skip
    with pytest.raises(RevocationUnavailableError, match="issued after"):
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=trust,
            crls=[two_ops.op_a.crl(now=at(5))], at=at(2),
        )  # fmt: skip


def _scoped_crl(
    two_ops: TwoOperators, idp: x509.IssuingDistributionPoint
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(two_ops.op_a.certificate.subject)
        .last_update(at(1))
        .next_update(at(days=1))
        .add_extension(x509.CRLNumber(999), critical=False)
        .add_extension(idp, critical=True)
    )
    return sign_crl(builder, two_ops.op_a.require_signer())


@pytest.mark.parametrize(
    ("only_users", "only_cas", "url", "why"),
    [
        (False, True, None, "covers only CA certificates"),
        (False, False, "http://elsewhere.test/a.crl", "another distribution point"),
    ],
)
def test_crl_out_of_scope_under_an_operator_ca_anchor(
    two_ops: TwoOperators, only_users: bool, only_cas: bool, url: str | None, why: str
) -> None:
    idp = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)] if url else None,
        relative_name=None, only_contains_user_certs=only_users,
        only_contains_ca_certs=only_cas, only_some_reasons=None, indirect_crl=False,
        only_contains_attribute_certs=False,
    )  # fmt: skip
    with pytest.raises(RevocationUnavailableError, match=why):
        validate_certificate(
            two_ops.alice.enc, purpose="encryption", trust=_op_a_only(two_ops),
            crls=[_scoped_crl(two_ops, idp)], at=at(2),
        )  # fmt: skip


def test_crl_in_scope_under_an_operator_ca_anchor(two_ops: TwoOperators) -> None:
    idp = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(two_ops.op_a.config.crl_url)],
        relative_name=None, only_contains_user_certs=True, only_contains_ca_certs=False,
        only_some_reasons=None, indirect_crl=False, only_contains_attribute_certs=False,
    )  # fmt: skip
    validate_certificate(
        two_ops.alice.enc, purpose="encryption", trust=_op_a_only(two_ops),
        crls=[_scoped_crl(two_ops, idp)], at=at(2),
    )  # fmt: skip


def _pem(path: pathlib.Path, obj: x509.Certificate | x509.CertificateRevocationList) -> str:
    path.write_bytes(obj.public_bytes(Encoding.PEM))
    return str(path)


def test_ca_check_anchor_option_and_advice(two_ops: TwoOperators, tmp_path: pathlib.Path) -> None:
    op_a = _pem(tmp_path / "op-a.pem", two_ops.op_a.certificate)
    alice = _pem(tmp_path / "alice.pem", two_ops.alice.enc)
    crl = _pem(tmp_path / "op-a.crl", two_ops.op_a.crl(now=at(1)))
    common = [alice, "--crl", crl, "--purpose", "encryption", "--at", at(2).isoformat()]
    r = CliRunner().invoke(group, ["check", *common, "--trust", op_a])
    assert isinstance(r.exception, UsageError)
    assert "add_anchor" not in str(r.exception)
    assert "not a root, give it with --anchor FILE instead of --trust" in str(r.exception)
    r = CliRunner().invoke(group, ["check", *common, "--anchor", op_a])
    assert r.exit_code == 0, r.output
    assert "Alice Martin (10003456789) <- Operator A Health CA (trust anchor)" in r.output
    r = CliRunner().invoke(group, ["check", *common])
    assert isinstance(r.exception, UsageError)
    assert "give --trust" in str(r.exception)


def test_trust_store_advice_names_the_configuration(
    two_ops: TwoOperators, tmp_path: pathlib.Path
) -> None:
    op_a = _pem(tmp_path / "op-a.pem", two_ops.op_a.certificate)
    with pytest.raises(UsageError, match=r"not a root, list it under \[trust\] anchors") as err:
        TrustStore.from_files(op_a)
    assert "add_anchor" not in str(err.value)
    assert TrustStore.from_files(anchors=[op_a]).anchors == [two_ops.op_a.certificate]


def test_ca_below_a_non_root_anchor_is_checked_against_the_anchors_crl(
    two_ops: TwoOperators,
) -> None:
    """Root -> regional CA (the anchor, not self-signed) -> operator CA -> person: the operator
    CA's status comes from the regional CA's CRL, the person's from the operator CA's."""
    from caducee.pki import CAConfig, CertificateAuthority
    from caducee.pki.ca import _ca_builder, ca_name, generate_ca_key
    from caducee.pki.signer import sign_certificate

    key = generate_ca_key("p256")
    builder = _ca_builder(
        ca_name("Regional Health CA"), two_ops.root.certificate.subject, key.public_key(), T0,
        3650, path_length=None,
    )  # fmt: skip
    builder = two_ops.root._issuer_extensions(builder)
    regional_cert = sign_certificate(builder, two_ops.root.require_signer())
    assert not is_self_signed(regional_cert)
    regional = CertificateAuthority.adopt(
        two_ops.base / "regional", CAConfig("Regional Health CA", "http://127.0.0.1:9/reg.crl"),
        regional_cert, [two_ops.root.certificate], key=key, passphrase=PASS,
    )  # fmt: skip
    op_r = CertificateAuthority.init_subordinate(
        two_ops.base / "op-r", CAConfig("Operator R CA", "http://127.0.0.1:9/op-r.crl"),
        regional, key=generate_ca_key("p256"), passphrase=PASS, now=T0,
    )  # fmt: skip
    pro = professional(op_r, ALICE, "ec")
    trust = TrustStore([regional_cert], [op_r.certificate])
    crls = [regional.crl(now=at(1)), op_r.crl(now=at(1))]
    result = validate_certificate(pro.enc, purpose="encryption", trust=trust, crls=crls, at=at(2))
    assert result.path == (pro.enc, op_r.certificate, regional_cert)
    with pytest.raises(RevocationUnavailableError, match="no CRL found for Operator R CA"):
        validate_certificate(pro.enc, purpose="encryption", trust=trust, crls=crls[1:], at=at(2))
    revoked = regional.revoke(op_r.certificate.serial_number, "cessationOfOperation", now=at(3))
    with pytest.raises(CertificateRevokedError) as err:
        validate_certificate(
            pro.enc, purpose="encryption", trust=trust, crls=[revoked, op_r.crl(now=at(3))],
            at=at(4),
        )  # fmt: skip
    assert not err.value.is_ee
    assert err.value.reason == "cessationOfOperation"
