"""The whole path across two operators: S/MIME sign+encrypt -> SMTP submission (STARTTLS+AUTH)
-> operator 1 relays to operator 2's MX -> LMTP -> Dovecot -> IMAP fetch -> decrypt+verify."""

from __future__ import annotations

import pytest

from caducee import smime
from caducee.mail import servers
from caducee.mail.api import Envelope
from tests.conftest import TestPKI as PKI
from tests.conftest import pem_cert, pem_key, run


def test_signed_encrypted_message_crosses_operators(network: servers.MailNetwork, pki: PKI) -> None:
    plain = (
        b"From: alice@op1.test\r\nTo: bob@op2.test\r\nSubject: exam result\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Creatinine 82 umol/L.\r\n"
    )
    wire = smime.protect(
        plain,
        signer=pki.alice.signing,
        recipients=[
            smime.Recipient(pki.bob.encryption.certificate),
            smime.Recipient(pki.alice.encryption.certificate),
        ],
    )
    with network.mailbox("bob@op2.test") as inbox:
        start = [m.uid for m in inbox.fetch_new(None)]
        network.submitter("alice@op1.test").submit(
            Envelope("alice@op1.test", ("bob@op2.test",)), wire
        )
        (received,) = list(inbox.fetch_new(start[-1] if start else None))
    assert b"Creatinine" not in received.data  # nobody in between can read it
    opened = smime.open(received.data, keys=[pki.bob.encryption])
    assert opened.encrypted and opened.signed and opened.signature_valid
    assert b"Creatinine 82 umol/L." in opened.entity
    assert opened.signers[0] == pki.alice.signing.certificate

    with network.mailbox("alice@op1.test", "Sent") as sent:
        sent.append(wire)
        copies = list(sent.fetch_new(None))
    assert smime.open(copies[-1].data, keys=[pki.alice.encryption]).signature_valid


@pytest.mark.interop
def test_cardless_openssl_user_writes_and_reads_through_the_servers(
    network: servers.MailNetwork, pki: PKI, openssl: str, files
) -> None:
    """Dave (op2) has no card and uses plain `openssl cms`; Carol (op1) uses caducee."""
    plain = (
        b"From: dave@op2.test\r\nTo: carol@op1.test\r\nSubject: from openssl\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nreferral letter\r\n"
    )
    d_sig_cert = files("d-sig.pem", pem_cert(pki.dave.signing.certificate))
    d_sig_key = files("d-sig.key", pem_key(pki.dave.signing._key))
    c_enc_cert = files("c-enc.pem", pem_cert(pki.carol.encryption.certificate))
    signed = run(
        [openssl, "cms", "-sign", "-signer", d_sig_cert, "-inkey", d_sig_key, "-md", "sha256"],
        data=plain,
    )
    wire = run([openssl, "cms", "-encrypt", "-aes-256-gcm", c_enc_cert], data=signed)
    with network.mailbox("carol@op1.test") as inbox:
        start = [m.uid for m in inbox.fetch_new(None)]
        network.submitter("dave@op2.test").submit(
            Envelope("dave@op2.test", ("carol@op1.test",)), wire
        )
        (received,) = list(inbox.fetch_new(start[-1] if start else None))
    opened = smime.open(received.data, keys=[pki.carol.encryption])
    assert opened.encrypted and opened.signature_valid
    assert b"referral letter" in opened.entity

    # And back: caducee writes, openssl reads what came out of Dave's IMAP mailbox.
    reply = smime.protect(
        b"From: carol@op1.test\r\nTo: dave@op2.test\r\nSubject: re\r\n\r\nthanks\r\n",
        signer=pki.carol.signing,
        recipients=[smime.Recipient(pki.dave.encryption.certificate)],
    )
    with network.mailbox("dave@op2.test") as inbox:
        start = [m.uid for m in inbox.fetch_new(None)]
        network.submitter("carol@op1.test").submit(
            Envelope("carol@op1.test", ("dave@op2.test",)), reply
        )
        (back,) = list(inbox.fetch_new(start[-1] if start else None))
    d_enc_cert = files("d-enc.pem", pem_cert(pki.dave.encryption.certificate))
    d_enc_key = files("d-enc.key", pem_key(pki.dave.encryption._key))
    inner = run(
        [openssl, "cms", "-decrypt", "-recip", d_enc_cert, "-inkey", d_enc_key],
        data=back.data,
    )
    ca = files("ca.pem", pem_cert(pki.ca.certificate))
    text = run([openssl, "cms", "-verify", "-CAfile", ca, "-purpose", "any"], data=inner)
    assert b"thanks" in text
