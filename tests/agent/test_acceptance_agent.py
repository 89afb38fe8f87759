"""Defects found by the acceptance review of 2026-11-29, at the agent level.

Attachment names as other mail programs write them (built by ``openssl cms``, an independent
S/MIME implementation), read receipts for non-ASCII subjects, directories that are down (not the
same as a recipient without a certificate), and header injection through ``send``.
"""

from __future__ import annotations

import base64
import logging
import os
import pathlib
import socket
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from caducee.agent import (
    Agent,
    AgentPolicy,
    Identity,
    RecipientsRefusedError,
    RecipientsUnknownError,
)
from caducee.agent_trust import DirectoryFinder, StaticFinder
from caducee.core.message import protect
from caducee.directory.api import Directory
from caducee.directory.federation import FederatedDirectory
from caducee.directory.http import HttpDirectory
from caducee.directory.ldap import LdapDirectory
from caducee.errors import DirectoryError, UsageError
from caducee.smime import now
from tests.conftest import run

from .conftest import AgentFactory, Operators, Person, PostOffice

PDF = b"%PDF-1.4\n% resultat d'analyse\n" + bytes(range(256))


def _pem_files(person: Person, base: pathlib.Path) -> tuple[str, str]:
    key = base / "sig.key"
    key.write_bytes(
        person.private_keys[0].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    cert = base / "sig.crt"
    cert.write_bytes(person.signing.certificate.public_bytes(serialization.Encoding.PEM))
    return str(cert), str(key)


def _openssl_mail(
    openssl: str, ops: Operators, base: pathlib.Path, disposition: bytes, *, to: Person
) -> bytes:
    """Petit's mail program (openssl cms) sends ``to`` a PDF named as ``disposition`` says."""
    entity = (
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCi-joint.\r\n"
        b"--b1\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: " + disposition + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(PDF).replace(b"\n", b"\r\n")
        + b"--b1--\r\n"
    )
    (base / "entity.eml").write_bytes(entity)
    cert, key = _pem_files(ops.petit, base)
    signed = run([openssl, "cms", "-sign", "-in", str(base / "entity.eml"), "-signer", cert,
                  "-inkey", key, "-md", "sha256"])  # fmt: skip
    (base / "signed.eml").write_bytes(signed)
    recipient = base / "to.crt"
    recipient.write_bytes(to.encryption.certificate.public_bytes(serialization.Encoding.PEM))
    return run([openssl, "cms", "-encrypt", "-in", str(base / "signed.eml"), "-aes256",
                "-from", ops.petit.email, "-to", to.email, "-subject", "analyse",
                "-recip", str(recipient), "-keyopt", "rsa_padding_mode:oaep"])  # fmt: skip


# --- #2 and #11: attachment names -------------------------------------------------------------

NAMES = {
    "raw 8-bit UTF-8": 'attachment; filename="résultat.pdf"'.encode(),
    "RFC 2047 in quotes (Outlook)": b'attachment; filename="=?utf-8?b?csOpc3VsdGF0LnBkZg==?="',
    "RFC 2047 quoted-printable": b'attachment; filename="=?UTF-8?Q?r=C3=A9sultat.pdf?="',
    "RFC 2231": b"attachment; filename*=utf-8''r%C3%A9sultat.pdf",
    "RFC 2231 continued": b"attachment;\r\n filename*0*=utf-8''r%C3%A9; filename*1=sultat.pdf",
}


@pytest.mark.interop
@pytest.mark.parametrize("disposition", NAMES.values(), ids=NAMES.keys())
def test_attachment_names_from_another_mail_program(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    openssl: str,
    disposition: bytes,
) -> None:
    wire = _openssl_mail(openssl, ops, tmp_path, disposition, to=ops.martin)
    post.mailbox(ops.martin.email).deliver(wire)
    martin = make_agent(ops.martin)
    (got,) = martin.fetch().ids
    stored = martin.store.get(got)
    assert (stored.signature, stored.encrypted) == ("valid", True), stored.reason

    view = martin.read(got, send_receipt=True)
    assert view.body.strip() == "Ci-joint."
    assert [(p.filename, p.size) for p in view.parts if p.attachment] == [
        ("résultat.pdf", len(PDF))
    ]
    written = martin.export(got, tmp_path / "out")
    assert [p.name for p in written] == ["résultat.pdf"]
    assert written[0].read_bytes() == PDF


@pytest.mark.interop
def test_attachment_names_are_still_made_safe(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    openssl: str,
) -> None:
    # "../../.bashrc" hidden in an encoded word: decoded, then reduced to a plain name
    hidden = base64.b64encode(b"../../.bashrc").decode()
    disposition = f'attachment; filename="=?utf-8?b?{hidden}?="'.encode()
    post.mailbox(ops.martin.email).deliver(
        _openssl_mail(openssl, ops, tmp_path, disposition, to=ops.martin)
    )
    martin = make_agent(ops.martin)
    (got,) = martin.fetch().ids
    written = martin.export(got, tmp_path / "out")
    assert [p.name for p in written] == ["bashrc"]
    assert written[0].parent == (tmp_path / "out").resolve()


# --- #3: read receipts for non-ASCII subjects, and why one was not sent ------------------------


def test_receipt_sent_for_a_non_ascii_subject(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    sent = martin.send([ops.cardio.email], "Résultat d'échographie", "Voir ci-joint.")
    (got,) = cardio.fetch().ids
    before = len(post.submitted)
    with caplog.at_level(logging.WARNING):
        cardio.read(got, send_receipt=True)
    assert [r.message for r in caplog.records if "receipt" in r.message] == []
    assert len(post.submitted) == before + 1
    assert cardio.store.get(got).mdn_sent == "displayed"
    martin.fetch()
    assert martin.store.get(sent.id).recipients[0].state == "displayed"


def test_a_receipt_not_sent_is_logged_with_its_cause(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # a Message-ID that cannot be quoted in a report (RFC 8098 fields are ASCII)
    msg = (
        "From: cardio@op2.test\r\nTo: martin@op1.test\r\nSubject: x\r\n"
        "Message-ID: <résumé@op2.test>\r\n"
        "Disposition-Notification-To: cardio@op2.test\r\n\r\nhello\r\n"
    ).encode()
    wire = protect(msg, signer=ops.cardio.signing, recipients=[], signing_time=now(),
                   random=os.urandom)  # fmt: skip
    post.mailbox(ops.martin.email).deliver(wire)
    martin = make_agent(ops.martin)
    (got,) = martin.fetch().ids
    assert martin.store.get(got).mdn_requested == "cardio@op2.test"
    with caplog.at_level(logging.WARNING, logger="caducee.agent"):
        martin.read(got, send_receipt=True)
    (line,) = [r.getMessage() for r in caplog.records if "receipt" in r.getMessage()]
    assert line == (
        f"receipt for message {got} not sent:"
        " MDN Original-Message-ID must be printable ASCII on one line"
    )


def test_a_queued_message_is_logged_with_its_cause(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    martin = make_agent(ops.martin)
    post.down = True
    with caplog.at_level(logging.WARNING, logger="caducee.agent"):
        result = martin.send([ops.cardio.email], "x", "y")
    assert result.state == "queued"
    assert [r.getMessage() for r in caplog.records] == [
        "message queued in the outbox: SMTP server 127.0.0.1:1 refused the connection"
    ]


# --- #4: a directory that is down ----------------------------------------------------------------


def _closed_port() -> int:
    """A local port nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["http", "ldap"])
def dead_directory(request: pytest.FixtureRequest) -> Iterator[Directory]:
    port = _closed_port()
    down: Directory
    if request.param == "http":
        down = HttpDirectory(f"http://127.0.0.1:{port}", name="dir2", timeout=5)
    else:
        down = LdapDirectory(f"ldap://127.0.0.1:{port}", "o=op2", name="dir2", timeout=5)
    with FederatedDirectory([down], timeout=10) as federation:
        yield federation


def _agent_with(
    make_agent: AgentFactory, person: Person, directory: Directory, book: StaticFinder
) -> Agent:
    return make_agent(person, finder=DirectoryFinder(directory, book))


def test_directory_down_is_a_directory_error_not_a_missing_certificate(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, dead_directory: Directory
) -> None:
    martin = _agent_with(make_agent, ops.martin, dead_directory, StaticFinder())
    for allow_plaintext in (False, True):
        with pytest.raises(RecipientsUnknownError) as caught:
            martin.send([ops.cardio.email], "x", "y", allow_plaintext=allow_plaintext)
        error = caught.value
        assert isinstance(error, DirectoryError) and error.exit_code == 6
        text = str(error)
        assert "cardio@op2.test" in text and "dir2" in text
        assert "connection refused" in text
        assert "silent" not in text and "plaintext" not in text
    # several recipients behind the same dead directory: the cause is given once
    with pytest.raises(RecipientsUnknownError) as caught:
        martin.send([ops.cardio.email, "nobody@op2.test"], "x", "y")
    assert str(caught.value).count("connection refused") == 1
    assert "cardio@op2.test, nobody@op2.test: dir2 unavailable" in str(caught.value)
    assert post.submitted == []


def test_directory_down_wins_over_a_recipient_without_certificate(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, dead_directory: Directory
) -> None:
    # mallory's certificate is in the address book but not trusted; cardio's is in dir2, down
    book = StaticFinder([ops.mallory.encryption.certificate])
    martin = _agent_with(make_agent, ops.martin, dead_directory, book)
    with pytest.raises(RecipientsUnknownError) as caught:
        martin.send([ops.mallory.email, ops.cardio.email], "x", "y")
    assert caught.value.problems[0][0] == ops.cardio.email
    assert [a for a, _ in caught.value.problems] == [ops.cardio.email]
    # without the unreachable recipient it is the policy refusal, as before
    with pytest.raises(RecipientsRefusedError):
        martin.send([ops.mallory.email], "x", "y")
    assert post.submitted == []


# --- #9: header injection through the library ----------------------------------------------------

INJECTED = ["Hi\nBcc: evil@op2.test", "Hi\r\nX: y", "Hi\rX: y", "Hi\x00"]


@pytest.mark.parametrize("subject", INJECTED)
def test_subject_with_a_line_break_is_a_usage_error(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, subject: str
) -> None:
    martin = make_agent(ops.martin)
    with pytest.raises(UsageError, match=r"the subject contains (a line break|control char)"):
        martin.send([ops.cardio.email], subject, "body")
    assert post.submitted == []


def test_addresses_and_display_name_with_a_line_break_are_usage_errors(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
) -> None:
    martin = make_agent(ops.martin)
    with pytest.raises(UsageError, match=r"recipient address .* contains a line break"):
        martin.send(["cardio@op2.test\r\nBcc: evil@op2.test"], "x", "y")
    with pytest.raises(UsageError, match=r"recipient address .* contains a line break"):
        martin.send([ops.cardio.email], "x", "y", cc=["petit@op1.test\nX: y"])
    named = make_agent(
        ops.martin,
        identity=Identity(
            ops.martin.email,
            ops.martin.signing,
            [ops.martin.encryption],
            display_name="Dr Martin\r\nBcc: evil@op2.test",
        ),
    )
    with pytest.raises(UsageError, match="display name contains a line break"):
        named.send([ops.cardio.email], "x", "y")
    assert post.submitted == []


def test_a_directory_down_does_not_downgrade_a_receipt(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    dead_directory: Directory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The requester's certificate cannot be looked up (directory down): the receipt is not
    sent in clear; it is due, and the next fetch sends it without the message being read
    again."""
    martin = make_agent(ops.martin)
    martin.send([ops.cardio.email], "Résultat", "Voir ci-joint.")
    cardio = _agent_with(make_agent, ops.cardio, dead_directory, StaticFinder())
    (got,) = cardio.fetch().ids
    before = len(post.submitted)
    with caplog.at_level(logging.WARNING, logger="caducee.agent"):
        cardio.read(got, send_receipt=True)
    assert len(post.submitted) == before  # nothing sent, in clear or otherwise
    assert cardio.store.get(got).mdn_sent is None
    assert cardio.store.get(got).mdn_due == "displayed"
    (line,) = [r.getMessage() for r in caplog.records if "receipt" in r.getMessage()]
    assert "dir2" in line and "tried again at each fetch" in line
    assert cardio.fetch().receipts_due == 1  # still down: still due, still nothing sent
    assert len(post.submitted) == before
    back = make_agent(ops.cardio)  # the directory is back (the operators' own)
    report = back.fetch()  # no new mail, no reading: the receipt goes out, encrypted
    assert report.new == 0 and report.receipts_due == 0
    assert len(post.submitted) == before + 1
    stored = back.store.get(got)
    assert stored.mdn_sent == "displayed" and stored.mdn_due is None
    from caducee.core.mime.enveloped import is_enveloped_mime

    assert is_enveloped_mime(post.submitted[-1][1])
    back.fetch()
    assert len(post.submitted) == before + 1  # sent once


def test_processed_receipts_held_back_are_sent_by_the_next_fetch(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    dead_directory: Directory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Receipts on fetch (mdn_on_fetch) with the directory down: the first one waits for the
    directory once, the others are marked due without waiting again; one read meanwhile turns
    its receipt into "displayed"; all go out at the next fetch once the directory answers."""
    martin = make_agent(ops.martin)
    for i in range(3):
        martin.send([ops.cardio.email], f"result {i}", "see attached")
    on_fetch = AgentPolicy(mdn_on_fetch=True)
    cardio = make_agent(
        ops.cardio, finder=DirectoryFinder(dead_directory, StaticFinder()), policy=on_fetch
    )
    before = len(post.submitted)
    with caplog.at_level(logging.WARNING, logger="caducee.agent"):
        report = cardio.fetch()
    assert report.valid == 3 and report.receipts_due == 3
    waits = [r for r in caplog.records if "not sent yet" in r.getMessage()]
    assert len(waits) == 1  # one directory timeout per fetch, not one per message
    assert len(post.submitted) == before
    first = report.ids[0]
    cardio.read(first, send_receipt=True)  # still down: the receipt due becomes "displayed"
    assert cardio.store.receipts_due() == [
        (first, "displayed"), (report.ids[1], "processed"), (report.ids[2], "processed")
    ]  # fmt: skip
    back = make_agent(ops.cardio, policy=on_fetch)
    assert back.fetch().receipts_due == 0
    assert len(post.submitted) == before + 3
    assert [back.store.get(m).mdn_sent for m in report.ids] == [
        "displayed", "processed", "processed"
    ]  # fmt: skip
    mine = make_agent(ops.martin)
    mine.fetch()  # the sender sees each receipt
    states = [dict((r.address, r.state) for r in m.recipients) for m in mine.store.messages("out")]
    assert sorted(s[ops.cardio.email] for s in states) == [
        "displayed", "processed", "processed"
    ]  # fmt: skip
