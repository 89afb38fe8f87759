"""``caducee smime``: the openssl-cms-shaped CLI, checked against openssl itself."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from caducee.cli.main import cli
from tests.conftest import pem_cert, pem_key, run

LETTER = (
    b"From: Dr Alice <alice@op1.test>\r\n"
    b"To: Dr Bob <bob@op2.test>\r\n"
    b"Subject: Potassium 6.1 mmol/L\r\n"
    b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <cli-1@op1.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Please call the patient today.\r\n"
)

CADUCEE = [sys.executable, "-m", "caducee.cli.main"]


@pytest.fixture
def pkifiles(pki, tmp_path: pathlib.Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out: dict[str, str] = {}

    def put(name: str, data: bytes) -> None:
        (tmp_path / name).write_bytes(data)
        out[name] = str(tmp_path / name)

    put("ca.pem", pem_cert(pki.ca.certificate))
    put("other-ca.pem", pem_cert(pki.other_ca.certificate))
    for who in ("alice", "bob", "carol"):
        ident = getattr(pki, who)
        put(f"{who}-sig.pem", pem_cert(ident.signing.certificate))
        put(f"{who}-sig.key", pem_key(ident.signing._key))
        put(f"{who}-enc.pem", pem_cert(ident.encryption.certificate))
        put(f"{who}-enc.key", pem_key(ident.encryption._key))
    p12 = pkcs12.serialize_key_and_certificates(
        b"bob",
        pki.bob.encryption._key,
        pki.bob.encryption.certificate,
        None,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    put("bob-enc.p12", p12)
    put("letter.eml", LETTER)
    out["dir"] = str(tmp_path)
    return out


def caducee(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_sign_then_openssl_and_caducee_verify(pkifiles, openssl) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    out = f["dir"] + "/signed.eml"
    r = caducee("smime", "sign", "--in", f["letter.eml"], "--out", out,
                "--signer", f["alice-sig.pem"], "--inkey", f["alice-sig.key"])  # fmt: skip
    assert r.exit_code == 0, r.output
    signed = pathlib.Path(out).read_bytes()
    assert b"multipart/signed" in signed and b"Subject: Potassium" in signed
    run([openssl, "cms", "-verify", "-in", out, "-CAfile", f["ca.pem"], "-purpose", "any"])
    r = caducee("smime", "verify", "--in", out, "--CAfile", f["ca.pem"])
    assert r.exit_code == 0, r.output
    assert "Verification successful" in r.stderr and "alice" in r.stderr


def test_verify_with_untrusted_ca_fails_with_one_line(pkifiles) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    signed = caducee("smime", "sign", "--in", f["letter.eml"], "--signer", f["alice-sig.pem"],
                     "--inkey", f["alice-sig.key"]).stdout_bytes  # fmt: skip
    proc = subprocess.run(
        [*CADUCEE, "smime", "verify", "--CAfile", f["other-ca.pem"]],
        input=signed, capture_output=True,
    )  # fmt: skip
    assert proc.returncode == 4
    assert proc.stderr.decode().count("\n") == 1 and "does not chain" in proc.stderr.decode()


def test_tampered_signed_message_fails(pkifiles) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    signed = caducee("smime", "sign", "--in", f["letter.eml"], "--signer", f["alice-sig.pem"],
                     "--inkey", f["alice-sig.key"]).stdout_bytes  # fmt: skip
    tampered = signed.replace(b"call the patient", b"call the plumber")
    assert tampered != signed
    proc = subprocess.run([*CADUCEE, "smime", "verify"], input=tampered, capture_output=True)
    assert proc.returncode == 3
    assert b"content digest does not match" in proc.stderr
    assert proc.stderr.count(b"\n") == 1


def test_encrypt_with_openssl_decrypt_with_pkcs12(pkifiles, openssl) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    wire = run([openssl, "cms", "-encrypt", "-aes-256-gcm", "-in", f["letter.eml"],
                f["bob-enc.pem"]])  # fmt: skip
    r = caducee("smime", "decrypt", "--inkey", f["bob-enc.p12"], "--passin", "pass:s3cret",
                input=wire)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert b"Please call the patient today." in r.stdout_bytes


def test_encrypt_message_then_openssl_decrypts(pkifiles, openssl) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    r = caducee("smime", "encrypt", "--recip", f["bob-enc.pem"], "--in", f["letter.eml"])
    assert r.exit_code == 0, r.output
    wire = r.stdout_bytes
    assert b"Subject: [...]" in wire and b"To: Dr Bob" in wire  # routing headers outside
    plain = run([openssl, "cms", "-decrypt", "-recip", f["bob-enc.pem"], "-inkey",
                 f["bob-enc.key"]], wire)  # fmt: skip
    assert b"Subject: Potassium 6.1 mmol/L" in plain and b'hp="cipher"' in plain


@pytest.mark.parametrize(
    ("cipher", "keyopt"),
    [("aes-128-gcm", "rsa_padding_mode:oaep"), ("aes-256-cbc", "rsa_padding_mode:pkcs1"),
     ("aes-128-cbc", "rsa_oaep_md:sha1")],
)  # fmt: skip
def test_der_and_pem_forms_with_openssl(pkifiles, openssl, cipher, keyopt) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    for form in ("der", "pem"):
        r = caducee("smime", "encrypt", "--outform", form, "--cipher", cipher, "--keyopt", keyopt,
                    "--recip", f["bob-enc.pem"], "--in", f["letter.eml"])  # fmt: skip
        assert r.exit_code == 0, r.output
        plain = run([openssl, "cms", "-decrypt", "-inform", form.upper(), "-recip",
                     f["bob-enc.pem"], "-inkey", f["bob-enc.key"]], r.stdout_bytes)  # fmt: skip
        assert plain == LETTER


def test_sign_encrypt_decrypt_reports_every_layer(pkifiles) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    signed = caducee("smime", "sign", "--in", f["letter.eml"], "--signer", f["alice-sig.pem"],
                     "--inkey", f["alice-sig.key"]).stdout_bytes  # fmt: skip
    wire = caducee("smime", "encrypt", "--recip", f["bob-enc.pem"], input=signed).stdout_bytes
    r = caducee("smime", "decrypt", "--recip", f["bob-enc.pem"], "--inkey", f["bob-enc.key"],
                "--CAfile", f["ca.pem"], input=wire)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "encrypted: aes-256-gcm" in r.stderr
    assert "signed (detached)" in r.stderr and "signature intact" in r.stderr
    assert "signer chains to the CA file" in r.stderr
    assert b"Please call the patient today." in r.stdout_bytes


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["smime", "decrypt", "--inkey", "{alice-enc.key}", "--recip", "{alice-enc.pem}"],
         "recipient"),
        (["smime", "encrypt"], "recipient certificate"),
        (["smime", "sign", "--inkey", "{alice-sig.key}"], "certificate"),
        (["smime", "sign", "--inkey", "/nonexistent.key", "--signer", "{alice-sig.pem}"],
         "cannot read"),
        (["smime", "verify", "--inform", "der"], "malformed"),
        (["smime", "encrypt", "--recip", "{alice-sig.key}"], "certificate"),
    ],
)  # fmt: skip
def test_errors_are_one_line_without_traceback(pkifiles, args, needle) -> None:  # type: ignore[no-untyped-def]
    f = pkifiles
    wire = caducee("smime", "encrypt", "--recip", f["bob-enc.pem"], "--in",
                   f["letter.eml"]).stdout_bytes  # fmt: skip
    argv = [f[a[1:-1]] if a.startswith("{") else a for a in args]
    proc = subprocess.run([*CADUCEE, *argv], input=wire,
                          capture_output=True, timeout=60)  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("caducee: error:")
    assert needle in err.lower()
