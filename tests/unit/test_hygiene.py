"""Nothing caducee hands to a logger or a debugger shows message content, PINs or keys."""

from __future__ import annotations

import datetime as dt
import os

from caducee.core.cms.envelope import Recipient
from caducee.core.message import open_message, protect
from caducee.mail.api import RemoteMessage

SECRET_SUBJECT = "HIV test result"
SECRET_BODY = b"Patient seropositive"
LETTER = (
    f"From: alice@op1.test\r\nTo: bob@op2.test\r\nSubject: {SECRET_SUBJECT}\r\n\r\n".encode()
    + SECRET_BODY
)


def test_reprs_show_no_content(pki) -> None:  # type: ignore[no-untyped-def]
    wire = protect(
        LETTER, signer=pki.alice.signing, recipients=[Recipient(pki.bob.encryption.certificate)],
        signing_time=dt.datetime(2026, 11, 29, tzinfo=dt.UTC), random=os.urandom,
    )  # fmt: skip
    opened = open_message(wire, keys=[pki.bob.encryption])
    shown = " ".join(
        repr(x)
        for x in (
            opened,
            *opened.layers,
            opened.headers,
            *opened.headers.fields,
            RemoteMessage("INBOX", 1, "7", wire),
            pki.bob.encryption,
        )
    )
    assert SECRET_SUBJECT not in shown
    assert SECRET_BODY.decode() not in shown
    assert "PRIVATE KEY" not in shown
    # ...while the values themselves are there for the program
    assert opened.headers.get("subject") == SECRET_SUBJECT
    assert SECRET_BODY in opened.entity
