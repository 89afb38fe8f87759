"""``caducee demo``: two professionals of two operators exchange a signed, encrypted message.

Everything runs on embedded defaults, in memory: two test CAs, two professionals each with a
signature and a separate encryption key pair, one message with an attachment. Only the encrypted
wire message is written (to ``demo-out/``), so it can be fed to ``openssl cms`` or a mail client.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import pathlib

import click
from rich.console import Console

from caducee import devpki, smime
from caducee.core.mime import headers
from caducee.core.policy import choose_encryption
from caducee.errors import CaduceeError

console = Console(highlight=False)


def _step(n: int, text: str) -> None:
    console.print(f"\n[bold cyan]{n}.[/] [bold]{text}[/]")


def _info(text: str) -> None:
    console.print(f"   {text}")


def _letter(sender: str, recipient: str) -> bytes:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Dr Alice <{sender}>"
    msg["To"] = f"Dr Bob <{recipient}>"
    msg["Subject"] = "Lab results for your patient (referral)"
    msg["Date"] = email.utils.format_datetime(smime.now())
    msg["Message-ID"] = email.utils.make_msgid(domain="op1.test")
    msg.set_content(
        "Dear colleague,\n\nPlease find attached the blood test results we discussed.\n\n"
        "Best regards,\nDr Alice\n"
    )
    report = b"%PDF-1.4\n% caducee demo attachment\n" + b"0123456789abcdef" * 4096
    msg.add_attachment(report, maintype="application", subtype="pdf", filename="results.pdf")
    return msg.as_bytes()


@click.command("demo")
@click.option(
    "--out-dir", default="demo-out", show_default=True, help="Where to write the wire message."
)
def command(out_dir: str) -> None:
    """Two professionals on two operators exchange a signed and encrypted message."""
    console.print("[bold]caducee demo[/] — secure S/MIME mail between two operators")

    _step(1, "Each operator runs a certification authority (test CAs, in memory)")
    op1 = devpki.make_ca("caducee Demo Operator 1 CA")
    op2 = devpki.make_ca("caducee Demo Operator 2 CA")
    _info(f"operator 1: {op1.certificate.subject.rfc4514_string()}")
    _info(f"operator 2: {op2.certificate.subject.rfc4514_string()}")

    _step(2, "Each professional gets a signature key pair and a separate encryption key pair")
    alice = devpki.make_identity(op1, "alice@op1.test", name="Dr Alice")
    bob = devpki.make_identity(op2, "bob@op2.test", name="Dr Bob")
    for who in (alice, bob):
        _info(
            f"{who.email}: signature cert serial {who.signing.certificate.serial_number:x}, "
            f"encryption cert serial {who.encryption.certificate.serial_number:x}"
        )

    _step(3, "Dr Alice writes a referral letter with a PDF lab result")
    letter = _letter(alice.email, bob.email)
    _info(f"plain message: {len(letter):,} bytes, 1 attachment (results.pdf)")

    _step(4, "She signs it (signature key) and encrypts it for Dr Bob and for herself")
    choice = choose_encryption(
        [(bob.encryption.certificate, None), (alice.encryption.certificate, None)]
    )
    wire = smime.protect(
        letter,
        signer=alice.signing,
        recipients=list(choice.recipients),
        options=smime.ProtectOptions(cipher=choice.cipher),
    )
    transports = ", ".join(r.key_transport.value for r in choice.recipients)
    _info(f"algorithms: {choice.cipher.label}, key transport {transports}")
    outer, _ = headers.split_message(wire)
    _info(f"wire message: {len(wire):,} bytes; what the network sees of it:")
    for field in outer:
        console.print(f"     [dim]{field.name}:{field.value() and ' ' + field.value()}[/]")
    path = pathlib.Path(out_dir)
    path.mkdir(exist_ok=True)
    (path / "message.eml").write_bytes(wire)
    _info(f"saved the encrypted message to {path / 'message.eml'}")

    _step(5, "Dr Bob opens it with his encryption key, and checks the signature")
    opened = smime.open(wire, keys=[bob.encryption])
    for layer in opened.layers:
        _info(layer.describe())
    signer = opened.signers[0]
    _info(f"protected Subject: {opened.headers.get('subject')!r}")
    verdict = "[green]signed by " if opened.signature_valid else "[red]NOT VALID: "
    _info(f"{verdict}{signer.subject.rfc4514_string()}[/]")
    inner = email.message_from_bytes(opened.entity, policy=email.policy.default)
    for part in inner.walk():
        if part.get_filename():
            size = len(part.get_payload(decode=True) or b"")
            _info(f"attachment: {part.get_filename()} ({part.get_content_type()}, {size:,} bytes)")

    _step(6, "Dr Alice can still read her sent copy (she encrypted for herself too)")
    mine = smime.open(wire, keys=[alice.encryption])
    _info(f"sent copy readable: {mine.headers.get('subject')!r}")

    _step(7, "Someone in between alters one byte: the change is detected")
    tampered = bytearray(wire)
    spot = len(wire) // 2
    while tampered[spot] in b"\r\n":  # change a base64 character of the body, not a line end
        spot += 1
    tampered[spot] = ord("A") if tampered[spot] != ord("A") else ord("B")
    try:
        smime.open(bytes(tampered), keys=[bob.encryption])
        _info("[red]tampering NOT detected[/]")
        raise SystemExit(1)
    except CaduceeError as exc:
        _info(f"[green]refused:[/] {exc}")

    console.print("\n[bold green]Demo complete.[/]")
