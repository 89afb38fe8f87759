"""The persistent outbox against real SMTP: nothing queued is lost, refusals are kept as failed."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import stat

import pytest

from caducee.mail import servers
from caducee.mail.api import Envelope
from caducee.mail.imap import ImapMailbox
from caducee.mail.outbox import Outbox, OutboxError
from caducee.mail.smtp import SmtpSubmitter
from tests.mail.conftest import message

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
ZOE = "zoe@op9.test"


def _inbox(server: servers.DovecotServer) -> list[bytes]:
    with ImapMailbox(
        server.host, server.imap_port, username=ZOE, password="zoe-pw", security="none"
    ) as box:
        return [m.data for m in box.fetch_new(None)]


def test_kept_while_smtp_is_down_then_delivered(
    tmp_path: pathlib.Path, own_dovecot: servers.DovecotServer
) -> None:
    relay = servers.LmtpRelay(own_dovecot.host, own_dovecot.lmtp_port, domains=["op9.test"])
    submitter = SmtpSubmitter(relay.host, relay.port, security="none", timeout=5)
    outbox = Outbox(tmp_path / "outbox")
    entry_id = outbox.put(Envelope("a@op1.test", (ZOE,)), message("queued"), now=T0)

    report = outbox.deliver(submitter, now=T0)
    assert report.deferred == [entry_id] and not report.sent
    assert f"127.0.0.1:{relay.port}" in report.errors[entry_id]
    (entry,) = Outbox(tmp_path / "outbox").pending()  # a restarted agent sees it too
    assert entry.attempts == 1 and entry.next_try == T0 + dt.timedelta(minutes=1)
    assert outbox.message(entry_id) == message("queued")

    assert outbox.deliver(submitter, now=T0 + dt.timedelta(seconds=30)).deferred == []
    with relay:
        report = outbox.deliver(submitter, now=T0 + dt.timedelta(minutes=2))
    assert report.sent == [entry_id]
    assert outbox.pending() == [] and outbox.entries() == []
    assert any(b"Subject: queued" in m for m in _inbox(own_dovecot))


def test_backoff_grows_and_is_capped(tmp_path: pathlib.Path, closed_port: int) -> None:
    outbox = Outbox(tmp_path / "o", backoff_max=dt.timedelta(minutes=3))
    entry_id = outbox.put(Envelope("a@op1.test", ("b@op2.test",)), b"x", now=T0)
    submitter = SmtpSubmitter("127.0.0.1", closed_port, security="none", timeout=5)
    delays = []
    now = T0
    for _ in range(4):
        outbox.deliver(submitter, now=now)
        entry = outbox.get(entry_id)
        assert entry.next_try is not None
        delays.append(entry.next_try - now)
        now = entry.next_try
    assert delays == [dt.timedelta(minutes=m) for m in (1, 2, 3, 3)]
    assert outbox.get(entry_id).attempts == 4


def test_hung_server_defers(tmp_path: pathlib.Path, silent_port: int) -> None:
    outbox = Outbox(tmp_path / "o")
    entry_id = outbox.put(Envelope("a@op1.test", ("b@op2.test",)), b"x", now=T0)
    submitter = SmtpSubmitter("127.0.0.1", silent_port, security="none", timeout=0.5)
    assert outbox.deliver(submitter, now=T0).deferred == [entry_id]
    assert "timed out" in (outbox.get(entry_id).last_error or "")


def test_permanent_refusal_is_kept_as_failed(
    tmp_path: pathlib.Path, network: servers.MailNetwork
) -> None:
    outbox = Outbox(tmp_path / "o")
    entry_id = outbox.put(
        Envelope("alice@op1.test", ("nobody@nowhere.test",)), message("bounce"), now=T0
    )
    report = outbox.deliver(network.submitter("alice@op1.test"), now=T0)
    assert report.failed == [entry_id]
    (entry,) = outbox.failed()
    assert entry.state == "failed" and "550" in (entry.last_error or "")
    assert entry.failed_recipients.keys() == {"nobody@nowhere.test"}
    assert outbox.message(entry_id) == message("bounce")  # kept, not deleted
    assert outbox.deliver(network.submitter("alice@op1.test"), now=T0).failed == []
    outbox.retry(entry_id, now=T0)
    assert [e.id for e in outbox.pending()] == [entry_id]


def test_partial_refusal_records_who_got_it(
    tmp_path: pathlib.Path, network: servers.MailNetwork
) -> None:
    outbox = Outbox(tmp_path / "o")
    entry_id = outbox.put(
        Envelope("alice@op1.test", ("bob@op2.test", "ghost@nowhere.test")),
        message("partial outbox"),
        now=T0,
    )
    report = outbox.deliver(network.submitter("alice@op1.test"), now=T0)
    assert report.failed == [entry_id]
    entry = outbox.get(entry_id)
    assert entry.delivered_to == ("bob@op2.test",)
    assert entry.envelope.recipients == ("ghost@nowhere.test",)  # a retry never re-sends to bob
    with network.mailbox("bob@op2.test") as box:
        assert any(b"Subject: partial outbox" in m.data for m in box.fetch_new(None))


def test_files_are_private_and_durable(tmp_path: pathlib.Path) -> None:
    outbox = Outbox(tmp_path / "o")
    entry_id = outbox.put(Envelope("a@op1.test", ("b@op2.test",)), b"ciphertext", now=T0)
    assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o700
    for name in os.listdir(tmp_path / "o"):
        assert stat.S_IMODE((tmp_path / "o" / name).stat().st_mode) == 0o600
    assert {f"{entry_id}.msg", f"{entry_id}.json"} <= set(os.listdir(tmp_path / "o"))
    assert not [n for n in os.listdir(tmp_path / "o") if n.endswith(".tmp")]


def test_corrupt_entry_is_reported_not_skipped(tmp_path: pathlib.Path) -> None:
    outbox = Outbox(tmp_path / "o")
    entry_id = outbox.put(Envelope("a@op1.test", ("b@op2.test",)), b"x", now=T0)
    (tmp_path / "o" / f"{entry_id}.json").write_bytes(b"{not json")
    with pytest.raises(OutboxError, match="corrupt outbox entry"):
        outbox.pending()
    with pytest.raises(OutboxError, match="no entry"):
        outbox.get("nope")
