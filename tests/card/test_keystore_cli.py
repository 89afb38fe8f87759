"""``caducee card issue --encryption-key keystore``, ``status`` and ``unblock-keystore``."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest
from click.testing import CliRunner
from cryptography import x509

from caducee.cli.card import group
from caducee.errors import UsageError
from caducee.keys.keystore import keystore_info
from caducee.keys.pkcs11 import SOFTHSM2_MODULE

pytestmark = pytest.mark.softhsm

PINS = {"CADUCEE_SO_PIN": "12345678", "CADUCEE_PIN": "2468"}


def _run(args, input=None, env=None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(group, args, input=input, env=env)


def test_issue_status_and_unblock_in_keystore_mode(blank_hsm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "certs"
    out.mkdir()
    args = ["issue", "--token", "dr-ks", "--email", "ks@op1.test", "--encryption-key",
            "keystore", "--cert-out", str(out), "--module", SOFTHSM2_MODULE]  # fmt: skip
    result = _run(args, input="12345678\n12345678\n2468\n2468\n")
    assert result.exit_code == 0, result.output
    keystore = out / "keystore.json"  # next to the certificates by default
    assert f"encryption key sealed in the keystore {keystore}" in result.output
    assert "exists only in the keystore" in result.output
    assert "12345678" not in result.output and "2468" not in result.output
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    enc = x509.load_pem_x509_certificate((out / "encryption.pem").read_bytes())
    assert keystore_info(keystore).certificate == enc

    result = _run(["status", "--keys", "--keystore", str(keystore)], env={"CADUCEE_PIN": "2468"})
    assert result.exit_code == 0, result.output
    assert "mode:    keystore" in result.output
    assert f"keystore: {keystore}: opens with this card, ok" in result.output
    assert "key      keystore-access generated on card, non-extractable" in result.output
    assert "key      encryption" not in result.output  # its private key is not on the card
    assert "cert     keystore-access keystore-access" in result.output
    assert "cert     encryption  encryption" in result.output

    doc = json.loads(keystore.read_text())
    doc["failures"] = 3  # as after three failed openings
    keystore.write_text(json.dumps(doc))
    result = _run(["status", "--keystore", str(keystore)])
    assert "LOCKED: run caducee card unblock-keystore" in result.output
    bad = _run(["unblock-keystore", "--keystore", str(keystore)], env={"CADUCEE_SO_PIN": "0" * 8})
    assert bad.exit_code != 0 and "wrong SO PIN" in str(bad.exception)
    result = _run(["unblock-keystore", "--keystore", str(keystore)], env=PINS)
    assert result.exit_code == 0, result.output
    result = _run(["status", "--keystore", str(keystore)])
    assert f"keystore: {keystore}: opens with this card, ok" in result.output

    again = _run(args, env=PINS)  # never overwrites a keystore (nor touches the card)
    assert isinstance(again.exception, UsageError) and "already exists" in str(again.exception)


def test_card_mode_status_and_option_checks(rsa_card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _run(["status"])
    assert result.exit_code == 0, result.output
    assert "mode:    card (encryption key on the card)" in result.output
    result = _run(["issue", "--token", "x", "--email", "x@op1.test", "--keystore", "k.json"])
    assert isinstance(result.exception, UsageError)
    assert "--keystore goes with --encryption-key keystore" in str(result.exception)
    result = _run(["issue", "--token", "x", "--email", "x@op1.test", "--encryption-key",
                   "keystore"])  # fmt: skip
    assert isinstance(result.exception, UsageError) and "--keystore FILE" in str(result.exception)


def test_operator_ca_issues_the_keystore_key(blank_hsm, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from caducee.pki import CAConfig, CertificateAuthority
    from caducee.pki.ca import generate_ca_key

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
    keystore = tmp_path / "martin.keystore"
    result = _run(
        ["issue", "--token", "dr-martin", "--email", "dr-martin@op1.test", "--kind", "p256",
         "--ca", str(tmp_path / "op1-ca"), "--given-name", "Alice", "--surname", "Martin",
         "--professional-id", "10001234567", "--encryption-key", "keystore",
         "--keystore", str(keystore), "--cert-out", str(out), "--module", SOFTHSM2_MODULE],
        env=PINS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Operator 1 Health CA" in result.output and "TEST" not in result.output
    enc = x509.load_pem_x509_certificate((out / "encryption.pem").read_bytes())
    assert enc.issuer == ca.certificate.subject
    assert enc.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    info = keystore_info(keystore)
    assert info.certificate == enc and info.access_certificate.issuer != ca.certificate.subject
    assert enc.serial_number in {r.serial for r in ca.records()}
    assert info.access_certificate.serial_number not in {r.serial for r in ca.records()}


def test_smime_decrypt_through_the_keystore(blank_hsm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from caducee.cli.main import cli

    out = tmp_path / "certs"
    out.mkdir()
    args = ["issue", "--token", "dr-ks2", "--email", "ks2@op1.test", "--encryption-key",
            "keystore", "--cert-out", str(out), "--module", SOFTHSM2_MODULE]  # fmt: skip
    assert _run(args, input="12345678\n12345678\n2468\n2468\n").exit_code == 0
    msg = tmp_path / "m.txt"
    msg.write_bytes(b"Content-Type: text/plain\r\n\r\nPlatelets 250 G/L\r\n")
    wire = subprocess.run(
        ["openssl", "cms", "-encrypt", "-aes-256-cbc", "-in", str(msg),
         str(out / "encryption.pem")],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    uri = f"pkcs11:token=dr-ks2?module-path={SOFTHSM2_MODULE}"
    runner = CliRunner()
    env = {"CADUCEE_PIN": "2468"}
    r = runner.invoke(cli, ["smime", "decrypt", "--inkey", uri], input=wire, env=env)
    assert r.exit_code != 0 and "--keystore" in str(r.exception)
    r = runner.invoke(cli, ["smime", "decrypt", "--inkey", uri, "--keystore",
                            str(out / "keystore.json")], input=wire, env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert b"Platelets 250 G/L" in r.stdout_bytes
