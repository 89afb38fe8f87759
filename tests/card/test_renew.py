"""``caducee card renew``: new keys and certificates from the operator's CA, old mail readable.

Cards are issued on SoftHSM2 by a real :mod:`caducee.pki` CA, a year and a half in the past
(so the renewed certificates are clearly the newer ones), then renewed through the CLI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import subprocess

import PyKCS11
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.card import issue_card
from caducee.card.renew import RenewalRefusedError, old_label, renewal_notice
from caducee.cli.card import group
from caducee.errors import UsageError
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, CardSession, Pkcs11Module
from caducee.pki import CAConfig, CertificateAuthority, ProfessionalIdentity
from caducee.pki.ca import generate_ca_key
from caducee.pki.errors import IssuanceRefusedError

pytestmark = pytest.mark.softhsm

LABEL = "dr-martin"
PIN = "2468"
CA_PASS = "ca-pass"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ISSUED_AT = NOW - dt.timedelta(days=540)
MARTIN = ProfessionalIdentity(
    "Alice", "Martin", "martin@op1.test", "10003456789", "General practitioner", "Cabinet Martin"
)
ENV = {"CADUCEE_PIN": PIN, "CADUCEE_CA_PASS": CA_PASS}
MSG = b"Content-Type: text/plain\r\n\r\nPotassium 4.1 mmol/L\r\n"


@dataclasses.dataclass(frozen=True)
class Issued:
    ca_dir: pathlib.Path
    ca: CertificateAuthority
    signature: x509.Certificate
    encryption: x509.Certificate

    def uri(self) -> str:
        return f"pkcs11:token={LABEL}?module-path={SOFTHSM2_MODULE}"


def _issue(tmp_path: pathlib.Path, kind: str = "rsa2048", days: int | None = None) -> Issued:
    ca_dir = tmp_path / "op1-ca"
    ca = CertificateAuthority.init_root(
        ca_dir, CAConfig("Operator 1 Health CA", "http://127.0.0.1:9/op1.crl"),
        key=generate_ca_key("p256"), passphrase=CA_PASS.encode(),
        now=NOW - dt.timedelta(days=1000),
    )  # fmt: skip
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        issued = issue_card(
            module, label=LABEL, so_pin="12345678", user_pin=PIN, kind=kind,  # type: ignore[arg-type]
            issuer=ca.issuer_for(MARTIN, now=ISSUED_AT, days=days),
        )  # fmt: skip
    return Issued(ca_dir, ca, issued.signature_certificate, issued.encryption_certificate)


@pytest.fixture
def card(blank_hsm, tmp_path: pathlib.Path) -> Issued:  # type: ignore[no-untyped-def]
    return _issue(tmp_path)


def _renew(*args: str, env: dict[str, str] | None = None) -> Result:
    argv = ["renew", "--module", SOFTHSM2_MODULE, *args]
    return CliRunner().invoke(group, argv, env=ENV if env is None else env)


def _objects() -> set[tuple[int, str, bytes]]:
    """(class, label, CKA_ID) of every object on the card (PIN given: private ones too)."""
    with (
        Pkcs11Module(SOFTHSM2_MODULE) as module,
        CardSession(module, module.find_token(label=LABEL), PIN) as session,
    ):
        out = set()
        for handle in session.find([]):
            cls, label, cid = session.attributes(
                handle, [PyKCS11.CKA_CLASS, PyKCS11.CKA_LABEL, PyKCS11.CKA_ID]
            )
            out.add((int.from_bytes(bytes(cls), "little"), bytes(label).decode(), bytes(cid)))
        return out


def _card_certificates() -> list[tuple[str, x509.Certificate]]:
    with (
        Pkcs11Module(SOFTHSM2_MODULE) as module,
        CardSession(module, module.find_token(label=LABEL), None) as session,
    ):
        return [(c.label, c.certificate) for c in session.certificates()]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def _openssl(*args: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout


def _encrypt_to(cert: x509.Certificate, tmp_path: pathlib.Path, name: str) -> bytes:
    recipient = tmp_path / f"{name}.pem"
    recipient.write_bytes(_pem(cert))
    return _openssl("cms", "-encrypt", "-aes-256-cbc", "-recip", str(recipient),
                    "-keyopt", "rsa_padding_mode:oaep", data=MSG)  # fmt: skip


def _decrypt_with_card(wire: bytes, uri: str) -> Result:
    from caducee.cli.main import cli

    return CliRunner().invoke(cli, ["smime", "decrypt", "--inkey", uri], input=wire, env=ENV)


def test_renew_both_keeps_old_mail_readable_and_signs_with_the_new_key(  # type: ignore[no-untyped-def]
    card, tmp_path: pathlib.Path, openssl
) -> None:
    from caducee.directory.federation import open_directory

    old_mail = _encrypt_to(card.encryption, tmp_path, "old-enc")
    out = tmp_path / "renewed"
    out.mkdir()
    directory = f"sqlite://{tmp_path / 'annuaire.sqlite'}"
    result = _renew("--ca", str(card.ca_dir), "--cert-out", str(out), "--publish", directory)
    assert result.exit_code == 0, result.output
    assert "renewed for Alice Martin <martin@op1.test>" in result.output
    assert "earlier signature key and certificate" in result.output
    assert "so older mail stays readable" in result.output

    new_sig = x509.load_pem_x509_certificate((out / "signature.pem").read_bytes())
    new_enc = x509.load_pem_x509_certificate((out / "encryption.pem").read_bytes())
    # same identity, new keys
    for old, new in ((card.signature, new_sig), (card.encryption, new_enc)):
        assert new.subject == old.subject
        assert new.public_key() != old.public_key()
        assert new.not_valid_before_utc > old.not_valid_before_utc
    on_card = _card_certificates()
    labels = {cert.serial_number: label for label, cert in on_card}
    assert labels == {
        new_sig.serial_number: "signature",
        new_enc.serial_number: "encryption",
        card.encryption.serial_number: old_label(
            "encryption",
            card.encryption.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value.digest,
        ),
    }  # the old signature certificate is gone

    # the old key still opens mail sent to the old certificate, the new one new mail
    result = _decrypt_with_card(old_mail, card.uri())
    assert result.exit_code == 0, result.output
    assert b"Potassium 4.1" in result.stdout_bytes
    result = _decrypt_with_card(_encrypt_to(new_enc, tmp_path, "new-enc"), card.uri())
    assert result.exit_code == 0, result.output
    assert b"Potassium 4.1" in result.stdout_bytes
    # the plain label names the current key
    named = card.uri().replace(f"token={LABEL}", f"token={LABEL};object=encryption")
    assert _decrypt_with_card(_encrypt_to(new_enc, tmp_path, "new2"), named).exit_code == 0

    # a signature made now carries the new certificate and verifies with openssl
    from caducee.cli.main import cli

    signed = CliRunner().invoke(cli, ["smime", "sign", "--inkey", card.uri()], input=MSG, env=ENV)
    assert signed.exit_code == 0, signed.output
    ca_file, signer_file = tmp_path / "ca.pem", tmp_path / "signer.pem"
    ca_file.write_bytes(_pem(card.ca.certificate))
    assert (out / "ca.pem").read_bytes() == ca_file.read_bytes()
    content = _openssl("cms", "-verify", "-CAfile", str(ca_file), "-signer", str(signer_file),
                       data=signed.stdout_bytes)  # fmt: skip
    assert b"Potassium 4.1" in content
    assert x509.load_pem_x509_certificate(signer_file.read_bytes()) == new_sig

    # published, and recorded by the CA for the same professional
    with open_directory(directory, create=False) as annuaire:
        (entry,) = annuaire.lookup(email="martin@op1.test").entries
    assert new_sig in entry.signature_certificates
    assert new_enc in entry.encryption_certificates
    records = {r.serial: r for r in card.ca.records()}
    assert records[new_sig.serial_number].professional_id == "10003456789"
    assert records[new_enc.serial_number].purpose == "encryption"


def test_renew_can_revoke_and_withdraw_what_it_replaces(card, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    """--revoke-previous: the replaced certificates are revoked as superseded (earlier
    signatures stay valid, older mail readable), listed on the CRL, and withdrawn."""
    from caducee.directory.federation import open_directory
    from caducee.pki import CertificateAuthority, ProfessionalIdentity
    from caducee.pki.publish import DirectoryPublisher

    directory = f"sqlite://{tmp_path / 'annuaire.sqlite'}"
    with open_directory(directory, create=True) as annuaire:  # the card as first published
        identity = ProfessionalIdentity.from_certificate(card.signature)
        for cert, purpose in ((card.signature, "signature"), (card.encryption, "encryption")):
            DirectoryPublisher(annuaire).issued(cert, identity, purpose)
    done = _renew("--ca", str(card.ca_dir), "--publish", directory, "--revoke-previous")
    assert done.exit_code == 0, done.output
    assert done.output.count("revoked (superseded), withdrawn from") == 2
    assert "revoke them with" not in done.output  # done, not advised
    records = {r.serial: r for r in card.ca.records()}
    for old in (card.signature, card.encryption):
        record = records[old.serial_number]
        assert (record.status, record.reason) == ("revoked", "superseded")
    crl = CertificateAuthority.open(card.ca_dir).store.latest_crl()
    assert crl is not None
    listed = {entry.serial_number for entry in crl}
    assert {card.signature.serial_number, card.encryption.serial_number} <= listed
    with open_directory(directory, create=False) as annuaire:
        (entry,) = annuaire.lookup(email="martin@op1.test").entries
    assert card.encryption not in entry.encryption_certificates
    assert entry.encryption_certificates  # the new one


def test_renew_signature_only_leaves_the_encryption_key_alone(card) -> None:  # type: ignore[no-untyped-def]
    before = {(c, label, i) for c, label, i in _objects() if label == "encryption"}
    result = _renew("--ca", str(card.ca_dir), "--purpose", "signature")
    assert result.exit_code == 0, result.output
    after = _objects()
    assert before <= after  # the encryption objects are untouched, same labels
    labels = [label for label, _ in _card_certificates()]
    assert sorted(labels) == ["encryption", "signature"]
    (sig,) = [c for label, c in _card_certificates() if label == "signature"]
    assert sig != card.signature and sig.subject == card.signature.subject


@pytest.mark.parametrize("purpose", ["signature", "encryption"])
def test_a_revoked_certificate_stops_the_renewal(card, purpose: str) -> None:  # type: ignore[no-untyped-def]
    revoked = card.signature if purpose == "signature" else card.encryption
    card.ca.revoke(revoked.serial_number, "keyCompromise")
    before, issued_before = _objects(), len(card.ca.records())
    result = _renew("--ca", str(card.ca_dir))  # renewing both: either revoked one stops it
    assert isinstance(result.exception, RenewalRefusedError), result.output
    message = str(result.exception)
    assert f"{purpose} certificate" in message and "revoked" in message
    assert "keyCompromise" in message
    assert _objects() == before
    assert len(card.ca.records()) == issued_before


def test_a_certificate_on_hold_stops_the_renewal(card) -> None:  # type: ignore[no-untyped-def]
    card.ca.revoke(card.encryption.serial_number, "certificateHold")
    before = _objects()
    result = _renew("--ca", str(card.ca_dir), "--purpose", "signature")
    assert isinstance(result.exception, RenewalRefusedError), result.output
    assert "on hold" in str(result.exception)
    assert _objects() == before


def test_a_refusing_ca_leaves_the_card_unchanged(card, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    """The address went to another professional meanwhile: the CA refuses to certify the new
    signature key, which was already generated on the card: it must be gone again."""
    from cryptography.hazmat.primitives.asymmetric import ec

    other = dataclasses.replace(MARTIN, given_name="Bruno", professional_id="10009999999")
    card.ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), other, "signature",
                  reassign_address=True)  # fmt: skip
    before, issued_before = _objects(), len(card.ca.records())
    out = tmp_path / "out"
    out.mkdir()
    result = _renew("--ca", str(card.ca_dir), "--cert-out", str(out))
    assert isinstance(result.exception, IssuanceRefusedError), result.output
    assert "belongs to professional 10009999999" in str(result.exception)
    assert _objects() == before
    assert len(card.ca.records()) == issued_before
    assert list(out.iterdir()) == []


def test_a_bad_output_path_is_refused_before_the_card_and_the_ca(card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before, issued_before = _objects(), len(card.ca.records())
    missing = tmp_path / "nowhere"
    result = _renew("--ca", str(card.ca_dir), "--cert-out", str(missing))
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == f"--cert-out {missing}: no such directory (create it first)"
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "encryption.pem").write_bytes(b"keep me")
    result = _renew("--ca", str(card.ca_dir), "--cert-out", str(taken))
    assert isinstance(result.exception, UsageError)
    assert "encryption.pem already there" in str(result.exception)
    assert (taken / "encryption.pem").read_bytes() == b"keep me"
    assert _objects() == before
    assert len(card.ca.records()) == issued_before


def test_a_missing_ca_passphrase_is_refused_before_the_card(card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = _objects()
    result = _renew("--ca", str(card.ca_dir), env={"CADUCEE_PIN": PIN})  # prompt, no answer
    assert result.exit_code != 0
    assert "CA key passphrase" in result.output and "PIN" not in result.output
    wrong = tmp_path / "pass"
    wrong.write_text("not-the-passphrase\n")
    wrong.chmod(0o600)
    result = _renew("--ca", str(card.ca_dir), "--ca-pass-source", str(wrong),
                    env={"CADUCEE_PIN": PIN})  # fmt: skip
    assert result.exit_code != 0 and result.exception is not None
    assert "passphrase" in str(result.exception), result.exception
    assert _objects() == before


def test_an_unreachable_directory_is_refused_before_the_card(card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before, issued_before = _objects(), len(card.ca.records())
    nowhere = f"sqlite://{tmp_path / 'no-such-folder' / 'annuaire.sqlite'}"
    result = _renew("--ca", str(card.ca_dir), "--publish", nowhere)
    assert result.exit_code != 0 and result.exception is not None
    assert _objects() == before
    assert len(card.ca.records()) == issued_before


def test_a_second_renewal_keeps_every_encryption_key(card, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    first_mail = _encrypt_to(card.encryption, tmp_path, "first")
    out = tmp_path / "second"
    out.mkdir()
    assert _renew("--ca", str(card.ca_dir), "--purpose", "encryption").exit_code == 0
    result = _renew("--ca", str(card.ca_dir), "--purpose", "encryption", "--cert-out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "encryption.pem"]
    newest = x509.load_pem_x509_certificate((out / "encryption.pem").read_bytes())
    encryption = {c.serial_number: label for label, c in _card_certificates()
                  if label != "signature"}  # fmt: skip
    assert len(encryption) == 3 and len(set(encryption.values())) == 3
    assert encryption[newest.serial_number] == "encryption"  # the plain label names the current key
    result = _decrypt_with_card(first_mail, card.uri())
    assert result.exit_code == 0, result.output
    assert b"Potassium 4.1" in result.stdout_bytes


def test_status_says_when_renewal_is_due(blank_hsm, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    _issue(tmp_path, kind="p256", days=600)  # issued 540 days ago: 60 days left
    result = CliRunner().invoke(group, ["status", "--module", SOFTHSM2_MODULE])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("renewal:")]
    assert len(lines) == 2
    assert lines[0].startswith("renewal: signature certificate expires ")
    assert all("renewal DUE" in line for line in lines), lines
    assert _renew("--ca", str(tmp_path / "op1-ca"), "--purpose", "signature").exit_code == 0
    result = CliRunner().invoke(group, ["status", "--module", SOFTHSM2_MODULE])
    lines = [line for line in result.output.splitlines() if line.startswith("renewal:")]
    assert "renewal not due yet" in lines[0] and "renewal DUE" in lines[1], lines


def test_renewal_notice_words() -> None:
    at = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    assert renewal_notice("signature", at + dt.timedelta(days=91), at).endswith("not due yet")
    assert "DUE" in renewal_notice("signature", at + dt.timedelta(days=90), at)
    assert "(in 1 day)" in renewal_notice("encryption", at + dt.timedelta(days=1, hours=2), at)
    assert "EXPIRED on 2026-11-28" in renewal_notice("encryption", at - dt.timedelta(days=1), at)


def test_keystore_mode_renewal_seals_the_new_key_in_a_new_keystore(  # type: ignore[no-untyped-def]
    blank_hsm, tmp_path: pathlib.Path
) -> None:
    from caducee.cli.main import cli

    ca_dir = tmp_path / "op1-ca"
    ca = CertificateAuthority.init_root(
        ca_dir, CAConfig("Operator 1 Health CA", "http://127.0.0.1:9/op1.crl"),
        key=generate_ca_key("p256"), passphrase=CA_PASS.encode(),
        now=NOW - dt.timedelta(days=1000),
    )  # fmt: skip
    old_store, new_store = tmp_path / "old.keystore", tmp_path / "new.keystore"
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        issued = issue_card(
            module, label=LABEL, so_pin="12345678", user_pin=PIN, kind="p256",
            issuer=ca.issuer_for(MARTIN, now=ISSUED_AT), encryption_key="keystore",
            keystore=old_store,
        )  # fmt: skip
    old_mail = _openssl("cms", "-encrypt", "-aes-256-cbc", str(_write(tmp_path, "old.pem",
                        issued.encryption_certificate)), data=MSG)  # fmt: skip
    before = _objects()
    refused = _renew("--ca", str(ca_dir), "--purpose", "encryption")
    assert isinstance(refused.exception, UsageError)
    assert "--keystore NEW_FILE" in str(refused.exception)
    assert _objects() == before
    out = tmp_path / "out"
    out.mkdir()
    result = _renew("--ca", str(ca_dir), "--purpose", "encryption", "--keystore", str(new_store),
                    "--cert-out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"new key sealed in the new keystore {new_store}" in result.output
    new_enc = x509.load_pem_x509_certificate((out / "encryption.pem").read_bytes())
    new_mail = _openssl("cms", "-encrypt", "-aes-256-cbc", str(out / "encryption.pem"), data=MSG)
    uri = f"pkcs11:token={LABEL}?module-path={SOFTHSM2_MODULE}"
    for wire, store in ((old_mail, old_store), (new_mail, new_store)):
        opened = CliRunner().invoke(
            cli, ["smime", "decrypt", "--inkey", uri, "--keystore", str(store)],
            input=wire, env=ENV,
        )  # fmt: skip
        assert opened.exit_code == 0, opened.output
        assert b"Potassium 4.1" in opened.stdout_bytes
    # the card shows the new encryption certificate under the plain label, no key for it
    labels = {c.serial_number: label for label, c in _card_certificates()}
    assert labels[new_enc.serial_number] == "encryption"
    assert labels[issued.encryption_certificate.serial_number].startswith("encryption-old-")


def _write(tmp_path: pathlib.Path, name: str, cert: x509.Certificate) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(_pem(cert))
    return path
