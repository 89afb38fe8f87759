"""End-to-end exchange across two operators: send, fetch, read, receipts, refusals."""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy
import os
import pathlib
import sqlite3

import pytest

from caducee.agent import Attachment, RecipientsRefusedError
from caducee.mail.api import Envelope
from caducee.mail.smtp import SmtpRejectedError
from caducee.store.messages import MessageStore

from .conftest import AgentFactory, Operators, PostOffice

BODY = "Résultat: troponine 0,02 ng/mL — normal. Confidential-Marker-7731"
PDF = b"%PDF-1.4\n% fake lab result\n" + bytes(range(256)) * 4


def test_send_fetch_read_verified(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    sent = martin.send(
        ["cardio@op2.test"],
        "Bilan patient X",
        BODY,
        attachments=[Attachment("resultat.pdf", PDF)],
    )
    assert sent.state == "sent" and sent.encrypted
    wire = post.submitted[0][1]
    assert b"Confidential-Marker-7731" not in wire and b"Bilan patient X" not in wire
    assert b"Subject: [...]" in wire

    report = cardio.fetch()
    assert (report.new, report.valid, report.flagged, report.failed) == (1, 1, 0, 0)
    view = cardio.read(report.ids[0], send_receipt=True)
    assert view.body.strip() == BODY
    assert view.headers["subject"] == "Bilan patient X"
    assert view.headers_protected
    assert view.security.startswith("signed by Alice Martin <martin@op1.test>")
    assert "identity checked by Operator One Health CA" in view.security
    assert view.security.endswith("; encrypted")
    (att,) = [p for p in view.parts if p.attachment]
    assert (att.filename, att.content_type, att.size) == (
        "resultat.pdf",
        "application/pdf",
        len(PDF),
    )

    # the sender's own copy is readable (encrypted to the sender too)
    own = martin.read(sent.id, send_receipt=True)
    assert own.body.strip() == BODY
    assert own.recipients == (("cardio@op2.test", "sent"),)


def test_receipt_round_trip(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    sent = martin.send(["cardio@op2.test"], "Lettre", "Bonjour")
    (got,) = cardio.fetch().ids
    assert cardio.store.get(got).mdn_requested == "martin@op1.test"
    assert martin.read(sent.id, send_receipt=True).recipients == (("cardio@op2.test", "sent"),)

    cardio.read(got, send_receipt=True)  # displaying it sends a signed, encrypted receipt
    assert cardio.store.get(got).mdn_sent == "displayed"
    receipt_wire = post.mailbox("martin@op1.test").messages[-1].data
    assert b"application/pkcs7-mime" in receipt_wire or b"application/pkcs7-mime" in (
        receipt_wire.lower()
    )
    report = martin.fetch()
    assert report.receipts == 1 and report.valid == 1
    assert martin.store.get(sent.id).recipients[0].state == "displayed"
    # reading again does not send a second receipt
    before = len(post.submitted)
    cardio.read(got, send_receipt=True)
    assert len(post.submitted) == before
    events = [e.event for e in cardio.audit.entries(got)]
    assert events.count("read") == 2 and events.count("mdn-sent") == 1


def test_forged_receipt_is_ignored(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    martin, cardio, petit = make_agent(ops.martin), make_agent(ops.cardio), make_agent(ops.petit)
    sent = martin.send(["cardio@op2.test"], "Lettre", "Bonjour")
    # Dr Petit (validly signed, but not the recipient) claims cardio displayed it
    from caducee.core import mdn

    fake = mdn.build_mdn(
        original_message_id=sent.message_id,
        original_subject="x",
        from_address="petit@op1.test",
        to_address="martin@op1.test",
        final_recipient="cardio@op2.test",
        disposition="displayed",
        manual=True,
        date="Mon, 1 Jan 2024 00:00:00 +0000",
        message_id="<fake@op1.test>",
        boundary="b1",
    )
    wire = petit._protect(fake, [ops.martin.encryption.certificate], encrypt=True)
    post.mailbox("martin@op1.test").deliver(wire)
    martin.fetch()
    assert martin.store.get(sent.id).recipients[0].state == "sent"
    assert cardio is not None


def test_unknown_and_untrusted_recipients_refused_before_sending(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    with pytest.raises(RecipientsRefusedError) as caught:
        martin.send(["cardio@op2.test", "nobody@op2.test", "mallory@op2.test"], "S", "B")
    text = str(caught.value)
    assert "nobody@op2.test: no certificate" in text
    assert "mallory@op2.test" in text
    assert "cardio@op2.test" not in text
    assert [a for a, _ in caught.value.problems] == ["nobody@op2.test", "mallory@op2.test"]
    assert caught.value.reasons == {"nobody@op2.test": "no-certificate",
                                    "mallory@op2.test": "untrusted"}  # fmt: skip
    assert caught.value.details == {"reasons": caught.value.reasons}  # in --json
    # the way out named for each kind of problem; never sending patient data in clear
    assert "check the address, or ask them to publish their certificate" in text
    assert "their CA is not trusted here" in text and "ask your administrator" in text
    assert "plaintext" not in text
    assert post.submitted == [] and martin.store.count() == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("CertificateRevokedError", "revoked"),
        ("ExpiredError", "expired"),
        ("NoDistributionPointError", "revocation-unknown"),
        ("CrlSignatureError", "revocation-unknown"),
        ("WrongUsageError", "not-for-encryption"),
        ("EmailMismatchError", "address-mismatch"),
        ("UnknownCAError", "untrusted"),
        ("InvalidCertificateError", "untrusted"),
    ],
)
def test_each_validation_failure_has_a_reason_code(error: str, code: str):
    from caducee import agent
    from caducee.pki import errors

    kind = getattr(errors, error)
    failure = kind.__new__(kind)  # the code depends on the class alone
    Exception.__init__(failure, "why")
    assert agent._reason_code(failure) == code and code in agent.REASON_CODES


def test_allow_plaintext_sends_signed_only(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    sent = martin.send(["cardio@op2.test", "nobody@op2.test"], "S", BODY, allow_plaintext=True)
    assert not sent.encrypted and sent.warning and "NOT ENCRYPTED" in sent.warning
    assert b"application/pkcs7-mime" not in post.submitted[0][1]
    cardio = make_agent(ops.cardio)
    report = cardio.fetch()
    assert report.flagged == 1
    view = cardio.read(report.ids[0], send_receipt=True)
    assert view.security.startswith("signed by Alice Martin")
    assert view.security.endswith("NOT ENCRYPTED")


def test_policy_can_forbid_plaintext(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    from caducee.agent import AgentPolicy
    from caducee.errors import PolicyError

    martin = make_agent(ops.martin, policy=AgentPolicy(allow_plaintext=False))
    with pytest.raises(PolicyError, match="forbidden by this installation"):
        martin.send(["nobody@op2.test"], "S", "B", allow_plaintext=True)
    assert post.submitted == []


def test_transport_down_queues_then_retries(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    post.down = True
    sent = martin.send(["cardio@op2.test"], "S", "B")
    assert sent.state == "queued" and "refused the connection" in (sent.warning or "")
    assert martin.store.get(sent.id).recipients[0].state == "queued"
    assert len(martin.store.outbox()) == 1
    assert martin.retry_outbox() == (0, 1)
    assert martin.store.outbox()[0].attempts == 2
    post.down = False
    assert martin.retry_outbox() == (1, 0)
    assert martin.store.outbox() == []
    assert martin.store.get(sent.id).recipients[0].state == "sent"
    cardio = make_agent(ops.cardio)
    assert cardio.fetch().valid == 1


def _iso(start: dt.datetime, minutes: int) -> str:
    return (start + dt.timedelta(minutes=minutes)).isoformat(timespec="seconds")


def test_outbox_waits_longer_after_each_failure(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    now = [start]
    martin = make_agent(ops.martin, clock=lambda: now[0])
    post.down = True
    sent = martin.send(["cardio@op2.test"], "S", "B")
    (item,) = martin.store.outbox()
    assert (item.attempts, item.next_attempt_at) == (1, _iso(start, minutes=1))
    assert martin.retry_outbox(due_only=True) == (0, 1)  # not due: not even tried
    assert martin.store.outbox()[0].attempts == 1
    now[0] += dt.timedelta(minutes=1)
    assert martin.retry_outbox(due_only=True) == (0, 1)  # due, still down: waits 2 minutes
    item = martin.store.outbox()[0]
    assert (item.attempts, item.next_attempt_at) == (2, _iso(start, minutes=3))
    for _ in range(12):  # many failures: never more than an hour apart
        martin.retry_outbox()
    last = dt.datetime.fromisoformat(martin.store.outbox()[0].next_attempt_at or "")
    assert last - now[0] == dt.timedelta(hours=1)
    post.down = False
    assert martin.retry_outbox(due_only=True) == (0, 1)
    assert martin.retry_outbox() == (1, 0)  # the user asked: tried now
    assert martin.store.get(sent.id).recipients[0].state == "sent"


#: The messages table as the first versions wrote it (the wire bytes in the row).
FIRST_MESSAGES_TABLE = (
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, direction TEXT NOT NULL, account TEXT"
    " NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid TEXT NOT NULL,"
    " stored_at TEXT NOT NULL, wire BLOB NOT NULL, outer_from TEXT, outer_to TEXT,"
    " outer_subject TEXT, outer_date TEXT, message_id TEXT, status TEXT NOT NULL DEFAULT"
    " 'pending', encrypted INTEGER, signature TEXT, reason TEXT, signer_email TEXT,"
    " signer_subject TEXT, signer_issuer TEXT, signing_time TEXT, verified_at TEXT,"
    " error TEXT, is_mdn INTEGER NOT NULL DEFAULT 0, mdn_requested TEXT, mdn_sent TEXT,"
    " UNIQUE (account, mailbox, uidvalidity, uid))"
)


def _store_of_an_earlier_version(tmp_path: pathlib.Path, *statements: str) -> pathlib.Path:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    for statement in statements:
        old.execute(statement)
    old.commit()
    old.close()
    return path


def test_store_of_an_earlier_version_gains_the_retry_column(tmp_path: pathlib.Path):
    path = _store_of_an_earlier_version(
        tmp_path,
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, message INTEGER, sender TEXT NOT NULL,"
        " recipients TEXT NOT NULL, wire BLOB NOT NULL, queued_at TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)",
        "INSERT INTO outbox (sender, recipients, wire, queued_at, attempts)"
        " VALUES ('a@op1.test', 'b@op2.test', x'00', '2026-01-01T00:00:00+00:00', 3)",
    )
    with MessageStore(path) as store:
        (item,) = store.outbox()
        assert (item.attempts, item.next_attempt_at) == (3, None)
        store.outbox_narrow(item.id, ["b@op2.test"], "down", "2026-01-01T00:08:00+00:00")
        assert store.outbox()[0].next_attempt_at == "2026-01-01T00:08:00+00:00"


def test_store_of_an_earlier_version_keeps_its_messages(tmp_path: pathlib.Path):
    path = _store_of_an_earlier_version(
        tmp_path,
        FIRST_MESSAGES_TABLE,
        "INSERT INTO messages (direction, account, mailbox, uidvalidity, uid, stored_at, wire)"
        " VALUES ('in', 'imap', 'INBOX', 1, '7', '2026-01-01T00:00:00+00:00', x'0102')",
    )
    with MessageStore(path) as store:
        (kept,) = store.messages("in")
        assert (kept.uid, kept.wire, kept.status) == ("7", b"\x01\x02", "pending")
        assert store.last_uid("imap") == "7"
        columns = {r[1] for r in store.connection.execute("PRAGMA table_info(messages)")}
        assert "wire" not in columns
        new = store.add_received(
            account="imap", mailbox="INBOX", uidvalidity=1, uid="8", wire=b"w", outer={}
        )
        assert new is not None and store.get(new).wire == b"w"
    with MessageStore(path) as again:  # opened again: nothing to move, nothing lost
        assert [m.wire for m in again.messages("in")] == [b"\x01\x02", b"w"]


def test_new_store_has_pages_sized_for_whole_messages(tmp_path: pathlib.Path):
    with MessageStore(tmp_path / "new.sqlite") as store:
        assert store.connection.execute("PRAGMA page_size").fetchone()[0] == 16384
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    old = _store_of_an_earlier_version(tmp_path, "CREATE TABLE t (x)")  # 4 KiB pages
    with MessageStore(old) as store:  # opened as it is: the page size of a WAL store is fixed
        assert store.connection.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_no_signing_key_still_reads(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    from caducee.agent import Identity
    from caducee.errors import PolicyError

    make_agent(ops.cardio).send(["martin@op1.test"], "S", "weekend results")
    lost_card = Identity("martin@op1.test", None, [ops.martin.encryption])
    martin = make_agent(ops.martin, identity=lost_card)
    (got,) = martin.fetch().ids
    assert martin.read(got, send_receipt=True).body.strip() == "weekend results"
    with pytest.raises(PolicyError, match="cannot sign"):
        martin.send(["cardio@op2.test"], "S", "B")


class _Refusing:
    """A server that takes the message for some recipients and refuses others (RCPT replies)."""

    def __init__(self, post: PostOffice, refusals: dict[str, tuple[int, str]]) -> None:
        self.post = post
        self.refusals = refusals

    def submit(self, envelope: Envelope, message: bytes) -> None:
        refused = {r: self.refusals[r] for r in envelope.recipients if r in self.refusals}
        accepted = tuple(r for r in envelope.recipients if r not in refused)
        if accepted:
            self.post.submit(Envelope(envelope.sender, accepted), message)
        if refused:
            temporary = all(400 <= code < 500 for code, _ in refused.values())
            raise SmtpRejectedError(
                f"refused {', '.join(refused)}", refused=refused, accepted=accepted,
                retryable=temporary,
            )  # fmt: skip


def _states(agent, message: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r.address: r.state for r in agent.store.get(message).recipients}


def test_partly_refused_message_is_retried_only_for_the_refused(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    server = _Refusing(post, {"petit@op1.test": (450, "mailbox busy, try later")})
    martin = make_agent(ops.martin, submitter=server)
    sent = martin.send(["cardio@op2.test", "petit@op1.test"], "S", "B")
    assert sent.state == "queued" and "petit@op1.test" in (sent.warning or "")
    assert _states(martin, sent.id) == {"cardio@op2.test": "sent", "petit@op1.test": "queued"}
    assert martin.store.outbox()[0].recipients == ("petit@op1.test",)
    server.refusals.clear()
    assert martin.retry_outbox() == (1, 0)
    assert _states(martin, sent.id) == {"cardio@op2.test": "sent", "petit@op1.test": "sent"}
    # the cardiologist got it once, not twice
    assert [e.recipients for e, _ in post.submitted] == [("cardio@op2.test",), ("petit@op1.test",)]
    assert make_agent(ops.cardio).fetch().new == 1


def test_permanent_refusal_of_one_recipient_is_final_for_that_one_only(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    server = _Refusing(post, {"petit@op1.test": (550, "no such user")})
    martin = make_agent(ops.martin, submitter=server)
    sent = martin.send(["cardio@op2.test", "petit@op1.test"], "S", "B")
    assert sent.state == "sent" and "refused for some recipients" in (sent.warning or "")
    assert _states(martin, sent.id) == {"cardio@op2.test": "sent", "petit@op1.test": "rejected"}
    assert martin.store.outbox() == []


def _parts(message: bytes) -> list[tuple[list[tuple[str, str]], bytes | None]]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return [
        (
            [(k, str(v)) for k, v in part.items() if not k.lower().startswith("content-type")]
            + [("type", part.get_content_type()), ("filename", str(part.get_filename()))],
            part.get_payload(decode=True),
        )
        for part in parsed.walk()
        if not part.is_multipart()
    ]


def test_attachments_are_coded_as_the_email_package_codes_them(
    ops: Operators, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    attachments = [
        Attachment("compte-rendu échographie.pdf", os.urandom(57 * 40 + 13)),
        Attachment("empty.bin", b""),
        Attachment("scan.dcm", os.urandom(300_000), "application/dicom"),
        Attachment("notes.txt", b"potassium 4,1 mmol/l\n"),
    ]
    built = martin._build_mime(
        ["cardio@op2.test"], [], "Résultats", "Voir les pièces jointes.", attachments,
        "<x@op1.test>", True,
    )  # fmt: skip
    reference = email.message.EmailMessage(policy=email.policy.SMTP)
    for name, value in email.message_from_bytes(built, policy=email.policy.SMTP).items():
        if not name.lower().startswith(("content-", "mime-")):
            reference[name] = value
    reference.set_content("Voir les pièces jointes.")
    for att, (maintype, subtype) in zip(
        attachments[:3], [("application", "pdf"), ("application", "octet-stream"),
                          ("application", "dicom")], strict=True,
    ):  # fmt: skip
        reference.add_attachment(att.data, maintype, subtype, filename=att.filename)
    reference.add_attachment(b"potassium 4,1 mmol/l\n", "text", "plain", filename="notes.txt")
    assert _parts(built) == _parts(reference.as_bytes())
    assert b"\r\n" in built and b"\n" not in built.replace(b"\r\n", b"")  # CRLF throughout
    lines = built.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78


def test_text_attachments_arrive_byte_for_byte(
    ops: Operators, make_agent: AgentFactory, tmp_path: pathlib.Path
):
    """A lab's ISO-8859-1 file (HPRIM), LF or CRLF line ends: exported as they were sent;
    the charset is named only when the bytes say it."""
    files = {
        "hprim.hpr": ("text/plain", "H|Résultat : hémoglobine 13,2 g/dl\n".encode("latin-1")),
        "notes.txt": (None, "créatinine 80 µmol/l\nà revoir\n".encode()),
        "report.csv": ("text/csv", b"code;value\r\nK;4.1\r\n"),
    }
    martin = make_agent(ops.martin)
    attachments = [Attachment(name, data, ctype) for name, (ctype, data) in files.items()]
    martin.send(["cardio@op2.test"], "Résultats", "Voir les pièces jointes.",
                attachments=attachments)  # fmt: skip
    cardio = make_agent(ops.cardio)
    (got,) = cardio.fetch().ids
    written = cardio.export(got, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in written} == {n: d for n, (_, d) in files.items()}
    opened = cardio._reopen(cardio.store.get(got))
    parsed = email.message_from_bytes(opened.entity, policy=email.policy.default)
    charsets = {p.get_filename(): p.get_param("charset") for p in parsed.iter_attachments()}
    assert charsets == {"hprim.hpr": None, "notes.txt": "utf-8", "report.csv": "us-ascii"}


def test_an_agent_may_be_called_from_other_threads_one_call_at_a_time(
    ops: Operators, make_agent: AgentFactory
):
    """A web framework's worker threads, run_in_executor: calls from any thread work (they
    are serialized); after the store is closed, a caducee error says so."""
    import concurrent.futures

    from caducee.store.messages import NoSuchMessageError, StoreError

    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sends = [pool.submit(martin.send, ["cardio@op2.test"], f"r{i}", "b") for i in range(8)]
        assert sorted(f.result().state for f in sends) == ["sent"] * 8
        fetched = pool.submit(cardio.fetch).result()
        reads = [pool.submit(cardio.read, i) for i in fetched.ids]
        assert sorted(f.result().headers["subject"] for f in reads) == [f"r{i}" for i in range(8)]
    with pytest.raises(NoSuchMessageError) as missing:
        cardio.read(9999)
    assert missing.value.exit_code == 9
    cardio.store.close()
    with pytest.raises(StoreError, match="is closed"):
        cardio.fetch()
    cardio.store.close()  # again: nothing happens


def test_a_listing_does_not_hold_every_message_s_bytes(ops: Operators, make_agent: AgentFactory):
    """`caducee inbox` after a year of PDFs must not load gigabytes: a listed message's wire
    bytes are read from the store when asked for."""
    from caducee.store.messages import StoreError

    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    for i in range(2):
        martin.send(["cardio@op2.test"], f"r{i}", "b", attachments=[Attachment("a.pdf", b"%PDF")])
    cardio.fetch()
    first, second = cardio.store.messages("in")
    assert first.wire == cardio.store.get(first.id).wire and b"smime.p7m" in first.wire
    assert "wire" not in repr(first)
    cardio.store.close()
    with pytest.raises(StoreError, match="is closed"):
        second.wire  # noqa: B018 - never read while listing
