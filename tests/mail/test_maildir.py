"""Maildir delivery and reading: durable files, stable ordered UIDs, resume, foreign names."""

from __future__ import annotations

import os
import pathlib
import stat
import threading

import pytest

from caducee.mail.api import MailboxRenumberedError
from caducee.mail.maildir import MaildirError, MaildirSource, deliver, ensure_maildir, uid_key
from tests.mail.conftest import message


def test_delivered_files_are_private_and_in_new(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    uid = deliver(box, message("one"))
    path = box / "new" / uid
    assert path.read_bytes() == message("one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sub in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE((box / sub).stat().st_mode) == 0o700
    assert os.listdir(box / "tmp") == []


def test_uids_follow_delivery_order_and_resume_exactly(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    uids = [deliver(box, message(f"m{i}")) for i in range(5)]
    assert uids == sorted(uids, key=uid_key)
    source = MaildirSource(box)
    got = list(source.fetch_new(None))
    assert [m.uid for m in got] == uids
    assert [m.data for m in got] == [message(f"m{i}") for i in range(5)]
    # Resume after the 2nd: exactly the 3 others, whatever instance reads them.
    rest = list(MaildirSource(box).fetch_new(uids[1], uidvalidity=source.uidvalidity))
    assert [m.uid for m in rest] == uids[2:]


def test_uid_is_stable_when_the_message_is_marked_seen(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    uid = deliver(box, message("seen"))
    source = MaildirSource(box)
    source.mark_seen([uid])
    assert not (box / "new" / uid).exists()
    assert (box / "cur" / f"{uid}:2,S").exists()
    (msg,) = list(MaildirSource(box).fetch_new(None))
    assert msg.uid == uid and msg.data == message("seen")


def test_concurrent_deliveries_get_distinct_increasing_uids(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    results: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            uid = deliver(box, message(f"w{n}-{i}"))
            with lock:
                results.append(uid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 40
    assert len(list(MaildirSource(box).fetch_new(None))) == 40


def test_foreign_maildir_names_are_read_and_ordered(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    (box / "cur" / "1700000001.M500000P9.host,S=5:2,S").write_bytes(b"second")
    (box / "new" / "1700000001.M100000P9.host").write_bytes(b"first")
    ours = deliver(box, b"third")
    got = list(MaildirSource(box).fetch_new(None))
    assert [m.data for m in got] == [b"first", b"second", b"third"]
    assert got[1].uid == "1700000001.M500000P9.host,S=5"
    assert got[2].uid == ours


def test_sent_folder_append_is_seen(tmp_path: pathlib.Path) -> None:
    sent = MaildirSource(tmp_path / "Sent", mailbox="Sent")
    sent.append(message("copy"))
    (name,) = os.listdir(tmp_path / "Sent" / "cur")
    assert name.endswith(":2,S")
    (msg,) = list(sent.fetch_new(None))
    assert msg.mailbox == "Sent"


def test_wait_for_new(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    deliver(box, message("old"))
    source = MaildirSource(box, poll_interval=0.05)
    list(source.fetch_new(None))
    assert source.wait_for_new(0.2) is False
    timer = threading.Timer(0.2, deliver, (box, message("new")))
    timer.start()
    try:
        assert source.wait_for_new(30) is True
    finally:
        timer.join()


def test_uidvalidity_is_persistent_and_checked(tmp_path: pathlib.Path) -> None:
    box = tmp_path / "Maildir"
    with pytest.raises(MaildirError, match="no Maildir at"):
        MaildirSource(box).uidvalidity  # noqa: B018 - the property is what is tested
    assert not box.exists()  # asking never creates it
    ensure_maildir(box)
    first = MaildirSource(box).uidvalidity
    assert MaildirSource(box).uidvalidity == first
    with pytest.raises(MailboxRenumberedError, match="UIDVALIDITY changed"):
        list(MaildirSource(box).fetch_new(None, uidvalidity=first + 1))


def test_unwritable_maildir_is_a_transport_error(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(MaildirError, match="cannot create Maildir"):
        deliver(blocker / "Maildir", b"x")
