"""The CA's own controls found missing by the operator acceptance review (defects 1, 2, 5-8, 10).

Each test builds a fresh national root and operator CA (P-256 keys, real clock) in tmp_path.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sqlite3

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caducee.errors import ConfigError, UsageError
from caducee.pki import CAConfig, CertificateAuthority, ProfessionalIdentity
from caducee.pki.ca import generate_ca_key
from caducee.pki.errors import IssuanceRefusedError
from caducee.pki.profiles import ValidityPolicy
from caducee.pki.store import CAStore
from caducee.serials import format_serial

from .conftest import run

PASS = b"acceptance passphrase"

ALICE = ProfessionalIdentity(
    "Alice", "Martin", "alice.martin@op1.test", "10003456789", "Médecin", "Cabinet", "FR"
)
PAUL = ProfessionalIdentity("Paul", "Other", "alice.martin@op1.test", "10000000099")


def _config(slug: str, name: str) -> CAConfig:
    return CAConfig(name=name, crl_url=f"http://127.0.0.1:9/{slug}.crl")


@dataclasses.dataclass
class Pair:
    base: pathlib.Path
    root: CertificateAuthority
    op: CertificateAuthority


@pytest.fixture
def pair(tmp_path: pathlib.Path) -> Pair:
    root = CertificateAuthority.init_root(
        tmp_path / "root", _config("root", "Racine Santé"), organisation="Santé", country="FR",
        key=generate_ca_key("p256"), passphrase=PASS,
    )  # fmt: skip
    op = CertificateAuthority.init_subordinate(
        tmp_path / "op1", _config("op1", "Opérateur 1 CA"), root, organisation="Opérateur 1",
        key=generate_ca_key("p256"), passphrase=PASS,
    )  # fmt: skip
    root.crl()
    op.crl()
    return Pair(tmp_path, root, op)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _csr(key: ec.EllipticCurvePrivateKey, subject: x509.Name, *, ca: bool = False) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    from cryptography.hazmat.primitives.serialization import Encoding

    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


# -- defect 1: one key, one identity, one purpose ------------------------------------------------


def test_key_certified_once_except_renewal(pair: Pair) -> None:
    key = _key().public_key()
    first = pair.op.issue(key, ALICE, "signature")
    other = dataclasses.replace(ALICE, email="mallory@op1.test")
    with pytest.raises(IssuanceRefusedError, match=r"already certified .* alice\.martin@op1"):
        pair.op.issue(key, other, "signature")
    with pytest.raises(IssuanceRefusedError, match="signature, certificate"):
        pair.op.issue(key, ALICE, "encryption")
    with pytest.raises(IssuanceRefusedError, match="already certified"):
        pair.op.issue(key, dataclasses.replace(ALICE, professional_id="10000000011"), "signature")
    renewed = pair.op.issue(key, ALICE, "signature")  # renewal: same key, identity, purpose
    assert renewed.serial_number != first.serial_number
    assert len(pair.op.records()) == 2


def test_compromised_key_is_not_renewed(pair: Pair) -> None:
    key = _key().public_key()
    cert = pair.op.issue(key, ALICE, "encryption")
    pair.op.revoke(cert.serial_number, "keyCompromise")
    with pytest.raises(IssuanceRefusedError, match="revoked as compromised"):
        pair.op.issue(key, ALICE, "encryption")


def test_ca_key_is_never_certified_for_a_person(pair: Pair) -> None:
    with pytest.raises(IssuanceRefusedError, match="CA's own key"):
        pair.op.issue(pair.op.certificate.public_key(), ALICE, "signature")
    with pytest.raises(IssuanceRefusedError, match="CA's own key"):
        pair.op.issue(pair.root.certificate.public_key(), ALICE, "signature")


def test_index_made_before_the_key_table_is_upgraded(pair: Pair) -> None:
    key = _key().public_key()
    pair.op.issue(key, ALICE, "signature")
    db = sqlite3.connect(pair.base / "op1" / "index.sqlite")
    with db:
        db.execute("DROP TABLE keys")
    db.close()
    with pytest.raises(IssuanceRefusedError, match="already certified"):
        pair.op.issue(key, ALICE, "encryption")


# -- defect 2: an address belongs to one professional identifier -------------------------------


def test_address_of_another_identifier_needs_reassign(pair: Pair) -> None:
    alice = pair.op.issue(_key().public_key(), ALICE, "signature")
    with pytest.raises(IssuanceRefusedError, match=r"belongs to professional 10003456789"):
        pair.op.issue(_key().public_key(), PAUL, "signature")
    paul = pair.op.issue(_key().public_key(), PAUL, "encryption", reassign_address=True)
    pair.op.revoke(paul.serial_number)
    # a certificate on hold still holds its address
    other = dataclasses.replace(PAUL, professional_id="10000000022")
    pair.op.revoke(alice.serial_number, "certificateHold")
    with pytest.raises(IssuanceRefusedError, match="belongs to professional 10003456789"):
        pair.op.issue(_key().public_key(), other, "signature")


def test_address_free_after_revocation(pair: Pair) -> None:
    alice = pair.op.issue(_key().public_key(), ALICE, "signature")
    pair.op.revoke(alice.serial_number, "affiliationChanged")
    pair.op.issue(_key().public_key(), PAUL, "signature")
    # the same professional may of course hold both certificates for her address
    pair.op.issue(_key().public_key(), ALICE, "encryption", reassign_address=True)


# -- defect 5: operator CA controls ----------------------------------------------------------------


def test_sub_ca_under_path_length_zero_refused_naming_the_path_length(pair: Pair) -> None:
    with pytest.raises(IssuanceRefusedError, match="path length constraint 0"):
        # the default validity would also outlive the operator CA: the path length is said first
        CertificateAuthority.init_subordinate(
            pair.base / "op11", _config("op11", "Op 11"), pair.op,
            key=generate_ca_key("p256"), passphrase=PASS,
        )  # fmt: skip
    assert not (pair.base / "op11").exists()
    assert [r.purpose for r in pair.op.records()] == []


def test_same_key_or_same_name_not_certified_twice(pair: Pair) -> None:
    key = _key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Opérateur 2"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Opérateur 2 CA"),
    ])  # fmt: skip
    pair.root.certify_ca_request(_csr(key, name), days=365)
    with pytest.raises(IssuanceRefusedError, match="already certified"):
        pair.root.certify_ca_request(_csr(key, name), days=365)
    with pytest.raises(IssuanceRefusedError, match=r"a CA named .* is already certified"):
        pair.root.certify_ca_request(_csr(_key(), name), days=365)
    pair.root.certify_ca_request(_csr(_key(), name), days=365, rollover=True)
    # the name of an existing sibling through init_subordinate too
    with pytest.raises(IssuanceRefusedError, match="already certified"):
        CertificateAuthority.init_subordinate(
            pair.base / "op1bis", _config("op1bis", "Opérateur 1 CA"), pair.root,
            organisation="Opérateur 1", key=generate_ca_key("p256"), passphrase=PASS,
        )  # fmt: skip
    with pytest.raises(IssuanceRefusedError, match="itself"):
        pair.root.certify_ca(_key().public_key(), pair.root.certificate.subject)


def test_professional_request_is_not_made_a_ca(pair: Pair) -> None:
    key = _key()
    person = x509.Name([
        x509.NameAttribute(NameOID.GIVEN_NAME, "Alice"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Alice Martin"),
    ])  # fmt: skip
    with pytest.raises(IssuanceRefusedError, match="professional's request"):
        pair.root.certify_ca_request(_csr(key, person), days=365)
    bare = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    with pytest.raises(IssuanceRefusedError, match="does not look like a CA"):
        pair.root.certify_ca_request(_csr(key, bare), days=365)
    # a cA=true request with only a CN ('caducee ca request' without --org) is a CA's
    pair.root.certify_ca_request(_csr(_key(), bare, ca=True), days=365)
    # and the administrator may decide otherwise explicitly
    cert = pair.root.certify_ca_request(_csr(key, person), days=365, any_subject=True)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_control_character_in_a_requested_ca_name(pair: Pair) -> None:
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Op\nX"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Op CA"),
    ])  # fmt: skip
    with pytest.raises(UsageError, match=r"organizationName .* control"):
        pair.root.certify_ca_request(_csr(_key(), name), days=365)


# -- defect 6/7/8: inputs checked before anything is created ----------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "N" * 65}, "CA name is 65 characters long; X.509 allows at most 64"),
        ({"name": ""}, "CA name is empty"),
        ({"name": "A\nB"}, r"CA name contains a control .* \(U\+000A\)"),
        ({"crl_url": "not a url"}, "CRL URL 'not a url' contains spaces"),
        ({"crl_url": "ftp://x/c.crl"}, "is not an http:// or https:// URL"),
        ({"ocsp_url": "http://"}, "is not an http:// or https:// URL with a host"),
        ({"validity": "crl"}, r"CRL lifetime \(--crl-days\) must be a positive number"),
    ],
)
def test_ca_configuration_checked(change: dict[str, str], message: str) -> None:
    fields = {"name": "X", "crl_url": "http://x/c.crl", **change}
    with pytest.raises(UsageError, match=message):
        CAConfig(
            name=fields["name"],
            crl_url=fields["crl_url"],
            ocsp_url=fields.get("ocsp_url"),
            validity=ValidityPolicy(crl_days=-3) if "validity" in fields else ValidityPolicy(),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"organisation": "O" * 65}, "CA organisation is 65 characters long"),
        ({"country": "FRA"}, "country 'FRA' must be a two-letter"),
        ({"days": 0}, r"CA validity \(--days\) must be a positive number of days, got 0"),
    ],
)
def test_root_refused_leaves_nothing(
    tmp_path: pathlib.Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        CertificateAuthority.init_root(
            tmp_path / "ca", _config("ca", "X"), key=generate_ca_key("p256"), passphrase=PASS,
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
    assert not (tmp_path / "ca").exists()


def test_invalid_ca_json_is_a_configuration_error(pair: Pair) -> None:
    path = pair.base / "op1" / "ca.json"
    path.write_text(path.read_text().replace('"crl_days": 7', '"crl_days": -3'))
    with pytest.raises(ConfigError, match=r"ca.json: invalid CA configuration .*--crl-days"):
        CertificateAuthority.open(pair.base / "op1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"given_name": "G" * 100}, "given name is 100 characters long; X.509 allows at most 64"),
        ({"surname": "S" * 60}, r"common name .* is 66 characters long; X.509 allows at most 64"),
        ({"given_name": "W\nX"}, r"given name contains a control .* \(U\+000A\)"),
        ({"surname": "Mar\u202etin"}, r"surname contains a control or invisible .*U\+202E"),
        ({"profession": "P" * 65}, "profession is 65 characters long"),
        ({"organisation": "O\tX"}, "organisation contains a control"),
        ({"email": "a\n@b.test"}, "contains spaces or controls"),
        ({"email": "a@b@c.test"}, "is not an ASCII e-mail address"),
        ({"country": "FRA"}, "country 'FRA' must be a two-letter"),
        ({"country": "É1"}, "must be a two-letter"),
    ],
)
def test_identity_fields_checked(change: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        dataclasses.replace(ALICE, **change)


def test_days_checked_before_issuing(pair: Pair) -> None:
    with pytest.raises(UsageError, match=r"--days\) must be a positive number of days, got -1"):
        pair.op.issue(_key().public_key(), ALICE, "signature", days=-1)
    assert pair.op.records() == []


# -- defect 10 (CA items) ------------------------------------------------------------


def test_ca_revoked_by_its_parent_stops_issuing(pair: Pair) -> None:
    pair.op.issue(_key().public_key(), ALICE, "signature")
    pair.root.revoke(pair.op.certificate.serial_number, "cessationOfOperation")
    reopened = CertificateAuthority.open(pair.base / "op1", passphrase=PASS)
    with pytest.raises(IssuanceRefusedError, match=r"revoked by its parent on .* no longer issue"):
        reopened.issue(_key().public_key(), PAUL, "signature", reassign_address=True)
    reopened.crl()  # it may still publish its CRL


def test_missing_and_pending_ca_messages(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="no such CA directory"):
        CertificateAuthority.open(tmp_path / "nodir", passphrase=PASS)
    CertificateAuthority.request(
        tmp_path / "pending", _config("p", "Pending CA"), key=generate_ca_key("p256"),
        passphrase=PASS,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"waiting for its certificate.*caducee ca adopt"):
        CertificateAuthority.open(tmp_path / "pending", passphrase=PASS)


def test_serials_printed_as_openssl_does(pair: Pair, tmp_path: pathlib.Path) -> None:
    assert format_serial(0x66A) == "066A"
    assert format_serial(0xAB) == "AB"
    cert = pair.op.issue(_key().public_key(), ALICE, "signature")
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp_path / "c.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    shown = run(["openssl", "x509", "-in", str(tmp_path / "c.pem"), "-noout", "-serial"])
    assert shown.decode().strip() == f"serial={pair.op.records()[0].serial_hex}"


def test_sub_ca_chain_still_verifies_with_openssl(pair: Pair, tmp_path: pathlib.Path) -> None:
    """The controls do not change what a legitimate issuance produces."""
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = pair.op.issue(_key().public_key(), ALICE, "signature")
    (tmp_path / "root.pem").write_bytes(pair.root.certificate.public_bytes(Encoding.PEM))
    (tmp_path / "op.pem").write_bytes(pair.op.certificate.public_bytes(Encoding.PEM))
    (tmp_path / "ee.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    out = run([
        "openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
        str(tmp_path / "op.pem"), "-purpose", "smimesign", str(tmp_path / "ee.pem"),
    ])  # fmt: skip
    assert b": OK" in out
    assert CAStore(pair.base / "op1").config().parent_dir == str((pair.base / "root").resolve())
