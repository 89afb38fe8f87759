"""ImapMailbox against a real Dovecot: UIDs, resume after a crash, IDLE, flags, APPEND, faults."""

from __future__ import annotations

import os
import threading

import pytest

from caducee.mail import servers
from caducee.mail.imap import (
    PROCESSED,
    ImapAuthError,
    ImapError,
    ImapMailbox,
    ImapTlsError,
    ImapUidValidityError,
    ImapUnavailableError,
)
from tests.mail.conftest import lmtp_deliver, message

ZOE = "zoe@op9.test"


def _box(server: servers.DovecotServer, tls: servers.TlsFiles, **kwargs: object) -> ImapMailbox:
    options: dict[str, object] = {
        "username": ZOE,
        "password": "zoe-pw",
        "security": "starttls",
        "ssl_context": servers.client_context(tls),
        "timeout": 15,
    }
    options.update(kwargs)
    return ImapMailbox(server.host, server.imap_port, **options)  # type: ignore[arg-type]


def test_fetch_new_sees_submitted_mail_over_starttls(network: servers.MailNetwork) -> None:
    with network.mailbox("alice@op1.test") as box:
        known = [m.uid for m in box.fetch_new(None)]
        network.submitter("bob@op2.test").submit(
            _env("bob@op2.test", "alice@op1.test"), message("imap sees it")
        )
        new = list(box.fetch_new(known[-1] if known else None))
        assert len(new) == 1
        assert b"Subject: imap sees it" in new[0].data
        assert new[0].mailbox == "INBOX" and new[0].uidvalidity == box.uidvalidity
        assert int(new[0].uid) > max((int(u) for u in known), default=0)


def test_implicit_tls_login(network: servers.MailNetwork) -> None:
    op = network.operator("op1.test")
    with ImapMailbox(
        op.dovecot.host,
        op.dovecot.imaps_port,
        username="carol@op1.test",
        password="carol-pw",
        security="tls",
        ssl_context=network.ssl_context(),
    ) as box:
        assert box.uidvalidity > 0


@pytest.mark.parametrize("prefetch", [False, True])
def test_resume_after_crash_mid_fetch_no_duplicate_no_loss(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles, prefetch: bool
) -> None:
    for i in range(7):
        lmtp_deliver(own_dovecot, ZOE, message(f"m{i}"))
    box = _box(own_dovecot, mail_tls, batch_count=3)
    stream = box.fetch_new(None, prefetch=prefetch)
    got = [next(stream), next(stream), next(stream), next(stream)]
    committed = got[:3]  # the 4th was fetched but the process "crashed" before storing it
    validity = box.uidvalidity
    stream.close()  # the process dies: its generator and connection with it
    box._drop()

    again = _box(own_dovecot, mail_tls)
    rest = list(again.fetch_new(committed[-1].uid, uidvalidity=validity))
    again.close()
    uids = [m.uid for m in committed + rest]
    assert len(uids) == len(set(uids)) == 7
    subjects = [m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in committed + rest]
    assert subjects == [f"m{i}".encode() for i in range(7)]


@pytest.mark.parametrize("default", [False, True])
def test_prefetch_default_is_the_mailboxs(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles, default: bool
) -> None:
    for i in range(5):
        lmtp_deliver(own_dovecot, ZOE, message(f"p{i}"))
    with _box(own_dovecot, mail_tls, batch_count=2, prefetch=default) as box:
        seen = []
        for remote in box.fetch_new(None):  # the caller does not say: the mailbox decides
            names = {t.name for t in threading.enumerate()}
            seen.append(any(n.startswith("caducee-imap-prefetch") for n in names))
            assert b"Subject: p" in remote.data
        assert any(seen) is default
        assert len(seen) == 5


def test_uidvalidity_change_is_reported(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    with _box(own_dovecot, mail_tls) as box:
        with pytest.raises(ImapUidValidityError, match="UIDVALIDITY changed") as info:
            list(box.fetch_new("5", uidvalidity=box.uidvalidity + 1))
        assert info.value.found == box.uidvalidity


@pytest.mark.parametrize("prefetch", [False, True])
def test_hostile_messages_do_not_stop_the_fetch(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles, prefetch: bool
) -> None:
    odd = [
        message("before"),
        b"this is not a MIME message at all, no headers, no blank line",
        b"Subject: \xff\xfe\x80 eight-bit garbage\r\nContent-Type: multipart/mixed\r\n\r\n"
        + os.urandom(2000).replace(b"\r", b"").replace(b"\n", b"")
        + b"\r\n",
        message("big", b"A" * 76 + b"\r\n") * 1 + (b"B" * 998 + b"\r\n") * 5300,  # ~5 MB
        b'Content-Type: multipart/signed; boundary="x"\r\n\r\n--x\r\n--x--\r\n--x\r\n',
        message("after"),
    ]
    for data in odd:
        lmtp_deliver(own_dovecot, ZOE, data)
    with _box(own_dovecot, mail_tls, batch_bytes=1024 * 1024) as box:
        got = list(box.fetch_new(None, prefetch=prefetch))
    assert len(got) == len(odd)
    for sent, fetched in zip(odd, got, strict=True):
        # Dovecot prepends Return-Path/Delivered-To (and may normalise line ends).
        assert sent[:40] in fetched.data
    assert len(got[3].data) > 5_000_000


def test_flags_and_keywords(own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles) -> None:
    lmtp_deliver(own_dovecot, ZOE, message("flag me"))
    with _box(own_dovecot, mail_tls) as box:
        (msg,) = list(box.fetch_new(None))
        assert "\\Seen" not in box.flags(msg.uid)  # BODY.PEEK leaves it unread
        box.mark_seen([msg.uid])
        box.mark_processed([msg.uid])
        assert {"\\Seen", PROCESSED} <= set(box.flags(msg.uid))


def test_append_to_sent_creates_and_fills_it(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    with pytest.raises(ImapError, match="no such mailbox"):
        _box(own_dovecot, mail_tls, mailbox="Archive/Sent copies").append(message("x"))
    with _box(own_dovecot, mail_tls, mailbox="Archive/Sent copies", create_missing=True) as sent:
        sent.append(message("my sent copy"))
        (copy,) = list(sent.fetch_new(None))
        assert b"Subject: my sent copy" in copy.data
        assert "\\Seen" in sent.flags(copy.uid)


def test_wait_for_new_wakes_up_on_delivery_with_idle(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    with _box(own_dovecot, mail_tls) as box:
        assert list(box.fetch_new(None)) == []
        assert box.wait_for_new(0.3) is False
        timer = threading.Timer(0.3, lmtp_deliver, (own_dovecot, ZOE, message("wake up")))
        timer.start()
        try:
            assert box.wait_for_new(60) is True
        finally:
            timer.join()
        (msg,) = list(box.fetch_new(None))
        assert b"wake up" in msg.data
        # Already there before the wait started: no need to IDLE at all.
        lmtp_deliver(own_dovecot, ZOE, message("already there"))
        assert box.wait_for_new(60) is True


def test_a_new_session_resuming_with_nothing_new_waits(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    """`caducee agent` starts a session that resumes after the last stored UID: mail already
    had is not new (it used to return at once, and the agent loop spun)."""
    lmtp_deliver(own_dovecot, ZOE, message("had before"))
    with _box(own_dovecot, mail_tls) as first:
        last = list(first.fetch_new(None))[-1].uid
    with _box(own_dovecot, mail_tls) as box:
        assert list(box.fetch_new(last)) == []
        assert box.wait_for_new(0.3) is False


def test_imap_down_is_a_transport_error(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    box = _box(own_dovecot, mail_tls, timeout=5)
    own_dovecot.stop(cleanup=False)
    with pytest.raises(ImapUnavailableError, match=f"127.0.0.1:{own_dovecot.imap_port}"):
        list(box.fetch_new(None))
    own_dovecot.start()
    assert list(box.fetch_new(None)) == []  # reconnects by itself
    box.close()


def test_connection_lost_mid_session(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    box = _box(own_dovecot, mail_tls, timeout=5)
    assert box.uidvalidity > 0
    own_dovecot.stop(cleanup=False)
    with pytest.raises(ImapUnavailableError):
        list(box.fetch_new(None))
    own_dovecot.start()
    box.close()


def test_wrong_password(own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles) -> None:
    box = _box(own_dovecot, mail_tls, password="not-the-password")
    with pytest.raises(ImapAuthError, match=r"login refused for zoe@op9\.test") as info:
        list(box.fetch_new(None))
    assert "not-the-password" not in str(info.value) + repr(box)


def test_untrusted_certificate(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    box = _box(own_dovecot, mail_tls, ssl_context=None)
    with pytest.raises(ImapTlsError, match="certificate not trusted"):
        list(box.fetch_new(None))


def test_hung_server_times_out(silent_port: int) -> None:
    box = ImapMailbox(
        "127.0.0.1", silent_port, username="u", password="p", security="starttls", timeout=0.5
    )
    with pytest.raises(ImapUnavailableError, match="timed out"):
        list(box.fetch_new(None))


def _env(sender: str, *rcpts: str):  # type: ignore[no-untyped-def]
    from caducee.mail.api import Envelope

    return Envelope(sender, rcpts)


def test_server_dies_during_a_prefetching_fetch(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    for i in range(6):
        lmtp_deliver(own_dovecot, ZOE, message(f"p{i}"))
    box = _box(own_dovecot, mail_tls, batch_count=2, timeout=5)
    got = []
    with pytest.raises(ImapUnavailableError):
        for msg in box.fetch_new(None, prefetch=True):
            got.append(msg)
            if len(got) == 1:
                own_dovecot.stop(cleanup=False)
    assert 1 <= len(got) < 6
    own_dovecot.start()
    with _box(own_dovecot, mail_tls) as again:
        rest = list(again.fetch_new(got[-1].uid))
    assert [m.uid for m in got + rest] == sorted({m.uid for m in got + rest}, key=int)
    assert len(got + rest) == 6
