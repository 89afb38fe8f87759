"""Real mail servers for the transport tests: two operators, each with Dovecot and SMTP.

Session-scoped: starting Dovecot takes a fraction of a second, but doing it per test adds up.
Tests that must stop or restart a server start their own (see ``own_dovecot``).
"""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator

import pytest

from caducee.mail import servers

OP1 = {"alice@op1.test": "alice-pw", "carol@op1.test": "carol-pw"}
OP2 = {"bob@op2.test": "bob-pw", "dave@op2.test": "dave-pw"}


def _need_dovecot() -> None:
    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def mail_tls(tmp_path_factory: pytest.TempPathFactory) -> servers.TlsFiles:
    return servers.make_tls_files(tmp_path_factory.mktemp("mail-tls"))


@pytest.fixture(scope="session")
def network(mail_tls: servers.TlsFiles) -> Iterator[servers.MailNetwork]:
    """op1.test and op2.test with STARTTLS + AUTH submission, IMAP STARTTLS/TLS, LMTP."""
    _need_dovecot()
    with servers.MailNetwork({"op1.test": OP1, "op2.test": OP2}, tls=mail_tls) as net:
        yield net


@pytest.fixture(scope="session")
def plain_network() -> Iterator[servers.MailNetwork]:
    """One operator without TLS: security "none" on both SMTP and IMAP (loopback only)."""
    _need_dovecot()
    with servers.MailNetwork({"op3.test": {"erin@op3.test": "erin-pw"}}) as net:
        yield net


@pytest.fixture
def own_dovecot(mail_tls: servers.TlsFiles) -> Iterator[servers.DovecotServer]:
    """A private Dovecot a test may stop, restart or fill with odd messages."""
    _need_dovecot()
    server = servers.DovecotServer({"zoe@op9.test": "zoe-pw"}, tls=mail_tls, name="op9")
    with server:
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (a server that is down)."""
    return servers.free_port()


def lmtp_deliver(server: servers.DovecotServer, rcpt: str, data: bytes) -> None:
    """Put a message straight into a Dovecot mailbox, bypassing SMTP (for odd content)."""
    with smtplib.LMTP(server.host, server.lmtp_port, timeout=30) as lmtp:
        lmtp.sendmail("sender@elsewhere.test", [rcpt], data)


def message(subject: str, body: bytes = b"hello\r\n", sender: str = "a@op1.test") -> bytes:
    return (
        f"From: {sender}\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@caducee.test>\r\n\r\n"
    ).encode() + body
