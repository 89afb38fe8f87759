"""Bad input and faults: tampering, wrong keys, garbage, crashes, hostile HTML and file names."""

from __future__ import annotations

import email.message
import email.policy
import multiprocessing
import os
import pathlib
import socket
import stat

import pytest

from caducee.agent import AgentPolicy, Attachment, FetchIncompleteError, UnopenedMessageError
from caducee.core.message import protect
from caducee.mail.imap import ImapMailbox, ImapUnavailableError
from caducee.smime import now
from caducee.store.messages import MessageStore

from .conftest import AgentFactory, Operators, PostOffice

SECRET = "Secret-Body-Marker-5521 diagnostic"


def _signed_html(ops: Operators, html: str) -> bytes:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "cardio@op2.test"
    msg["To"] = "martin@op1.test"
    msg["Subject"] = "html only"
    msg["Message-ID"] = "<html1@op2.test>"
    msg.set_content(html, subtype="html")
    return protect(
        msg.as_bytes(),
        signer=ops.cardio.signing,
        recipients=[],
        signing_time=now(),
        random=os.urandom,
    )


def test_tampered_message_flagged_invalid_but_kept(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    sender, martin = make_agent(ops.cardio), make_agent(ops.martin)
    sender.send(["martin@op1.test"], "S", "original text", allow_plaintext=False)
    box = post.mailbox("martin@op1.test")
    # signed-only message with its text changed in transit
    sender.send(["martin@op1.test", "nobody@op2.test"], "S", "pay 100 EUR", allow_plaintext=True)
    remote = box.messages[-1]
    box.messages[-1] = type(remote)(
        remote.mailbox, remote.uidvalidity, remote.uid, remote.data.replace(b"100", b"900")
    )
    report = martin.fetch()
    assert (report.new, report.valid, report.flagged, report.failed) == (2, 1, 1, 0)
    bad = martin.store.get(report.ids[1])
    assert bad.signature == "invalid" and bad.status == "opened"
    view = martin.read(bad.id)
    assert view.security.startswith("SIGNATURE BROKEN: ")
    assert "900" in view.body  # shown, but clearly marked


def test_untrusted_signer_and_from_mismatch(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    # mallory's CA is not trusted
    mallory = make_agent(ops.mallory)
    mallory.send(["martin@op1.test"], "S", "hello")
    # petit signs but claims to be cardio in From
    msg = b"From: cardio@op2.test\r\nTo: martin@op1.test\r\nSubject: x\r\n\r\nhi\r\n"
    forged = protect(
        msg,
        signer=ops.petit.signing,
        recipients=[],
        signing_time=now(),
        random=os.urandom,
    )
    post.mailbox("martin@op1.test").deliver(forged)
    report = martin.fetch()
    first, second = (martin.store.get(i) for i in report.ids)
    # an intact signature whose signer cannot be checked is not a broken one
    assert first.signature == "untrusted" and "not trusted" in (first.reason or "")
    assert martin.security_summary(first).startswith(
        "SIGNED, BUT THE SIGNER'S IDENTITY IS NOT CHECKED: signer not trusted"
    )
    assert second.signature == "invalid"  # a valid signature claiming someone else: forged
    assert "claims to be from cardio@op2.test" in (second.reason or "")
    assert martin.security_summary(second).startswith("SIGNATURE BROKEN: ")
    assert report.valid == 0 and report.flagged == 2


def test_undecryptable_and_malformed_kept_among_good(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    box = post.mailbox("martin@op1.test")
    cardio.send(["martin@op1.test"], "1", "first good")
    # the same message delivered twice (a server-side copy): kept once
    box.deliver(post.submitted[-1][1])
    # encrypted for someone else (Dr Cardio), but delivered to Dr Martin's mailbox
    make_agent(ops.petit).send(["cardio@op2.test"], "x", "not for martin")
    box.deliver(post.submitted[-1][1])
    box.deliver(b"\x00\xff garbage \r\n\r\n")
    box.deliver(
        b"From: a@b.test\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nTUlJQ\r\n"
    )
    box.deliver(b"From: plain@op2.test\r\nSubject: hi\r\n\r\nplain text mail\r\n")
    cardio.send(["martin@op1.test"], "2", "last good")
    report = martin.fetch()
    assert (report.new, report.already_had) == (6, 1)
    rows = [martin.store.get(i) for i in report.ids]
    assert [r.status for r in rows] == [
        "opened", "failed", "failed", "failed", "opened", "opened",
    ]  # fmt: skip
    assert rows[1].error and rows[1].encrypted
    assert rows[2].error and rows[3].error
    assert rows[4].signature == "unsigned" and rows[4].encrypted is False
    assert martin.read(rows[5].id).body.strip() == "last good"
    assert martin.security_summary(rows[4]) == "NOT SIGNED; NOT ENCRYPTED"
    assert martin.security_summary(rows[1]).startswith("COULD NOT BE OPENED")
    assert rows[1].wire == box.messages[2].data  # kept as received, never deleted
    # the API says why, with what can still be shown, instead of decrypting in vain again
    for call in (martin.read, lambda i: martin.export(i, "/nonexistent/never-created")):
        with pytest.raises(UnopenedMessageError) as caught:
            call(rows[1].id)
        assert caught.value.exit_code == 3
        assert str(caught.value).startswith(f"message {rows[1].id} COULD NOT BE OPENED: ")
        assert caught.value.details["headers"]["from"] == "petit@op1.test"


def test_crash_mid_fetch_then_refetch(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    for i in range(5):
        cardio.send(["martin@op1.test"], f"m{i}", f"body {i}")
    box = post.mailbox("martin@op1.test")
    box.crash_after = 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        martin.fetch()
    assert martin.store.count() == 3
    box.crash_after = None
    report = martin.fetch()
    assert report.new == 2
    rows = martin.store.messages("in")
    assert [r.uid for r in rows] == ["1", "2", "3", "4", "5"]
    # the server forgets what we fetched (e.g. flags lost): a full re-fetch still adds nothing
    assert martin.store.last_uid("imap") == "5"
    for remote in box.fetch_new(None):
        assert (
            martin.store.add_received(
                account="imap",
                mailbox=remote.mailbox,
                uidvalidity=remote.uidvalidity,
                uid=remote.uid,
                wire=remote.data,
                outer={},
            )
            is None
        )
    assert martin.store.count() == 5


def test_pending_message_is_judged_on_next_fetch(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    cardio.send(["martin@op1.test"], "x", "y")
    remote = post.mailbox("martin@op1.test").messages[0]
    # stored, then the process died before opening it
    stored = martin.store.add_received(
        account="imap", mailbox="INBOX", uidvalidity=1, uid="1", wire=remote.data, outer={}
    )
    assert stored is not None and martin.store.get(stored).status == "pending"
    report = martin.fetch()
    assert report.ids == [stored] and martin.store.get(stored).signature == "valid"
    assert martin.store.count() == 1


def test_html_body_never_fetches_remote_content(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    html = (
        "<html><head><style>p{}</style><script>fetch('http://evil.test/x')</script></head>"
        '<body><p>Bonjour <b>Docteur</b></p><img src="http://tracker.test/pixel.gif">'
        '<a href="https://lab.test/r/42">résultat</a></body></html>'
    )
    post.mailbox("martin@op1.test").deliver(_signed_html(ops, html))
    (got,) = martin.fetch().ids
    view = martin.read(got)
    assert view.body_type == "text/html (shown as text)"
    assert "Bonjour Docteur" in view.body and "<" not in view.body and "fetch(" not in view.body
    assert "remote content (not loaded): http://tracker.test/pixel.gif" in view.links
    assert "link: https://lab.test/r/42" in view.links


def test_export_refuses_path_traversal(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, tmp_path: pathlib.Path
):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    cardio.send(
        ["martin@op1.test"],
        "files",
        "see attached",
        attachments=[
            Attachment("../../../../tmp/evil.sh", b"#!/bin/sh\n"),
            Attachment("..", b"dots"),
            Attachment("rapport.pdf", b"%PDF-1.4"),
            Attachment("rapport.pdf", b"%PDF-1.4 second"),
        ],
    )
    (got,) = martin.fetch().ids
    out = tmp_path / "export"
    written = martin.export(got, out)
    names = sorted(p.name for p in written)
    assert names == ["attachment-3", "evil.sh", "rapport-1.pdf", "rapport.pdf"]
    for path in written:
        assert path.parent == out.resolve()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path.parent / "evil.sh").exists()
    assert [e.event for e in martin.audit.entries(got)] == ["exported"]


def test_store_is_private_and_holds_no_plaintext(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    cardio.send(["martin@op1.test"], "Sujet-Confidentiel-9913", SECRET)
    (got,) = martin.fetch().ids
    martin.read(got)
    martin.export(got, martin.store.path.parent / "out")
    for store in (martin.store, cardio.store):
        store.connection.execute("PRAGMA wal_checkpoint(FULL)")
        path = store.path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for companion in path.parent.glob(path.name + "*"):
            assert stat.S_IMODE(companion.stat().st_mode) == 0o600
            data = companion.read_bytes()
            assert b"Secret-Body-Marker-5521" not in data
            assert b"Sujet-Confidentiel-9913" not in data


def test_audit_log_is_append_only(ops: Operators, make_agent: AgentFactory):
    import sqlite3

    martin = make_agent(ops.martin)
    martin.audit.record("read", 1, detail="x")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        martin.store.connection.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        martin.store.connection.execute("UPDATE audit SET event = 'sent'")
    assert len(martin.audit.entries()) == 1


PARALLEL_AFTER = 6  # a small backlog for the test: workers start after that many


def test_backlog_opened_by_workers_gives_the_same_verdicts(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(
        ops.martin, policy=AgentPolicy(fetch_workers=1, fetch_workers_after=PARALLEL_AFTER)
    )
    cardio, petit = make_agent(ops.cardio), make_agent(ops.petit)
    box = post.mailbox("martin@op1.test")
    for i in range(PARALLEL_AFTER + 4):
        cardio.send(["martin@op1.test"], f"m{i}", f"body {i}")
    box.deliver(b"\x00\xff garbage \r\n\r\n")
    petit.send(["cardio@op2.test"], "x", "not for martin")
    box.deliver(post.submitted[-1][1])
    for i in range(3):
        cardio.send(["martin@op1.test"], f"late{i}", f"late {i}")
    box.crash_after = len(box.messages) - 2  # the server goes away before the last two
    workers_seen = []

    def progress(_: int) -> None:
        workers_seen.append(
            sum(p.name == "caducee-opener" for p in multiprocessing.active_children())
        )

    with pytest.raises(RuntimeError, match="simulated crash"):
        martin.fetch(progress)
    assert max(workers_seen) == 1  # the backlog went to a worker
    stored = martin.store.messages("in")
    assert len(stored) == len(box.messages) - 2
    assert all(m.status != "pending" for m in stored)  # all read before the crash are judged
    box.crash_after = None
    report = martin.fetch()
    assert report.new == 2
    rows = martin.store.messages("in")
    statuses = [(r.status, r.signature) for r in rows]
    good = ("opened", "valid")
    assert statuses[: PARALLEL_AFTER + 4] == [good] * (PARALLEL_AFTER + 4)
    assert statuses[PARALLEL_AFTER + 4][0] == "failed"  # garbage
    assert statuses[PARALLEL_AFTER + 5][0] == "failed"  # not for martin
    assert statuses[-3:] == [good] * 3
    assert martin.read(rows[-1].id).body.strip() == "late 2"


def test_only_what_the_server_still_holds_is_written_without_a_sync(tmp_path: pathlib.Path):
    store = MessageStore(tmp_path / "messages.sqlite")
    db = store.connection

    def mode() -> int:
        return int(db.execute("PRAGMA synchronous").fetchone()[0])

    assert mode() == 2  # FULL: every commit synced
    trace: list[str] = []
    db.set_trace_callback(trace.append)
    stored = store.add_received(
        account="imap", mailbox="INBOX", uidvalidity=1, uid="1", wire=b"x", outer={}
    )
    assert stored is not None
    store.record_verdict(stored, status="failed", encrypted=False, signature=None, error="x")
    store.queue(None, "a@op1.test", ["b@op2.test"], b"wire", "server down")
    with pytest.raises(RuntimeError), store.transaction(recoverable=True):
        raise RuntimeError("rolled back")
    db.set_trace_callback(None)
    store.close()
    synced = True
    written = {}
    for sql in trace:
        if sql.startswith("PRAGMA synchronous="):
            synced = sql.endswith("FULL")
        for what in ("INSERT OR IGNORE INTO messages", "UPDATE messages SET status",
                     "INSERT INTO outbox"):  # fmt: skip
            if sql.startswith(what):
                written[what] = synced
    assert written == {
        "INSERT OR IGNORE INTO messages": False,  # fetched again after a power cut
        "UPDATE messages SET status": False,  # judged again
        "INSERT INTO outbox": True,  # exists nowhere else
    }
    assert synced  # back to FULL, even after a rollback


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("dead_first", [True, False])
def test_a_mailbox_down_does_not_stop_the_others(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, dead_first: bool
) -> None:
    """One of two mailboxes refuses connections: the other is still read; what it brought is
    stored, judged and reported (in the error, which names the dead mailbox)."""
    cardio = make_agent(ops.cardio)
    cardio.send(["martin@op1.test"], "result", "body")
    dead = ImapMailbox(
        "127.0.0.1", _closed_port(), username="martin@op1.test", password="pw",
        security="none", timeout=5,
    )  # fmt: skip
    live = post.mailbox("martin@op1.test")
    sources = {"dead": dead, "imap": live} if dead_first else {"imap": live, "dead": dead}
    martin = make_agent(ops.martin, sources=sources)
    with pytest.raises(FetchIncompleteError) as caught:
        martin.fetch()
    error = caught.value
    assert error.exit_code == 7 and not error.needs_fixing and error.retryable
    assert [name for name, _ in error.failures] == ["dead"]
    assert isinstance(error.failures[0][1], ImapUnavailableError)
    assert str(error).endswith("connection refused (server down?); 1 new message(s) from the"
                               " other mailboxes were stored")  # fmt: skip
    report = error.report
    assert (report.new, report.valid) == (1, 1) and len(report.ids) == 1
    assert martin.store.get(report.ids[0]).status == "opened"
    assert error.details["ids"] == report.ids  # --json prints it with the error
    with pytest.raises(FetchIncompleteError) as again:  # nothing new: nothing claimed
        martin.fetch()
    assert again.value.report.new == 0 and "were stored" not in str(again.value)
