"""``caducee smime`` after the 2026-11-29 acceptance review (defects #2-#5, #7-#9), checked
against real peers: ``openssl cms`` and ``gpgsm`` make the inputs and read the outputs."""

from __future__ import annotations

import datetime as dt
import pathlib
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caducee import devpki
from tests.conftest import pem_cert, pem_key, run

pytestmark = pytest.mark.interop

CADUCEE = [sys.executable, "-m", "caducee.cli.main", "smime"]
LETTER = (
    b"From: Dr Alice <alice@op1.test>\r\nTo: Dr Bob <bob@op2.test>\r\n"
    b"Subject: Referral\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    b"Please see Mr X on Monday.\r\n"
)
LF_TEXT = b"Lab result LF\nline2\n"


class Done:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr.decode()


def smime(*args: str, input: bytes | None = None) -> Done:
    return Done(subprocess.run([*CADUCEE, *args], input=input, capture_output=True, timeout=120))


@pytest.fixture
def f(pki, tmp_path: pathlib.Path, openssl) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The test PKI as files, plus a forged self-signed "Alice" made by openssl."""
    out: dict[str, str] = {"dir": str(tmp_path)}

    def put(name: str, data: bytes) -> None:
        (tmp_path / name).write_bytes(data)
        out[name] = str(tmp_path / name)

    put("ca.pem", pem_cert(pki.ca.certificate))
    for who in ("alice", "bob"):
        ident = getattr(pki, who)
        put(f"{who}-sig.pem", pem_cert(ident.signing.certificate))
        put(f"{who}-sig.key", pem_key(ident.signing._key))
        put(f"{who}-enc.pem", pem_cert(ident.encryption.certificate))
        put(f"{who}-enc.key", pem_key(ident.encryption._key))
    put("letter.eml", LETTER)
    put("lf.txt", LF_TEXT)
    out["forged.pem"], out["forged.key"] = (str(tmp_path / n) for n in ("forged.pem", "forged.key"))
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=Dr Alice/emailAddress=alice@op1.test",
         "-addext", "subjectAltName=email:alice@op1.test",
         "-keyout", out["forged.key"], "-out", out["forged.pem"]])  # fmt: skip
    return out


def _cert_file(f: dict[str, str], name: str, pki, **kwargs) -> str:  # type: ignore[no-untyped-def]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = devpki.issue_certificate(pki.ca, "old@op1.test", key, **kwargs)
    path = pathlib.Path(f["dir"]) / name
    path.write_bytes(pem_cert(cert))
    path.with_suffix(".key").write_bytes(pem_key(key))
    return str(path)


# -- #2: an intact signature is not a trusted signer -----------------------------------------


def test_forged_signer_without_anchor_is_not_reported_valid(f, openssl) -> None:  # type: ignore[no-untyped-def]
    signed = run([openssl, "cms", "-sign", "-in", f["letter.eml"], "-signer", f["forged.pem"],
                  "-inkey", f["forged.key"]])  # fmt: skip
    # openssl itself refuses it without -noverify.
    assert subprocess.run([openssl, "cms", "-verify"], input=signed,
                          capture_output=True).returncode != 0  # fmt: skip
    r = smime("verify", input=signed)
    assert r.rc == 4, r.err
    assert "signature intact, signer identity NOT checked (give --CAfile or --trust" in r.err
    assert "Verification successful" not in r.err and r.out == b""
    r = smime("verify", "--noverify", input=signed)
    assert r.rc == 0 and "signer identity NOT checked (--noverify)" in r.err
    r = smime("verify", "--CAfile", f["ca.pem"], input=signed)
    assert r.rc == 4 and "does not chain" in r.err


def test_decrypt_checks_the_inner_signer_like_verify(f, openssl) -> None:  # type: ignore[no-untyped-def]
    def signed_then_encrypted(cert: str, key: str) -> bytes:
        signed = run([openssl, "cms", "-sign", "-in", f["letter.eml"], "-signer", cert,
                      "-inkey", key])  # fmt: skip
        return run([openssl, "cms", "-encrypt", "-aes-256-gcm", f["bob-enc.pem"]], signed)

    keys = ["--recip", f["bob-enc.pem"], "--inkey", f["bob-enc.key"]]
    forged = signed_then_encrypted(f["forged.pem"], f["forged.key"])
    r = smime("decrypt", *keys, input=forged)
    assert r.rc == 4 and "signer identity NOT checked" in r.err
    assert b"Please see Mr X" in r.out  # decrypted all the same; the status says why not
    assert smime("decrypt", *keys, "--noverify", input=forged).rc == 0
    r = smime("decrypt", *keys, "--CAfile", f["ca.pem"], input=forged)
    assert r.rc == 4 and "does not chain" in r.err
    genuine = signed_then_encrypted(f["alice-sig.pem"], f["alice-sig.key"])
    r = smime("decrypt", *keys, "--CAfile", f["ca.pem"], input=genuine)
    assert r.rc == 0, r.err
    assert "signature intact" in r.err and "signer chains to the CA file" in r.err


# -- #7: --CAfile alone says revocation was not checked ---------------------------------------


def test_cafile_without_crl_says_revocation_not_checked(f, openssl) -> None:  # type: ignore[no-untyped-def]
    signed = run([openssl, "cms", "-sign", "-in", f["letter.eml"], "-signer", f["alice-sig.pem"],
                  "-inkey", f["alice-sig.key"]])  # fmt: skip
    r = smime("verify", "--CAfile", f["ca.pem"], input=signed)
    assert r.rc == 0, r.err
    assert "revocation not checked" in r.err.splitlines()[-1]


# -- #3: input without MIME headers ------------------------------------------------------------


def test_plain_text_is_refused_unless_text(f, openssl) -> None:  # type: ignore[no-untyped-def]
    plain = pathlib.Path(f["dir"]) / "m.txt"
    plain.write_bytes(b"Referral letter\n")
    sign = ["sign", "--in", str(plain), "--signer", f["alice-sig.pem"],
            "--inkey", f["alice-sig.key"]]  # fmt: skip
    r = smime(*sign)
    assert r.rc == 2
    assert f"no MIME headers in {plain}: add them, or use --text" in r.err
    r = smime("encrypt", "--in", str(plain), f["bob-enc.pem"])
    assert r.rc == 2 and "use --text to wrap it as text/plain" in r.err

    signed = smime(*sign, "--text")
    assert signed.rc == 0, signed.err
    # openssl's -text strips the text/plain header it expects a -text signer to have added
    assert run([openssl, "cms", "-verify", "-text", "-CAfile", f["ca.pem"], "-purpose", "any"],
               signed.out).replace(b"\r\n", b"\n") == b"Referral letter\n"  # fmt: skip
    r = smime("verify", "--CAfile", f["ca.pem"], input=signed.out)
    assert r.rc == 0, r.err
    wire = smime("encrypt", "--text", "--in", str(plain), f["bob-enc.pem"])
    assert wire.rc == 0, wire.err
    plain_out = run([openssl, "cms", "-decrypt", "-text", "-recip", f["bob-enc.pem"],
                     "-inkey", f["bob-enc.key"]], wire.out)  # fmt: skip
    assert plain_out.replace(b"\r\n", b"\n") == b"Referral letter\n"


# -- #4: certificates that cannot serve ---------------------------------------------------------


def test_encrypt_refuses_unusable_recipient_certificates(f, pki, openssl) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    expired = _cert_file(f, "expired.pem", pki, purpose="encryption",
                         not_before=now - dt.timedelta(days=400), days=30)  # fmt: skip
    future = _cert_file(f, "future.pem", pki, purpose="encryption",
                        not_before=now + dt.timedelta(days=10))  # fmt: skip
    cases = [
        (f["alice-sig.pem"], "keyEncipherment"),
        (f["ca.pem"], "a CA certificate"),
        (expired, "expired on"),
        (future, "not valid before"),
    ]
    for path, reason in cases:
        r = smime("encrypt", "--in", f["letter.eml"], "--recip", f["bob-enc.pem"], path)
        assert r.rc == 8, (path, r.err)
        assert r.err.startswith(f"caducee: error: {path} ") and reason in r.err, r.err
        assert r.err.count("\n") == 1 and r.out == b""
    # and what is usable still works, read by openssl
    r = smime("encrypt", "--in", f["letter.eml"], f["bob-enc.pem"])
    assert r.rc == 0, r.err
    run([openssl, "cms", "-decrypt", "-recip", f["bob-enc.pem"], "-inkey", f["bob-enc.key"]], r.out)


def test_sign_refuses_an_expired_certificate(f, pki) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    expired = _cert_file(f, "old-sig.pem", pki, purpose="signature",
                         not_before=now - dt.timedelta(days=400), days=30)  # fmt: skip
    key = str(pathlib.Path(expired).with_suffix(".key"))
    r = smime("sign", "--in", f["letter.eml"], "--signer", expired, "--inkey", key)
    assert r.rc == 8 and f"{expired} " in r.err and "expired on" in r.err, r.err


# -- #5 and #9: --out ---------------------------------------------------------------------------


def test_out_into_a_missing_directory_is_one_line(f) -> None:  # type: ignore[no-untyped-def]
    target = f["dir"] + "/nonexistent/x.eml"
    r = smime("sign", "--in", f["letter.eml"], "--signer", f["alice-sig.pem"],
              "--inkey", f["alice-sig.key"], "--out", target)  # fmt: skip
    assert r.rc == 2
    assert r.err == f"caducee: error: cannot write {target}: no such directory\n"


def test_out_does_not_overwrite_without_force_nor_ever_the_input(f) -> None:  # type: ignore[no-untyped-def]
    sign = ["sign", "--signer", f["alice-sig.pem"], "--inkey", f["alice-sig.key"]]
    out = pathlib.Path(f["dir"]) / "s.eml"
    out.write_bytes(b"keep me")
    r = smime(*sign, "--in", f["letter.eml"], "--out", str(out))
    assert r.rc == 2 and "exists (give --force" in r.err and out.read_bytes() == b"keep me"
    assert smime(*sign, "--in", f["letter.eml"], "--out", str(out), "--force").rc == 0
    assert b"multipart/signed" in out.read_bytes()
    r = smime(*sign, "--in", f["letter.eml"], "--out", f["letter.eml"], "--force")
    assert r.rc == 2 and "it is the input file" in r.err
    assert pathlib.Path(f["letter.eml"]).read_bytes() == LETTER


# -- #8: detached text-mode signature by openssl over LF content --------------------------------


@pytest.mark.parametrize("form", ["DER", "PEM"])
def test_openssl_text_mode_detached_signature_over_lf_content(f, openssl, form) -> None:  # type: ignore[no-untyped-def]
    sig = run([openssl, "cms", "-sign", "-in", f["lf.txt"], "-signer", f["bob-sig.pem"],
               "-inkey", f["bob-sig.key"], "-outform", form])  # fmt: skip
    run([openssl, "cms", "-verify", "-inform", form, "-in", "-", "-content", f["lf.txt"],
         "-CAfile", f["ca.pem"], "-purpose", "any"], sig)  # fmt: skip
    r = smime("verify", "--inform", form.lower(), "--content", f["lf.txt"],
              "--CAfile", f["ca.pem"], input=sig)  # fmt: skip
    assert r.rc == 0, r.err
    # a real change in the content is still caught
    other = pathlib.Path(f["dir"]) / "other.txt"
    other.write_bytes(LF_TEXT.replace(b"LF", b"lf"))
    r = smime("verify", "--inform", form.lower(), "--content", str(other),
              "--CAfile", f["ca.pem"], input=sig)  # fmt: skip
    assert r.rc == 3 and "content digest does not match" in r.err


# -- #9: gpgsm armour, binary input, help ------------------------------------------------------


def test_gpgsm_armoured_signed_and_encrypted_messages_are_read(gpgsm, pki, f) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.alice)
    gpgsm.import_identity(pki.bob)
    src = pathlib.Path(f["dir"]) / "c.txt"
    src.write_bytes(LETTER)
    signed = pathlib.Path(f["dir"]) / "c.asc"
    gpgsm.run("--armor", "-u", pki.alice.email, "--sign", "-o", str(signed), str(src))
    assert signed.read_bytes().startswith(b"-----BEGIN SIGNED MESSAGE-----")
    for inform in (["--inform", "pem"], []):
        r = smime("verify", "--in", str(signed), *inform, "--CAfile", f["ca.pem"])
        assert r.rc == 0, r.err
        assert "Dr Alice" in r.err or "alice" in r.err
    enc = pathlib.Path(f["dir"]) / "e.asc"
    gpgsm.run("--armor", "-r", pki.bob.email, "--encrypt", "-o", str(enc), str(src))
    assert enc.read_bytes().startswith(b"-----BEGIN ENCRYPTED MESSAGE-----")
    r = smime("decrypt", "--in", str(enc), "--inform", "pem", "--recip", f["bob-enc.pem"],
              "--inkey", f["bob-enc.key"])  # fmt: skip
    assert r.rc == 0, r.err
    assert r.out == LETTER


def test_binary_input_error_quotes_no_bytes(f, openssl) -> None:  # type: ignore[no-untyped-def]
    der = run([openssl, "cms", "-sign", "-in", f["letter.eml"], "-signer", f["alice-sig.pem"],
               "-inkey", f["alice-sig.key"], "-outform", "DER", "-nodetach"])  # fmt: skip
    r = smime("verify", "--CAfile", f["ca.pem"], input=der)
    assert r.rc == 3
    assert "binary data: DER? use --inform der" in r.err
    assert "b'" not in r.err and "\\x" not in r.err
    assert smime("verify", "--inform", "der", "--CAfile", f["ca.pem"], input=der).rc == 0
    # plain text: said in words, and the (patient) text is not echoed
    r = smime("verify", "--CAfile", f["ca.pem"], input=b"Referral letter for Mr X\n")
    assert r.rc == 3 and "not a MIME message" in r.err and "Mr X" not in r.err


def test_help_names_files_out_and_the_pin_variable() -> None:
    sign = smime("sign", "--help").out.decode()
    assert "--in FILE" in sign and "--out FILE" in sign and "Where to write" in sign
    assert "RFC 9788" in sign  # --no-header-protection explained
    assert "CADUCEE_PIN" in sign and "--force" in sign
    encrypt = smime("encrypt", "--help").out.decode()
    assert "CERTS are recipient certificate files" in encrypt and "--text" in encrypt
    decrypt = smime("decrypt", "--help").out.decode()
    for option in ("--CAfile", "--trust", "--crl", "--noverify", "CADUCEE_PIN"):
        assert option in decrypt


# -- raw output of binary content ------------------------------------------------------------


def test_binary_content_is_signed_and_encrypted_as_it_is(f, openssl) -> None:  # type: ignore[no-untyped-def]
    """--outform der --binary keeps a PDF's bytes (LF bytes inside must not become CRLF); the
    peer reads it back byte for byte with -binary."""
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    content = pathlib.Path(f["dir"]) / "result.pdf"
    content.write_bytes(pdf)
    sig = pathlib.Path(f["dir"]) / "result.p7s"
    done = smime("sign", "--in", str(content), "--inkey", f["alice-sig.key"],
                 "--signer", f["alice-sig.pem"], "--outform", "der", "--binary",
                 "--out", str(sig))  # fmt: skip
    assert done.rc == 0, done.err
    run([openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(sig),
         "-content", str(content), "-CAfile", f["ca.pem"], "-out", "/dev/null"])  # fmt: skip
    enc = pathlib.Path(f["dir"]) / "result.p7m"
    done = smime("encrypt", "--in", str(content), "--recip", f["bob-enc.pem"],
                 "--outform", "der", "--binary", "--out", str(enc))  # fmt: skip
    assert done.rc == 0, done.err
    back = run([openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(enc),
                "-inkey", f["bob-enc.key"], "-recip", f["bob-enc.pem"]])  # fmt: skip
    assert back == pdf
    refused = smime("encrypt", "--in", str(content), "--recip", f["bob-enc.pem"], "--binary")
    assert refused.rc == 2 and "--binary goes with --outform der or pem" in refused.err
