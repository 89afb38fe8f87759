"""Waiting on a Maildir says "new" only for mail after what was fetched; a missing Maildir is an
error, never created by reading (acceptance defects #1 and #8 of 2026-11-29).

Real Maildirs in tmp_path; other writers are real other processes renaming files into new/.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING

import pytest

from caducee.mail.maildir import MaildirError, MaildirSource, deliver, ensure_maildir
from tests.conftest import pem_cert, pem_key
from tests.mail.conftest import message

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from tests.conftest import TestPKI

SHORT = 0.3  # seconds: long enough for several polls, no timing is asserted


def _age(box: pathlib.Path) -> None:
    """Make new/ and cur/ look untouched for an hour, so the "unchanged" shortcut is used."""
    past = os.stat(box / "new").st_mtime_ns - 3600 * 10**9
    for sub in ("new", "cur"):
        os.utime(box / sub, ns=(past, past))


def _other_process_delivers(box: pathlib.Path, data: bytes) -> None:
    """Another program's delivery: written in tmp/, then renamed into new/ (foreign name)."""
    script = textwrap.dedent(
        """
        import os, sys, time
        box, data = sys.argv[1], sys.argv[2].encode()
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}.otherhost"
        with open(os.path.join(box, "tmp", name), "wb") as out:
            out.write(data)
        os.rename(os.path.join(box, "tmp", name), os.path.join(box, "new", name))
        """
    )
    subprocess.run([sys.executable, "-c", script, str(box), data.decode()], check=True, timeout=60)


@pytest.fixture
def box(tmp_path: pathlib.Path) -> pathlib.Path:
    """A non-empty Maildir: three messages, one of them already seen (in cur/)."""
    path = tmp_path / "Maildir"
    uids = [deliver(path, message(f"old{i}")) for i in range(3)]
    MaildirSource(path).mark_seen(uids[:1])
    return path


def _resumed(box: pathlib.Path) -> tuple[MaildirSource, str]:
    """A fresh source (a new agent process) resuming after the last message it stored; and the
    UID of that message."""
    last = list(MaildirSource(box).fetch_new(None))[-1]
    source = MaildirSource(box, poll_interval=0.05)
    assert list(source.fetch_new(last.uid, uidvalidity=last.uidvalidity)) == []
    return source, last.uid


def test_a_fresh_process_with_nothing_new_waits(box: pathlib.Path) -> None:
    source, _ = _resumed(box)
    assert source.wait_for_new(SHORT) is False
    _age(box)
    assert source.wait_for_new(SHORT) is False


def test_nothing_left_after_fetching_everything(box: pathlib.Path) -> None:
    source = MaildirSource(box, poll_interval=0.05)
    assert source.wait_for_new(SHORT) is True  # never fetched: everything is new
    got = list(source.fetch_new(None))
    assert len(got) == 3
    assert source.wait_for_new(SHORT) is False
    # Flagging what was fetched moves files between new/ and cur/: nothing new for all that.
    source.mark_seen([m.uid for m in got])
    assert source.wait_for_new(SHORT) is False


def test_our_delivery_is_new_until_fetched(box: pathlib.Path) -> None:
    source, last = _resumed(box)
    _age(box)
    assert source.wait_for_new(SHORT) is False
    uid = deliver(box, message("fresh"))
    _age(box)
    assert source.wait_for_new(SHORT) is True
    assert source.wait_for_new(SHORT) is True  # not fetched yet: still new, asked again
    (got,) = list(source.fetch_new(last))
    assert got.uid == uid
    assert source.wait_for_new(SHORT) is False


def test_another_process_renaming_into_new_wakes_a_waiter(box: pathlib.Path) -> None:
    source, last = _resumed(box)
    _age(box)
    assert source.wait_for_new(SHORT) is False  # remembers the quiet, aged directories
    _other_process_delivers(box, b"Subject: from elsewhere\r\n\r\nhello\r\n")
    assert source.wait_for_new(SHORT) is True
    (got,) = list(source.fetch_new(last))
    assert got.uid.endswith(".otherhost") and got.data.endswith(b"hello\r\n")
    assert source.wait_for_new(SHORT) is False


def test_a_delivery_during_the_wait_ends_it(box: pathlib.Path) -> None:
    source, _ = _resumed(box)
    _age(box)
    timer = threading.Timer(0.2, deliver, (box, message("while waiting")))
    timer.start()
    try:
        assert source.wait_for_new(60) is True
    finally:
        timer.join()


def test_a_missing_maildir_is_an_error_and_is_not_created(tmp_path: pathlib.Path) -> None:
    typo = tmp_path / "Mialdir"
    source = MaildirSource(typo)
    expected = f"^no Maildir at {re.escape(str(typo))}: it does not exist$"
    with pytest.raises(MaildirError, match=expected):
        list(source.fetch_new("1", uidvalidity=1))
    with pytest.raises(MaildirError, match="no Maildir at"):
        source.wait_for_new(SHORT)
    assert not typo.exists()
    typo.mkdir()  # a directory, but not a Maildir (e.g. its parent was configured)
    with pytest.raises(MaildirError, match="no new/ and cur/"):
        list(source.fetch_new(None))
    assert os.listdir(typo) == []


def test_an_empty_maildir_created_on_purpose_reads_as_empty(tmp_path: pathlib.Path) -> None:
    source = MaildirSource(ensure_maildir(tmp_path / "Maildir"), poll_interval=0.05)
    assert list(source.fetch_new(None)) == []
    assert source.wait_for_new(SHORT) is False


def _config(tmp_path: pathlib.Path, pki: TestPKI, maildir: pathlib.Path) -> pathlib.Path:
    alice = pki.alice
    files = {
        "sign.key": pem_key(alice.signing._key),
        "sign.crt": pem_cert(alice.signing.certificate),
        "enc.key": pem_key(alice.encryption._key),
        "enc.crt": pem_cert(alice.encryption.certificate),
        "ca.pem": pem_cert(pki.ca.certificate),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{tmp_path / "data"}"

            [identity]
            email = "{alice.email}"
            signing_key = "sign.key"
            signing_cert = "sign.crt"
            decryption_key = "enc.key"
            decryption_cert = "enc.crt"

            [trust]
            anchors = ["ca.pem"]
            fetch_crls = false

            [[maildir]]
            name = "maildir"
            path = "{maildir}"
            """
        )
    )
    return config


def test_cli_fetch_names_the_missing_maildir(tmp_path: pathlib.Path, pki: TestPKI) -> None:
    good = tmp_path / "Maildir"
    deliver(good, message("one"))
    config = _config(tmp_path, pki, good)
    cli = [sys.executable, "-c", "from caducee.cli.main import main; main()"]
    first = subprocess.run(
        [*cli, "fetch", "--config", str(config), "--json"], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    # Then the path in the configuration gets a typo: the store still has a resume point.
    typo = tmp_path / "nonexistent" / "Maildir"
    config.write_text(config.read_text().replace(f'"{good}"', f'"{typo}"'))
    done = subprocess.run([*cli, "fetch", "--config", str(config)], capture_output=True, text=True)
    assert done.returncode == 7, done.stderr
    assert done.stderr == f"caducee: error: no Maildir at {typo}: it does not exist\n"
    assert "renumbered" not in done.stderr + done.stdout
    assert not typo.parent.exists()


def test_the_agent_loop_waits_on_every_source(tmp_path: pathlib.Path) -> None:
    """`caducee agent` with two accounts: mail arriving on the second one ends the wait (it
    used to wait on the first source only, until the next interval)."""
    import types

    from caducee.cli.mail import _wait

    first, second = ensure_maildir(tmp_path / "a"), ensure_maildir(tmp_path / "b")
    agent = types.SimpleNamespace(sources={"a": MaildirSource(first), "b": MaildirSource(second)})
    for source in agent.sources.values():
        assert list(source.fetch_new(None)) == []
    stop = threading.Event()
    assert _wait(agent, 0.5, stop, {}) is False
    deliver(second, message("on the second account"))
    assert _wait(agent, 30, stop, {}) is True


def test_cli_fetch_reads_every_mailbox_when_one_is_missing(
    tmp_path: pathlib.Path, pki: TestPKI
) -> None:
    """Two Maildirs, the first one mistyped: the second is still read and stored, the command
    says what it fetched, then fails (exit 7) naming the missing one; with --json the error
    object carries the whole report."""
    good = tmp_path / "Maildir"
    deliver(good, message("one"))
    typo = tmp_path / "nonexistent" / "Maildir"
    config = _config(tmp_path, pki, good)
    text = config.read_text()
    config.write_text(
        text.replace(
            "[[maildir]]", f'[[maildir]]\nname = "typo"\npath = "{typo}"\n\n[[maildir]]', 1
        )
    )
    cli = [sys.executable, "-c", "from caducee.cli.main import main; main()"]
    done = subprocess.run([*cli, "fetch", "--config", str(config)], capture_output=True, text=True)
    assert done.returncode == 7, done.stderr
    assert done.stdout.startswith("1 new: ")
    assert done.stderr == (
        f"caducee: error: no Maildir at {typo}: it does not exist;"
        " 1 new message(s) from the other mailboxes were stored\n"
    )
    deliver(good, message("two"))
    as_json = subprocess.run(
        [*cli, "fetch", "--config", str(config), "--json"], capture_output=True, text=True
    )
    assert as_json.returncode == 7
    import json

    report = json.loads(as_json.stdout)
    assert report["exit_code"] == 7 and report["new"] == 1 and len(report["ids"]) == 1
    assert report["failures"] == [
        {"source": "typo", "error": f"no Maildir at {typo}: it does not exist"}
    ]


def test_the_agent_loop_does_not_retry_a_refused_password_every_few_seconds(
    tmp_path: pathlib.Path,
) -> None:
    """A source whose login is refused is asked once per wait, then paused (the server may
    lock the account after a few failures); a Maildir next to it is still watched."""
    import types

    from caducee.cli.mail import PAUSE_NEEDS_FIXING, _wait
    from caducee.mail import servers
    from caducee.mail.imap import ImapMailbox

    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    with servers.DovecotServer({"martin@op1.test": "right"}, name="pause") as server:
        refused = ImapMailbox(
            server.host, server.imap_port, username="martin@op1.test", password="wrong",
            security="none", timeout=5,
        )  # fmt: skip
        box = ensure_maildir(tmp_path / "Maildir")
        agent = types.SimpleNamespace(sources={"imap": refused, "local": MaildirSource(box)})
        paused: dict[str, float] = {}
        assert _wait(agent, 12, threading.Event(), paused) is False  # about 5 turns each
        assert set(paused) == {"imap"} and paused["imap"] > PAUSE_NEEDS_FIXING / 2
        assert server.log_text().count("auth failed") == 1
        deliver(box, message("local mail"))
        assert _wait(agent, 30, threading.Event(), paused) is True  # the paused one not asked
        assert server.log_text().count("auth failed") == 1
