"""A message moved (or copied) on the server between two fetched folders is stored once: the
second arrival is recorded as a copy (so each folder's position still advances), not listed,
counted or opened again. Real Dovecot, with the move made over IMAP by imapclient."""

from __future__ import annotations

import pathlib
import smtplib
from collections.abc import Iterator

import pytest

from caducee.agent import Agent
from caducee.store.messages import MessageStore

from .conftest import AgentFactory, Operators, PostOffice
from .test_exchange import FIRST_MESSAGES_TABLE, _store_of_an_earlier_version

servers = pytest.importorskip("caducee.mail.servers", reason="mail servers module missing")
imapclient = pytest.importorskip("imapclient", reason="imapclient missing")
from caducee.mail.imap import ImapMailbox  # noqa: E402

PASSWORD = "martin-pw"


@pytest.fixture
def dovecot() -> Iterator[object]:
    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    with servers.DovecotServer({"martin@op1.test": PASSWORD}, name="dup") as server:
        yield server


def _folder(server: object, mailbox: str) -> ImapMailbox:
    return ImapMailbox(
        server.host,  # type: ignore[attr-defined]
        server.imap_port,  # type: ignore[attr-defined]
        username="martin@op1.test",
        password=PASSWORD,
        mailbox=mailbox,
        security="none",
        timeout=15,
        create_missing=mailbox != "INBOX",
    )


def _deliver(server: object, data: bytes) -> None:
    with smtplib.LMTP(server.host, server.lmtp_port, timeout=30) as lmtp:  # type: ignore[attr-defined]
        lmtp.sendmail("cardio@op2.test", ["martin@op1.test"], data)


def _imap(server: object) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=15)  # type: ignore[attr-defined]
    client.login("martin@op1.test", PASSWORD)
    return client


def _martin(make_agent: AgentFactory, ops: Operators, server: object) -> Agent:
    return make_agent(
        ops.martin,
        sources={"inbox": _folder(server, "INBOX"), "referrals": _folder(server, "Referrals")},
    )


def _close(agent: Agent) -> None:
    for source in agent.sources.values():
        source.close()  # type: ignore[attr-defined]


def _written_by_cardio(ops: Operators, post: PostOffice, make_agent: AgentFactory, s: str) -> bytes:
    make_agent(ops.cardio).send(["martin@op1.test"], s, f"body of {s}")
    return post.submitted[-1][1]


@pytest.mark.parametrize("how", ["move", "copy"])
def test_message_moved_between_fetched_folders_is_kept_once(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, dovecot: object, how: str
):
    martin = _martin(make_agent, ops, dovecot)
    try:
        _deliver(dovecot, _written_by_cardio(ops, post, make_agent, "Referral"))
        first = martin.fetch()
        assert (first.new, first.valid, first.already_had) == (1, 1, 0)

        client = _imap(dovecot)
        try:
            client.select_folder("INBOX")
            uids = client.search("ALL")
            assert len(uids) == 1
            if how == "move":
                client.move(uids, "Referrals")
            else:
                client.copy(uids, "Referrals")
        finally:
            client.logout()

        second = martin.fetch()
        assert (second.new, second.already_had) == (0, 1)
        (kept,) = martin.store.messages("in")
        assert kept.id == first.ids[0] and kept.mailbox == "INBOX"
        assert martin.store.count() == 1
    finally:
        _close(martin)


def test_positions_advance_past_the_copy_and_new_mail_still_arrives(
    ops: Operators, post: PostOffice, make_agent: AgentFactory, dovecot: object
):
    martin = _martin(make_agent, ops, dovecot)
    try:
        _deliver(dovecot, _written_by_cardio(ops, post, make_agent, "One"))
        (one,) = martin.fetch().ids
        client = _imap(dovecot)
        try:
            client.select_folder("INBOX")
            client.move(client.search("ALL"), "Referrals")
        finally:
            client.logout()
        assert martin.fetch().already_had == 1
        again = martin.fetch()  # the copy's UID is the Referrals position: not fetched again
        assert (again.new, again.already_had) == (0, 0)
        assert martin.store.last_position("referrals") is not None

        _deliver(dovecot, _written_by_cardio(ops, post, make_agent, "Two"))
        later = martin.fetch()
        assert (later.new, later.valid, later.already_had) == (1, 1, 0)
        assert [m.id for m in martin.store.messages("in")] == [one, *later.ids]
    finally:
        _close(martin)


def test_store_detects_copies_by_bytes_not_by_key(tmp_path: pathlib.Path):
    with MessageStore(tmp_path / "s.sqlite") as store:
        kwargs = {"account": "inbox", "mailbox": "INBOX", "uidvalidity": 1, "outer": {}}
        first = store.add_arrival(uid="1", wire=b"same bytes", **kwargs)  # type: ignore[arg-type]
        assert first.id is not None and first.copy_of is None
        moved = store.add_arrival(  # type: ignore[misc]
            account="referrals", mailbox="Referrals", uidvalidity=7, uid="3",
            wire=b"same bytes", outer={},
        )  # fmt: skip
        assert (moved.id, moved.copy_of) == (None, first.id)
        assert store.add_arrival(uid="1", wire=b"same bytes", **kwargs).copy_of is None  # type: ignore[arg-type]
        other = store.add_arrival(uid="2", wire=b"other bytes", **kwargs)  # type: ignore[arg-type]
        assert other.id is not None
        assert [m.id for m in store.messages("in")] == [first.id, other.id]
        assert store.count() == 2 and store.pending() == [first.id, other.id]
        assert store.last_position("referrals") == ("3", 7)
        with pytest.raises(Exception, match="no message"):
            store.get(first.id + 1)  # the copy's row holds no message to open


def test_store_of_an_earlier_version_recognises_copies_of_what_it_holds(tmp_path: pathlib.Path):
    path = _store_of_an_earlier_version(
        tmp_path,
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, direction TEXT NOT NULL, account TEXT"
        " NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid TEXT NOT NULL,"
        " stored_at TEXT NOT NULL, outer_from TEXT, outer_to TEXT,"
        " outer_subject TEXT, outer_date TEXT, message_id TEXT, status TEXT NOT NULL DEFAULT"
        " 'pending', encrypted INTEGER, signature TEXT, reason TEXT, signer_email TEXT,"
        " signer_subject TEXT, signer_issuer TEXT, signing_time TEXT, verified_at TEXT,"
        " error TEXT, is_mdn INTEGER NOT NULL DEFAULT 0, mdn_requested TEXT, mdn_sent TEXT,"
        " UNIQUE (account, mailbox, uidvalidity, uid))",
        "CREATE TABLE wires (message INTEGER PRIMARY KEY REFERENCES messages (id),"
        " wire BLOB NOT NULL)",
        "INSERT INTO messages (direction, account, mailbox, uidvalidity, uid, stored_at, status)"
        " VALUES ('in', 'inbox', 'INBOX', 1, '7', '2026-01-01T00:00:00+00:00', 'opened')",
        "INSERT INTO wires (message, wire) VALUES (1, x'0102')",
    )
    with MessageStore(path) as store:
        columns = {r[1] for r in store.connection.execute("PRAGMA table_info(messages)")}
        assert {"sha256", "copy_of", "mdn_due"} <= columns
        assert store.receipts_due() == []
        moved = store.add_arrival(
            account="referrals", mailbox="Referrals", uidvalidity=1, uid="1",
            wire=b"\x01\x02", outer={},
        )  # fmt: skip
        assert moved.copy_of == 1
        assert [m.uid for m in store.messages("in")] == ["7"]
    with MessageStore(path) as again:  # opened again: nothing to migrate, nothing lost
        assert again.count() == 1 and again.last_position("referrals") == ("1", 1)


def test_store_from_before_the_wires_table_is_migrated_in_one_go(tmp_path: pathlib.Path):
    path = _store_of_an_earlier_version(
        tmp_path,
        FIRST_MESSAGES_TABLE,
        "INSERT INTO messages (direction, account, mailbox, uidvalidity, uid, stored_at, wire)"
        " VALUES ('in', 'inbox', 'INBOX', 1, '7', '2026-01-01T00:00:00+00:00', x'0a0b')",
    )
    with MessageStore(path) as store:
        moved = store.add_arrival(
            account="inbox", mailbox="Archive", uidvalidity=1, uid="1", wire=b"\x0a\x0b", outer={}
        )
        assert moved.copy_of == 1 and store.count() == 1
