"""The test/developer servers themselves: clean stop, restart keeps mail, safe defaults."""

from __future__ import annotations

import os
import pathlib

import pytest

from caducee.mail import servers
from tests.mail.conftest import lmtp_deliver, message


def _ours(server: servers.DovecotServer) -> list[int]:
    return servers._processes_mentioning(str(server.conf), f"dovecot-{server._instance}/")


def test_stop_leaves_no_process_and_no_files() -> None:
    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    server = servers.DovecotServer({"u@op9.test": "pw"}).start()
    assert _ours(server)
    root = server.root
    server.stop()
    assert _ours(server) == []
    assert not root.exists()


def test_restart_keeps_the_mail_and_the_ports() -> None:
    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    with servers.DovecotServer({"u@op9.test": "pw"}) as server:
        lmtp_deliver(server, "u@op9.test", message("before restart"))
        port = server.imap_port
        server.restart()
        assert server.imap_port == port
        lmtp_deliver(server, "u@op9.test", message("after restart"))
        maildir = server.maildir("u@op9.test")
        names = os.listdir(maildir / "new") + os.listdir(maildir / "cur")
        assert len(names) == 2
        assert (maildir / "new").stat().st_uid == server.uid


def test_relay_auth_needs_tls() -> None:
    with pytest.raises(ValueError, match="AUTH needs TLS"):
        servers.LmtpRelay("127.0.0.1", 1, domains=["x.test"], credentials={"u": "p"})


def test_tls_files_are_private(tmp_path: pathlib.Path) -> None:
    tls = servers.make_tls_files(tmp_path)
    assert tls.key.stat().st_mode & 0o777 == 0o600
    assert servers.client_context(tls).verify_mode.name == "CERT_REQUIRED"
