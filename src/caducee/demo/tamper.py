"""Two attacks the demo shows being caught: altered ciphertext, and an altered signed letter.

Why two: authenticated encryption (AES-GCM) catches any change to the encrypted message, so a
message that "cannot be opened" is kept and flagged; but anyone can encrypt to a published
certificate, so the signature is what catches a letter altered before it was encrypted.
"""

from __future__ import annotations

import datetime as dt
import os

from caducee.core.message import protect
from caducee.core.policy import choose_encryption
from caducee.demo.people import Professional
from caducee.demo.relay import OperatorRelay
from caducee.mail.api import Envelope

__all__ = ["flip_ciphertext_byte", "inject", "tampered_copies"]


def flip_ciphertext_byte(wire: bytes) -> bytes:
    """The wire message with one base64 character of its body changed (not a line end)."""
    data = bytearray(wire)
    body = wire.index(b"\r\n\r\n") + 4
    spot = body + (len(wire) - body) // 2
    while data[spot] in b"\r\n=":
        spot += 1
    data[spot] = ord("A") if data[spot] != ord("A") else ord("B")
    return bytes(data)


def _forged(author: Professional, reader: Professional) -> bytes:
    """A letter signed by ``author``, one word changed after signing, encrypted to ``reader``."""
    letter = (
        f"From: {author.label}\r\nTo: {reader.email}\r\n"
        "Subject: Referral (amended)\r\nMessage-ID: <forged-demo@op1.test>\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "Please see this patient within three months.\r\n"
    ).encode()
    now = dt.datetime.now(dt.UTC)
    signing_key = author.keys.signing_key
    assert signing_key is not None
    signed = protect(letter, signer=signing_key, recipients=[], signing_time=now, random=os.urandom)
    altered = signed.replace(b"within three months", b"within three years!")
    if altered == signed:
        raise AssertionError("the demo letter's text was not found in the signed message")
    choice = choose_encryption([(reader.encryption_certificate, None)])
    return protect(
        altered, signer=None, recipients=choice.recipients, signing_time=now, random=os.urandom
    )


def tampered_copies(
    wire: bytes, author: Professional, reader: Professional
) -> list[tuple[str, bytes]]:
    """(what was done, the message as it arrives) for each attack."""
    return [
        (
            "a copy of the referral with one byte of its ciphertext changed",
            flip_ciphertext_byte(wire),
        ),
        (
            "a letter Dr Martin signed, one word changed after signing, then encrypted"
            " to the cardiologist (anyone can encrypt to a published certificate)",
            _forged(author, reader),
        ),
    ]


def inject(relay: OperatorRelay, sender: str, recipient: str, data: bytes) -> None:
    """Deliver ``data`` over SMTP as if it came from ``sender`` (SMTP does not check senders)."""
    relay.submit(Envelope(sender, (recipient,)), data)
