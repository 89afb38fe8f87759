"""``caducee card`` through click's CliRunner and once as a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.cli.card import group
from caducee.keys.pkcs11 import SOFTHSM2_MODULE
from caducee.keys.pkcs11_errors import WrongPinError

pytestmark = pytest.mark.softhsm

CADUCEE = os.path.join(os.path.dirname(sys.executable), "caducee")


def _run(args, input=None, env=None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(group, args, input=input, env=env)


def test_list_and_status(rsa_card) -> None:
    result = _run(["list"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("dr-martin\tserial ")
    result = _run(["status"])
    assert result.exit_code == 0, result.output
    assert "holder:  Dr Martin <martin@op1.test>" in result.output
    assert "PIN:     ok" in result.output
    assert "private keys not listed" in result.output
    result = _run(["status", "--token", "dr-martin", "--keys"], input="1234\n")
    assert result.exit_code == 0, result.output
    assert "1234" not in result.output  # hidden prompt: never echoed
    assert "key      signature   generated on card, non-extractable" in result.output
    assert "key      encryption  imported, non-extractable" in result.output


def test_change_pin_and_wrong_pin(rsa_card, tmp_path) -> None:
    result = _run(["change-pin"], input="1234\n4321\n4321\n")
    assert result.exit_code == 0, result.output
    assert "4321" not in result.output and "changed" in result.output
    result = _run(["status", "--keys"], input="1234\n")
    assert isinstance(result.exception, WrongPinError)
    pin = tmp_path / "pin"
    pin.touch(mode=0o600)
    pin.write_text("4321\n")
    result = _run(["status", "--keys", "--pin-source", str(pin)])
    assert result.exit_code == 0, result.output


def test_unblock_with_env_pins(rsa_card) -> None:
    env = {"CADUCEE_SO_PIN": "12345678", "CADUCEE_NEW_PIN": "8642"}
    result = _run(["unblock", "--token", "dr-martin"], env=env)
    assert result.exit_code == 0, result.output
    result = _run(["status", "--keys"], env={"CADUCEE_PIN": "8642"})
    assert result.exit_code == 0, result.output


def test_issue_on_blank_module(blank_hsm, tmp_path) -> None:
    out = tmp_path / "certs"
    out.mkdir()
    result = _run(
        [
            "issue",
            "--token",
            "dr-petit",
            "--email",
            "petit@op1.test",
            "--name",
            "Dr Petit",
            "--kind",
            "p256",
            "--cert-out",
            str(out),
            "--module",
            SOFTHSM2_MODULE,
        ],
        input="87654321\n87654321\n2468\n2468\n",
    )
    assert result.exit_code == 0, result.output
    assert "87654321" not in result.output and "2468" not in result.output
    assert "TEST certificates" in result.output
    sig = x509.load_pem_x509_certificate((out / "signature.pem").read_bytes())
    assert "petit@op1.test" in sig.subject.rfc4514_string()
    result = _run(["status", "--token", "dr-petit"])
    assert "holder:  Dr Petit <petit@op1.test>" in result.output


def test_real_process_reports_one_line_errors(rsa_card, tmp_path) -> None:
    if not os.path.exists(CADUCEE):
        pytest.skip("the caducee script is not installed in the venv")
    pin = tmp_path / "pin"
    pin.touch(mode=0o600)
    pin.write_text("0000\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(rsa_card.conf)}
    env.pop("CADUCEE_PIN", None)
    proc = subprocess.run(
        [CADUCEE, "card", "status", "--keys", "--pin-source", str(pin)],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 5  # KeyStoreError family
    assert proc.stderr == b"caducee: error: wrong PIN\n"
    proc = subprocess.run(
        [CADUCEE, "card", "status", "--token", "nobody"], capture_output=True, env=env, timeout=60
    )
    assert proc.returncode == 5
    assert proc.stderr.startswith(b"caducee: error: no card with label 'nobody'")
    proc = subprocess.run([CADUCEE, "card", "list"], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(b"dr-martin\t")


def test_smime_sign_and_decrypt_with_card_uri(rsa_card, tmp_path, openssl) -> None:
    """``caducee smime --inkey pkcs11:...`` as a real process, checked by openssl."""
    import importlib.util

    from tests.conftest import pem_cert, run

    if not os.path.exists(CADUCEE) or importlib.util.find_spec("caducee.cli.smime") is None:
        pytest.skip("caducee smime is not installed")
    pin = tmp_path / "pin"
    pin.touch(mode=0o600)
    pin.write_text("1234\n")
    msg = tmp_path / "msg"
    msg.write_bytes(b"Content-Type: text/plain\r\n\r\nECG attached\r\n")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pem_cert(rsa_card.ca.certificate))
    env = {**os.environ, "SOFTHSM2_CONF": str(rsa_card.conf)}
    uri = f"pkcs11:token=dr-martin;object=signature?pin-source=file:{pin}"
    signed = tmp_path / "signed.eml"
    proc = subprocess.run(
        [CADUCEE, "smime", "sign", "--in", str(msg), "--out", str(signed), "--inkey", uri],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = run([openssl, "smime", "-verify", "-in", str(signed), "-CAfile", str(ca),
               "-purpose", "any"])  # fmt: skip
    assert b"ECG attached" in out
    recip = tmp_path / "enc.pem"
    recip.write_bytes(pem_cert(rsa_card.issued.encryption_certificate))
    enc = run([openssl, "cms", "-encrypt", "-aes256", "-in", str(msg), "-recip", str(recip),
               "-keyopt", "rsa_padding_mode:oaep"])  # fmt: skip
    (tmp_path / "enc.eml").write_bytes(enc)
    uri = f"pkcs11:token=dr-martin;object=encryption?pin-source=file:{pin}"
    proc = subprocess.run(
        [CADUCEE, "smime", "decrypt", "--in", str(tmp_path / "enc.eml"), "--inkey", uri],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"ECG attached" in proc.stdout


def test_issue_with_operator_ca_gets_real_certificates(blank_hsm, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from caducee.pki import CAConfig, CertificateAuthority
    from caducee.pki.ca import generate_ca_key
    from caducee.pki.profiles import ProfessionalIdentity

    ca = CertificateAuthority.init_root(
        tmp_path / "op1-ca",
        CAConfig(name="Operator 1 Health CA", crl_url="http://127.0.0.1:9/op1.crl"),
        organisation="Operator 1",
        key=generate_ca_key("p256"),
        passphrase=b"ca-pass",
    )
    monkeypatch.setenv("CADUCEE_CA_PASS", "ca-pass")
    out = tmp_path / "certs"
    out.mkdir()
    result = _run(
        ["issue", "--token", "dr-martin", "--email", "dr-martin@op1.test", "--kind", "rsa2048",
         "--ca", str(tmp_path / "op1-ca"), "--given-name", "Alice", "--surname", "Martin",
         "--professional-id", "10001234567", "--profession", "General practitioner",
         "--cert-out", str(out), "--module", SOFTHSM2_MODULE],
        input="87654321\n87654321\n2468\n2468\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "TEST" not in result.output and "Operator 1 Health CA" in result.output
    sig = x509.load_pem_x509_certificate((out / "signature.pem").read_bytes())
    enc = x509.load_pem_x509_certificate((out / "encryption.pem").read_bytes())
    assert sig.issuer == ca.certificate.subject
    identity = ProfessionalIdentity.from_certificate(sig)
    assert identity.professional_id == "10001234567" and identity.surname == "Martin"
    assert sig.extensions.get_extension_for_class(x509.KeyUsage).value.content_commitment
    assert enc.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert {r.serial for r in ca.records()} >= {sig.serial_number, enc.serial_number}
    # The encryption certificate tells a first correspondent what the card decrypts (RFC 4262):
    # SoftHSM2 has no OAEP-SHA-256, so a sender who knows nothing else picks OAEP-SHA-1.
    from caducee.core.algorithms import KeyTransport
    from caducee.core.capabilities import Capabilities
    from caducee.core.policy import choose_encryption

    caps = Capabilities.from_certificate(enc)
    assert caps is not None and KeyTransport.RSA_OAEP_SHA256 not in caps.key_transports
    assert Capabilities.from_certificate(sig) is None
    choice = choose_encryption([(enc, None)])
    assert choice.recipients[0].key_transport is KeyTransport.RSA_OAEP_SHA1
    pem = enc.public_bytes(Encoding.PEM)
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True, check=True
    ).stdout
    assert b"1.2.840.113549.1.9.15" in text or b"S/MIME Capabilities" in text


def test_issue_with_operator_ca_needs_identity(blank_hsm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _run(["issue", "--token", "x", "--email", "x@op1.test", "--ca", str(tmp_path),
                   "--module", SOFTHSM2_MODULE])  # fmt: skip
    assert result.exit_code != 0
