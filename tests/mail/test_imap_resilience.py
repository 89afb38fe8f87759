"""ImapMailbox failures a caller must tell apart, and a dropped connection replaced silently.

Defect 3 of the API review: a refused login or an untrusted certificate must say
``needs_fixing`` (as the SMTP errors do), a server that is down must not. Defect 12: a cached
connection the server has dropped (idle timeout, restart) is replaced before the next
operation sends anything, instead of failing that operation once. Real Dovecot throughout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import signal
import time
from collections.abc import Iterator

import imapclient
import pytest

from caducee.mail import imap, servers
from caducee.mail.imap import (
    ImapAuthError,
    ImapMailbox,
    ImapTlsError,
    ImapUidValidityError,
    ImapUnavailableError,
)
from caducee.mail.smtp import SmtpAuthError, SmtpTlsError
from tests.mail.conftest import lmtp_deliver, message

ZOE = "zoe@op9.test"
PASSWORD = "zoe-pw"
DEAD = "cached connection is dead"


def _box(server: servers.DovecotServer, tls: servers.TlsFiles, **kwargs: object) -> ImapMailbox:
    options: dict[str, object] = {
        "username": ZOE,
        "password": PASSWORD,
        "security": "starttls",
        "ssl_context": servers.client_context(tls),
        "timeout": 15,
    }
    options.update(kwargs)
    return ImapMailbox(server.host, server.imap_port, **options)  # type: ignore[arg-type]


def _subjects(messages: list[object]) -> list[bytes]:
    return [m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in messages]  # type: ignore[attr-defined]


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of ``pid`` from /proc, None once it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rpartition(")")[2].split()
    return name, fields[0], int(fields[1])


def _imap_processes(server: servers.DovecotServer) -> list[int]:
    """The Dovecot ``imap`` processes (one per logged-in session) of this server."""
    master = int((server.root / "run" / "master.pid").read_text().strip())
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and info[0] == "imap" and info[2] == master and info[1] != "Z":
                found.append(int(entry.name))
    return found


def _kill_session(server: servers.DovecotServer) -> None:
    """Kill the server side of the one open IMAP session, as a crash or an admin would."""
    (pid,) = _imap_processes(server)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while (info := _proc_stat(pid)) is not None and info[1] not in ("Z", "X"):
        assert time.monotonic() < deadline, "the imap process did not die"
        time.sleep(0.02)


@pytest.fixture
def imap_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="caducee.mail.imap"):
        yield caplog


def _reconnects(caplog: pytest.LogCaptureFixture) -> int:
    return sum(DEAD in r.getMessage() for r in caplog.records)


# --- defect 3: which failures need fixing ------------------------------------------------------


def test_imap_and_smtp_errors_follow_one_rule() -> None:
    for imap_cls, smtp_cls in ((ImapAuthError, SmtpAuthError), (ImapTlsError, SmtpTlsError)):
        assert (imap_cls.needs_fixing, imap_cls.retryable) == (
            smtp_cls.needs_fixing,
            smtp_cls.retryable,
        )
    assert ImapUnavailableError.needs_fixing is False


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"password": "not-the-password"}, "ImapAuthError", "login refused"),
        ({"ssl_context": None}, "ImapTlsError", "certificate not trusted"),  # system CAs only
        ({"security": "tls"}, "ImapTlsError", "starttls"),  # implicit TLS on the STARTTLS port
    ],
)
def test_what_a_retry_cannot_fix_needs_fixing(
    own_dovecot: servers.DovecotServer,
    mail_tls: servers.TlsFiles,
    change: dict[str, object],
    error: str,
    match: str,
) -> None:
    box = _box(own_dovecot, mail_tls, **change)
    with pytest.raises(getattr(imap, error), match=match) as info:
        list(box.fetch_new(None))
    assert info.value.needs_fixing is True


def test_starttls_not_offered_needs_fixing(mail_tls: servers.TlsFiles) -> None:
    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    with servers.DovecotServer({ZOE: PASSWORD}, name="notls") as plain:
        box = _box(plain, mail_tls)
        with pytest.raises(ImapTlsError, match="does not offer STARTTLS") as info:
            list(box.fetch_new(None))
    assert info.value.needs_fixing is True


def test_server_down_does_not_need_fixing(closed_port: int, mail_tls: servers.TlsFiles) -> None:
    box = ImapMailbox(
        "127.0.0.1",
        closed_port,
        username=ZOE,
        password=PASSWORD,
        ssl_context=servers.client_context(mail_tls),
        timeout=5,
    )
    with pytest.raises(ImapUnavailableError, match="connection refused") as info:
        list(box.fetch_new(None))
    assert info.value.needs_fixing is False
    assert info.value.retryable is True


# --- defect 12: a dropped connection is replaced before the next operation ---------------------


@pytest.mark.parametrize("how", ["kill-session", "restart-server"])
def test_next_fetch_after_the_server_dropped_the_connection_succeeds(
    own_dovecot: servers.DovecotServer,
    mail_tls: servers.TlsFiles,
    imap_log: pytest.LogCaptureFixture,
    how: str,
) -> None:
    lmtp_deliver(own_dovecot, ZOE, message("before"))
    # Killing the imap process: its login proxy closes our socket a moment later, so the idle
    # probe is forced. A restart kills every server process first: the socket has ended.
    options = {"probe_after": 0.0} if how == "kill-session" else {}
    with _box(own_dovecot, mail_tls, **options) as box:
        (first,) = list(box.fetch_new(None))
        validity = box.uidvalidity
        if how == "kill-session":
            _kill_session(own_dovecot)
        else:
            own_dovecot.restart()
        lmtp_deliver(own_dovecot, ZOE, message("after"))

        new = list(box.fetch_new(first.uid, uidvalidity=validity))

        assert _subjects(new) == [b"after"]
        assert new[0].uidvalidity == validity
        assert _reconnects(imap_log) == 1  # the old connection was found dead, not reused
        assert _imap_processes(own_dovecot) != []  # and a new session serves us


def test_append_after_a_dropped_connection_is_stored_once(
    own_dovecot: servers.DovecotServer,
    mail_tls: servers.TlsFiles,
    imap_log: pytest.LogCaptureFixture,
) -> None:
    with _box(own_dovecot, mail_tls, mailbox="Sent", probe_after=0.0) as sent:
        assert list(sent.fetch_new(None)) == []
        _kill_session(own_dovecot)
        sent.append(message("my copy"))
        assert _reconnects(imap_log) == 1
        assert _subjects(list(sent.fetch_new(None))) == [b"my copy"]


def test_a_server_that_stays_down_is_still_reported(
    own_dovecot: servers.DovecotServer,
    mail_tls: servers.TlsFiles,
    imap_log: pytest.LogCaptureFixture,
) -> None:
    box = _box(own_dovecot, mail_tls, timeout=5)
    assert list(box.fetch_new(None)) == []
    own_dovecot.stop(cleanup=False)
    with pytest.raises(ImapUnavailableError, match=f"127.0.0.1:{own_dovecot.imap_port}") as info:
        list(box.fetch_new(None))
    assert info.value.needs_fixing is False
    assert _reconnects(imap_log) == 1  # one probe, one connection attempt, then the error
    with pytest.raises(ImapUnavailableError, match="connection refused"):
        box.append(message("not stored"))
    assert _reconnects(imap_log) == 1  # nothing cached any more: no probe, one attempt
    own_dovecot.start()
    assert list(box.fetch_new(None)) == []  # and it comes back by itself
    box.close()


def _renumber(server: servers.DovecotServer, mailbox: str) -> None:
    """Delete and recreate ``mailbox`` from another session: a new UIDVALIDITY."""
    client = imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=15)
    try:
        client.login(ZOE, PASSWORD)
        client.delete_folder(mailbox)
        client.create_folder(mailbox)
        client.append(mailbox, message("a stranger"))
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def test_a_reconnect_notices_a_renumbered_mailbox(
    own_dovecot: servers.DovecotServer, mail_tls: servers.TlsFiles
) -> None:
    boxes = [_box(own_dovecot, mail_tls, mailbox="Archive", create_missing=True) for _ in "ab"]
    boxes[0].append(message("mine"))
    mine = [list(b.fetch_new(None)) for b in boxes]
    old = boxes[0].uidvalidity
    _renumber(own_dovecot, "Archive")
    own_dovecot.restart()  # every cached session is dead now
    fetcher, flagger = boxes

    # The caller's stored UIDVALIDITY is compared with the reopened session's...
    with pytest.raises(ImapUidValidityError, match="UIDVALIDITY changed") as info:
        list(fetcher.fetch_new(mine[0][0].uid, uidvalidity=old))
    assert info.value.expected == old and info.value.found != old

    # ...and an operation naming UIDs of the old numbering is refused before it is sent.
    with pytest.raises(ImapUidValidityError, match="reconnecting"):
        flagger.add_flags([mine[1][0].uid], ["\\Flagged"])
    (stranger,) = list(flagger.fetch_new(None))
    assert _subjects([stranger]) == [b"a stranger"]
    assert "\\Flagged" not in flagger.flags(stranger.uid)
    for box in boxes:
        box.close()
