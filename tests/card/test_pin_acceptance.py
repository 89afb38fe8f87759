"""Acceptance defects of the card PIN handling, run as real processes with no terminal.

Each process is started in a new session (no controlling terminal, so no /dev/tty) with the
message or nothing on stdin, the way a mail filter, cron or a pipe runs caducee. A PIN must then
never be read from stdin (it would be the first line of the mail, burning a try on a real card)
and Python's GetPassWarning must never show: one line says where a PIN can come from.
"""

from __future__ import annotations

import datetime as dt
import os
import select
import subprocess
import sys
from pathlib import Path

import PyKCS11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from caducee import devpki
from caducee.card.names import readable_name
from caducee.card.objects import write_certificate
from caducee.keys.open import open_card
from caducee.keys.pkcs11_errors import CardOperationError, map_ckr

pytestmark = pytest.mark.softhsm

CADUCEE = [sys.executable, "-m", "caducee.cli.main"]
MESSAGE = b"1234\nContent-Type: text/plain\n\nReferral letter for Mr Petit.\n"
SIGN_REFUSAL = (
    "caducee: error: a PIN is needed for card 'dr-martin': no terminal to ask on; set "
    "CADUCEE_PIN, give --passin, or add pin-source=file:PATH to the key URI"
)


def _caducee(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*CADUCEE, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=full_env,
        start_new_session=True,  # no controlling terminal
        timeout=120,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


def _key(card, obj: str = "signature") -> str:  # type: ignore[no-untyped-def]
    return card.uri(f";object={obj}")


def _stderr_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = proc.stderr.decode()
    assert "GetPassWarning" not in text and "Warning" not in text, text
    assert text.count("\n") == 1, text  # one line
    return text.strip()


@pytest.fixture
def pin_file(tmp_path: Path) -> Path:
    path = tmp_path / "user.pin"
    path.write_text("1234\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def message_file(tmp_path: Path) -> Path:
    path = tmp_path / "msg.eml"
    path.write_bytes(b"Content-Type: text/plain\n\nReferral letter for Mr Petit.\n")
    return path


# -- #1: no terminal, no PIN source: refuse, never read stdin -------------------------------------


def test_sign_without_terminal_refuses_and_does_not_read_the_message_as_pin(rsa_card) -> None:
    proc = _caducee("smime", "sign", "--inkey", _key(rsa_card), stdin=MESSAGE)
    assert proc.returncode == 2, proc.stderr
    assert _stderr_line(proc) == SIGN_REFUSAL
    assert proc.stdout == b""  # nothing signed, nothing lost silently


def test_decrypt_without_terminal_refuses(rsa_card) -> None:
    proc = _caducee("smime", "decrypt", "--inkey", rsa_card.uri(), stdin=MESSAGE)
    assert proc.returncode == 2, proc.stderr
    assert _stderr_line(proc) == SIGN_REFUSAL


def test_card_commands_without_terminal_refuse(rsa_card) -> None:
    proc = _caducee("card", "status", "--keys", stdin=b"1234\n")
    assert proc.returncode == 2, proc.stderr
    assert _stderr_line(proc) == (
        "caducee: error: PIN for card 'dr-martin' needed: no terminal to ask on; "
        "set CADUCEE_PIN or use --pin-source FILE"
    )
    proc = _caducee("card", "change-pin", stdin=b"1234\n4321\n4321\n")
    assert proc.returncode == 2, proc.stderr
    assert "no terminal to ask on" in _stderr_line(proc)
    # with the PIN from the environment, the new PIN is still not read from stdin
    proc = _caducee("card", "change-pin", stdin=b"4321\n4321\n", env={"CADUCEE_PIN": "1234"})
    assert proc.returncode == 2, proc.stderr
    assert _stderr_line(proc).endswith("set CADUCEE_NEW_PIN or use --new-pin-source FILE")


def test_mail_pin_prompt_without_terminal_refuses() -> None:
    code = (
        "from caducee.cli.mail import _pin_prompt\n"
        "from caducee.errors import UsageError\n"
        "try:\n"
        "    _pin_prompt(\"card 'dr-martin'\")\n"
        "except UsageError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=b"1234\n",
        capture_output=True,
        start_new_session=True,
        timeout=60,
        check=False,
    )
    assert proc.stderr == b""  # no GetPassWarning
    assert proc.stdout.decode().strip() == (
        "a PIN is needed for card 'dr-martin': no terminal to ask on; set CADUCEE_PIN or add "
        "pin-source=file:PATH to the card URI in the configuration"
    )


def test_pin_source_and_env_still_work_without_terminal(rsa_card, pin_file) -> None:
    uri = f"{_key(rsa_card)}&pin-source=file:{pin_file}"
    proc = _caducee("smime", "sign", "--inkey", uri, stdin=MESSAGE[5:])
    assert proc.returncode == 0, proc.stderr
    assert b"Referral letter" in proc.stdout
    proc = _caducee(
        "smime", "sign", "--inkey", _key(rsa_card), stdin=MESSAGE[5:], env={"CADUCEE_PIN": "1234"}
    )
    assert proc.returncode == 0, proc.stderr


# -- #6: --passin gives the card PIN ---------------------------------------------------------


def test_passin_file_gives_the_card_pin(rsa_card, pin_file, message_file, tmp_path) -> None:
    out = tmp_path / "signed.eml"
    proc = _caducee(
        "smime", "sign", "--in", str(message_file), "--out", str(out),
        "--inkey", _key(rsa_card), "--passin", f"file:{pin_file}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"Referral letter" in out.read_bytes()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(rsa_card.ca.certificate.public_bytes(Encoding.PEM))
    proc = _caducee("smime", "verify", "--in", str(out), "--CAfile", str(ca))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("spec", ["pass:0000", "env:WRONG_PIN", "fd:"])
def test_passin_pin_reaches_the_card(rsa_card, message_file, spec) -> None:
    read, write = os.pipe()
    os.write(write, b"0000\n")
    os.close(write)
    if spec == "fd:":
        spec = f"fd:{read}"
    try:
        proc = _caducee(
            "smime", "sign", "--in", str(message_file), "--inkey", _key(rsa_card),
            "--passin", spec, env={"WRONG_PIN": "0000", "CADUCEE_PIN": "1234"},
            pass_fds=(read,),
        )  # fmt: skip
    finally:
        os.close(read)
    # --passin wins over CADUCEE_PIN: its wrong PIN is what the card saw
    assert proc.returncode == 5, proc.stderr
    assert _stderr_line(proc) == "caducee: error: wrong PIN"


def test_passin_decrypts_with_the_card(rsa_card, pin_file, message_file, tmp_path) -> None:
    enc_cert = tmp_path / "enc.pem"
    enc_cert.write_bytes(rsa_card.issued.encryption_certificate.public_bytes(Encoding.PEM))
    wire = _caducee(
        "smime", "encrypt", "--in", str(message_file), "--recip", str(enc_cert),
        "--keyopt", "rsa_oaep_md:sha1",  # what SoftHSM2 decrypts
    )  # fmt: skip
    assert wire.returncode == 0, wire.stderr
    proc = _caducee(
        "smime", "decrypt", "--inkey", rsa_card.uri(), "--passin", f"file:{pin_file}",
        stdin=wire.stdout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert b"Referral letter" in proc.stdout


# -- #9: card messages -------------------------------------------------------------------------


def test_signer_other_than_the_card_certificate_is_refused(
    rsa_card, pki, pin_file, message_file, tmp_path
) -> None:
    other = tmp_path / "bob.pem"
    other.write_bytes(pki.bob.signing.certificate.public_bytes(Encoding.PEM))
    args = ["smime", "sign", "--in", str(message_file), "--inkey", _key(rsa_card)]
    proc = _caducee(*args, "--signer", str(other), "--passin", f"file:{pin_file}")
    assert proc.returncode == 2, proc.stderr
    line = _stderr_line(proc)
    assert line.startswith(f"caducee: error: --signer {other} is not the certificate of the card")
    assert "leave --signer out" in line
    own = tmp_path / "own.pem"
    own.write_bytes(rsa_card.issued.signature_certificate.public_bytes(Encoding.PEM))
    proc = _caducee(*args, "--signer", str(own), "--passin", f"file:{pin_file}")
    assert proc.returncode == 0, proc.stderr


def test_encryption_key_for_signing_is_refused_in_words(rsa_card, pin_file, message_file) -> None:
    proc = _caducee(
        "smime", "sign", "--in", str(message_file), "--inkey", _key(rsa_card, "encryption"),
        "--passin", f"file:{pin_file}",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert _stderr_line(proc) == (
        "caducee: error: the card's 'encryption' key is not for signing: use object=signature "
        "in the key URI"
    )


def test_key_function_not_permitted_is_said_in_words() -> None:
    code = PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED
    named = map_ckr(code, "signing", key_label="encryption")
    assert isinstance(named, CardOperationError)
    assert str(named) == (
        "the card's 'encryption' key is not for signing: use the card's signature key "
        "(object=signature in the key URI)"
    )
    assert str(map_ckr(code, "signing")) == (
        "card refused signing: this key is not allowed to do that (CKR_KEY_FUNCTION_NOT_PERMITTED)"
    )


def test_card_refusal_through_the_key_names_the_key(rsa_card) -> None:
    """The card itself refuses (CKA_SIGN false on the encryption key): no CKR jargon."""
    from caducee.core.algorithms import Digest, SignatureScheme

    card = open_card(rsa_card.uri(), pin_callback=lambda _: "1234")
    try:
        (enc,) = card.decryption_keys()
        with pytest.raises(CardOperationError) as info:
            enc.sign_digest(bytes(32), Digest.SHA256, SignatureScheme.RSA_PKCS1V15)
    finally:
        card.close()
    assert str(info.value).startswith("the card's 'encryption' key is not for signing")


def test_several_cards_name_the_token_option(rsa_card, tmp_path) -> None:
    if subprocess.run(["which", "softhsm2-util"], capture_output=True).returncode:
        pytest.skip("softhsm2-util not installed")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "other",
         "--so-pin", "12345678", "--pin", "1234"],
        capture_output=True, check=True,
    )  # fmt: skip
    proc = _caducee("card", "status")
    assert proc.returncode != 0
    line = _stderr_line(proc)
    assert "several cards match" in line and line.endswith("name one with --token LABEL")
    assert "token=" not in line
    proc = _caducee("smime", "sign", "--inkey", "pkcs11:object=signature", stdin=MESSAGE)
    assert "add token=LABEL to the key URI" in _stderr_line(proc)


def _professional_certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "81012345678"),
            x509.NameAttribute(NameOID.GIVEN_NAME, "Alice"),
            x509.NameAttribute(NameOID.SURNAME, "Martin"),
            x509.NameAttribute(NameOID.TITLE, "General practitioner"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Alice Martin"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def test_card_status_shows_readable_subject_names(rsa_card) -> None:
    cert = _professional_certificate()
    card = open_card(rsa_card.uri(), pin_callback=lambda _: "1234")
    try:
        from caducee.keys.pkcs11 import CardSession

        with CardSession(card.module, card.token, None, rw=True) as rw:
            write_certificate(rw, cert, "extra")
    finally:
        card.close()
    proc = _caducee("card", "status")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "2.5.4." not in text
    assert (
        "CN=Alice Martin,title=General practitioner,surname=Martin,givenName=Alice,"
        "serialNumber=81012345678,C=FR" in text
    )


def test_readable_name_keeps_the_usual_short_names() -> None:
    subject = devpki.make_ca("x").certificate.subject
    assert readable_name(subject) == subject.rfc4514_string()


def test_send_with_a_card_and_no_terminal_refuses(rsa_card, tmp_path) -> None:
    from caducee.config import dump_toml

    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(rsa_card.ca.certificate.public_bytes(Encoding.PEM))
    config = tmp_path / "config.toml"
    config.write_text(
        dump_toml(
            {
                "data_dir": str(tmp_path / "data"),
                "identity": {"email": "martin@op1.test", "card": rsa_card.uri()},
                "trust": {"anchors": [str(anchors)], "fetch_crls": False},
            }
        )
    )
    proc = _caducee(
        "send", "--config", str(config), "--to", "petit@op1.test", "--subject", "Referral",
        stdin=b"1234\nReferral letter.\n",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert _stderr_line(proc) == (
        "caducee: error: a PIN is needed for card 'dr-martin': no terminal to ask on; set "
        "CADUCEE_PIN or add pin-source=file:PATH to the card URI in the configuration"
    )


def _run_on_terminal(args: list[str], stdin_file: Path, answer: bytes, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run caducee with a pseudo-terminal as its controlling terminal, stdin and stdout
    redirected to files; type ``answer`` when it asks for the PIN. Returns (rc, out, err, tty)."""
    master, slave = os.openpty()
    slave_name = os.ttyname(slave)

    def controlling_terminal() -> None:  # in the child, after fork
        os.setsid()
        os.close(os.open(slave_name, os.O_RDWR))  # the first tty opened becomes controlling

    out, err = tmp_path / "tty.out", tmp_path / "tty.err"
    with stdin_file.open("rb") as i, out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*CADUCEE, *args], stdin=i, stdout=o, stderr=e, preexec_fn=controlling_terminal,
            env={k: v for k, v in os.environ.items() if k != "CADUCEE_PIN"},
        )  # fmt: skip
    seen = b""
    try:  # the parent keeps its slave end open: reading the master fails while none is
        while b"PIN for" not in seen or not seen.rstrip().endswith(b":"):
            ready, _, _ = select.select([master], [], [], 60)  # a bound, not a timing check
            if not ready:
                break
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        os.write(master, answer)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(slave)
        os.close(master)
    return rc, out.read_bytes(), err.read_bytes(), seen


def test_pin_is_asked_on_the_terminal_when_stdin_is_the_message(rsa_card, tmp_path) -> None:
    message = tmp_path / "msg.eml"
    message.write_bytes(b"Content-Type: text/plain\n\nReferral letter for Mr Petit.\n")
    rc, out, err, tty = _run_on_terminal(
        ["smime", "sign", "--inkey", _key(rsa_card)], message, b"1234\n", tmp_path
    )
    assert rc == 0, err
    assert b"PIN for card 'dr-martin':" in tty  # asked on the terminal
    assert b"1234" not in tty  # not echoed
    assert b"Referral letter for Mr Petit." in out  # the whole message signed
    assert b"PIN" not in out and b"PIN" not in err  # the prompt is not in the output


def test_smime_help_says_where_the_card_pin_comes_from() -> None:
    from click.testing import CliRunner

    from caducee.cli.smime import group

    for command in ("sign", "decrypt"):
        text = CliRunner().invoke(group, [command, "--help"], terminal_width=200).output
        passin = next(line for line in text.splitlines() if "--passin" in line)
        assert "card PIN" in passin, passin
        assert "CADUCEE_PIN" in text and "pin-source" in text
