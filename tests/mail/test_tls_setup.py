"""Trusting a private-CA mail server (ca_file), wrong TLS modes, implicit TLS with AUTH.

Real Dovecot and the aiosmtpd relay from caducee.mail.servers, with the self-signed test
certificate from make_tls_files standing in for an operator's private CA.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from caducee import devpki
from caducee.agent_setup import mail_ssl_context
from caducee.config import MailServer, load_config
from caducee.errors import ConfigError
from caducee.mail import imap as imap_module
from caducee.mail import servers
from caducee.mail import smtp as smtp_module
from caducee.mail.api import Envelope
from caducee.mail.imap import ImapMailbox, ImapTlsError, ImapUnavailableError
from caducee.mail.smtp import SmtpAuthError, SmtpSubmitter, SmtpTlsError, SmtpUnavailableError
from tests import conftest as root
from tests.conftest import pem_cert, pem_key
from tests.mail.conftest import OP1, message

ALICE = "alice@op1.test"


def _config(directory: pathlib.Path, op: servers.Operator, ca_file: str | None) -> pathlib.Path:
    """A configuration naming op1's servers, ``ca_file`` written relative to the file."""
    ca = f'ca_file = "{ca_file}"\n' if ca_file else ""
    (directory / "pw").write_text(OP1[ALICE])
    path = directory / "config.toml"
    path.write_text(
        f'[identity]\nemail = "{ALICE}"\ndecryption_key = "k.pem"\ndecryption_cert = "c.pem"\n'
        f'[smtp]\nhost = "{op.submission.host}"\nport = {op.submission.port}\n'
        f'security = "starttls"\nusername = "{ALICE}"\npassword_file = "pw"\ntimeout = 15\n{ca}'
        f'[[imap]]\nname = "in"\nhost = "{op.dovecot.host}"\nport = {op.dovecot.imap_port}\n'
        f'security = "starttls"\nusername = "{ALICE}"\npassword_file = "pw"\ntimeout = 15\n{ca}'
    )
    return path


def _clients(path: pathlib.Path) -> tuple[SmtpSubmitter, ImapMailbox]:
    config = load_config(path)
    smtp = config.smtp
    assert smtp is not None and smtp.username is not None
    server = config.sources[0].server
    assert server is not None and server.username is not None
    submitter = SmtpSubmitter(
        smtp.host,
        smtp.port,
        security="starttls",
        username=smtp.username,
        password=smtp.password(),
        timeout=smtp.timeout,
        ssl_context=mail_ssl_context(smtp),
    )
    box = ImapMailbox(
        server.host,
        server.port,
        username=server.username,
        password=server.password() or "",
        security="starttls",
        timeout=server.timeout,
        ssl_context=mail_ssl_context(server),
    )
    return submitter, box


def _alice_box(
    host: str, port: int, mail_tls: servers.TlsFiles | None = None, **options: Any
) -> ImapMailbox:
    """Alice's INBOX (or ``mailbox=``) on op1's Dovecot, trusting the test CA when given."""
    context = servers.client_context(mail_tls) if mail_tls is not None else None
    return ImapMailbox(
        host, port, username=ALICE, password=OP1[ALICE], ssl_context=context, **options
    )


# -- #1: ca_file ---------------------------------------------------------------------------------


def test_ca_file_makes_the_private_ca_trusted_for_smtp_and_imap(
    network: servers.MailNetwork, mail_tls: servers.TlsFiles, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "certs").mkdir()
    shutil.copy(mail_tls.cert, tmp_path / "certs" / "operator-ca.pem")
    path = _config(tmp_path, network.operator("op1.test"), "certs/operator-ca.pem")
    config = load_config(path)
    assert config.smtp is not None and config.sources[0].server is not None
    assert config.smtp.ca_file == tmp_path / "certs" / "operator-ca.pem"
    assert config.sources[0].server.ca_file == tmp_path / "certs" / "operator-ca.pem"
    submitter, box = _clients(path)
    with box:
        before = {m.uid for m in box.fetch_new(None)}
        submitter.submit(Envelope(ALICE, (ALICE,)), message("trusted by ca_file"))
        assert box.wait_for_new(15)
        new = [m for m in box.fetch_new(None) if m.uid not in before]
    assert any(b"trusted by ca_file" in m.data for m in new)


def test_ca_file_is_added_to_the_system_trust_not_instead(mail_tls: servers.TlsFiles) -> None:
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    context = mail_ssl_context(MailServer("localhost", 993, ca_file=mail_tls.cert))
    assert context.cert_store_stats()["x509_ca"] == system + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_without_ca_file_the_errors_name_it(
    network: servers.MailNetwork, tmp_path: pathlib.Path
) -> None:
    submitter, box = _clients(_config(tmp_path, network.operator("op1.test"), None))
    with pytest.raises(SmtpTlsError) as smtp_error:
        submitter.submit(Envelope(ALICE, (ALICE,)), message("never sent"))
    assert "server certificate not trusted" in str(smtp_error.value)
    assert "add its CA with ca_file under [smtp]" in str(smtp_error.value)
    with box, pytest.raises(ImapTlsError) as imap_error:
        list(box.fetch_new(None))
    assert "add its CA with ca_file under [[imap]]" in str(imap_error.value)


@pytest.mark.parametrize("content", [None, b"not a certificate\n", b""])
def test_an_unusable_ca_file_is_a_config_error_naming_it(
    tmp_path: pathlib.Path, content: bytes | None
) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        mail_ssl_context(MailServer("localhost", 587, ca_file=ca))
    text = str(info.value)
    assert str(ca) in text and "ca_file" in text and "\n" not in text


def test_ca_file_must_be_a_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[identity]\nemail = "a@op1.test"\ndecryption_key = "k"\ndecryption_cert = "c"\n'
        '[smtp]\nhost = "localhost"\nca_file = 3\n'
    )
    with pytest.raises(ConfigError, match="'ca_file' must be a non-empty string"):
        load_config(path)


# -- #5: the wrong TLS mode, both ways -------------------------------------------------------------


@pytest.fixture
def smtps_relay(
    network: servers.MailNetwork, mail_tls: servers.TlsFiles
) -> Iterator[servers.LmtpRelay]:
    """Implicit-TLS submission (port 465 style) with AUTH, delivering into op1's Dovecot."""
    dovecot = network.operator("op1.test").dovecot
    relay = servers.LmtpRelay(
        dovecot.host,
        dovecot.lmtp_port,
        domains=["op1.test"],
        tls=mail_tls,
        implicit_tls=True,
        credentials=OP1,
    )
    with relay:
        yield relay


@pytest.mark.parametrize("security", ["starttls", "none"])
def test_plain_client_on_an_implicit_tls_port_gets_a_hint(
    network: servers.MailNetwork,
    smtps_relay: servers.LmtpRelay,
    mail_tls: servers.TlsFiles,
    security: str,
) -> None:
    submitter = SmtpSubmitter(
        smtps_relay.host,
        smtps_relay.port,
        security=security,  # type: ignore[arg-type]
        timeout=1,
        ssl_context=servers.client_context(mail_tls),
    )
    """No greeting, and the port completes a TLS handshake: a setting to fix, said as such
    (not a server down, retried on a timer)."""
    with pytest.raises(SmtpTlsError) as smtp_error:
        submitter.submit(Envelope(ALICE, (ALICE,)), message("x"))
    assert str(smtp_error.value) == (
        f"SMTP {smtps_relay.host}:{smtps_relay.port}: no greeting, and the port answers TLS:"
        ' it expects security = "tls" (implicit TLS) in the configuration'
    )
    assert smtp_error.value.needs_fixing
    dovecot = network.operator("op1.test").dovecot
    box = _alice_box(dovecot.host, dovecot.imaps_port, mail_tls, security=security, timeout=1)
    with box, pytest.raises(ImapTlsError) as imap_error:
        list(box.fetch_new(None))
    assert 'the port answers TLS: it expects security = "tls"' in str(imap_error.value)
    assert imap_error.value.needs_fixing


def test_a_silent_port_is_a_server_down_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port that accepts connections and never says anything, TLS or not: temporary (the
    server may be hung), with the setting to check in the message."""
    monkeypatch.setattr(smtp_module, "GREETING_TIMEOUT", 0.5)
    monkeypatch.setattr(imap_module, "GREETING_TIMEOUT", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing is ever read or sent
        port = silent.getsockname()[1]
        submitter = SmtpSubmitter("127.0.0.1", port, security="starttls", timeout=30)
        with pytest.raises(SmtpUnavailableError) as smtp_error:
            submitter.submit(Envelope(ALICE, (ALICE,)), message("x"))
        assert str(smtp_error.value) == (
            f"SMTP 127.0.0.1:{port}: no greeting within 0.5 s (timed out): "
            'does this port expect security = "tls"?'
        )
        assert not smtp_error.value.needs_fixing
        box = _alice_box("127.0.0.1", port, security="starttls", timeout=30)
        with box, pytest.raises(ImapUnavailableError, match=r"no greeting within 0\.5 s"):
            list(box.fetch_new(None))


def test_the_greeting_wait_is_shorter_than_the_timeout(
    network: servers.MailNetwork,
    smtps_relay: servers.LmtpRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smtp_module, "GREETING_TIMEOUT", 0.5)
    monkeypatch.setattr(imap_module, "GREETING_TIMEOUT", 0.5)
    monkeypatch.setattr(smtp_module, "speaks_tls", lambda *a: False)  # the greeting wait alone
    monkeypatch.setattr(imap_module, "speaks_tls", lambda *a: False)
    submitter = SmtpSubmitter(smtps_relay.host, smtps_relay.port, security="none", timeout=30)
    with pytest.raises(SmtpUnavailableError, match=r"no greeting within 0\.5 s"):
        submitter.submit(Envelope(ALICE, (ALICE,)), message("x"))
    dovecot = network.operator("op1.test").dovecot
    box = _alice_box(dovecot.host, dovecot.imaps_port, security="none", timeout=30)
    with box, pytest.raises(ImapUnavailableError, match=r"no greeting within 0\.5 s"):
        list(box.fetch_new(None))


def test_tls_client_on_a_starttls_port_gets_a_hint(
    network: servers.MailNetwork, mail_tls: servers.TlsFiles
) -> None:
    op = network.operator("op1.test")
    hint = 'does this port expect security = "starttls"?'
    submitter = SmtpSubmitter(
        op.submission.host,
        op.submission.port,
        security="tls",
        username=ALICE,
        password=OP1[ALICE],
        timeout=15,
        ssl_context=servers.client_context(mail_tls),
    )
    with pytest.raises(SmtpTlsError) as smtp_error:
        submitter.submit(Envelope(ALICE, (ALICE,)), message("x"))
    assert str(smtp_error.value).endswith(hint)
    box = _alice_box(op.dovecot.host, op.dovecot.imap_port, mail_tls, security="tls", timeout=15)
    with box, pytest.raises(ImapTlsError) as imap_error:
        list(box.fetch_new(None))
    assert str(imap_error.value).endswith(hint)


# -- implicit TLS + AUTH on SMTP -------------------------------------------------------------------


def test_implicit_tls_submission_with_auth(
    network: servers.MailNetwork, smtps_relay: servers.LmtpRelay, mail_tls: servers.TlsFiles
) -> None:
    def submitter(password: str) -> SmtpSubmitter:
        return SmtpSubmitter(
            smtps_relay.host,
            smtps_relay.port,
            security="tls",
            username=ALICE,
            password=password,
            timeout=15,
            ssl_context=servers.client_context(mail_tls),
        )

    with pytest.raises(SmtpAuthError, match="authentication refused"):
        submitter("wrong-pw").submit(Envelope(ALICE, (ALICE,)), message("refused"))
    before = smtps_relay.delivered
    submitter(OP1[ALICE]).submit(Envelope(ALICE, (ALICE,)), message("over smtps"))
    assert smtps_relay.delivered == before + 1
    with network.mailbox(ALICE) as box:
        assert any(b"over smtps" in m.data for m in box.fetch_new(None))


# -- #6: a misspelt folder -------------------------------------------------------------------------


def test_a_misspelt_folder_suggests_no_missing_setting(
    network: servers.MailNetwork, mail_tls: servers.TlsFiles
) -> None:
    op = network.operator("op1.test")
    box = _alice_box(
        op.dovecot.host, op.dovecot.imap_port, mail_tls, mailbox="Referals", timeout=15
    )
    with box, pytest.raises(imap_module.ImapError) as info:
        list(box.fetch_new(None))
    assert str(info.value).endswith(
        "Referals: no such mailbox on the server (check the folder name)"
    )


# -- init ------------------------------------------------------------------------------------------


def _caducee(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from caducee.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "400"},  # one line per error, whatever the path length
    )


def _identity_args(pki: root.TestPKI, directory: pathlib.Path) -> list[str]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = devpki.issue_certificate(pki.ca, ALICE, key, purpose="encryption")
    (directory / "enc.key").write_bytes(pem_key(key))
    (directory / "enc.crt").write_bytes(pem_cert(cert))
    (directory / "ca.pem").write_bytes(pem_cert(pki.ca.certificate))
    (directory / "pw").write_text("secret")
    return [
        "--email", ALICE,
        "--decryption-key", str(directory / "enc.key"),
        "--decryption-cert", str(directory / "enc.crt"),
        "--anchor", str(directory / "ca.pem"),
        "--data-dir", str(directory / "data"),
        "--no-fetch-crls",
        "--smtp-host", "localhost", "--smtp-user", ALICE,
        "--smtp-password-file", str(directory / "pw"),
        "--imap-host", "localhost", "--imap-security", "tls", "--imap-user", ALICE,
        "--imap-password-file", str(directory / "pw"),
    ]  # fmt: skip


def test_init_writes_ca_file_for_both_servers(
    pki: root.TestPKI, mail_tls: servers.TlsFiles, tmp_path: pathlib.Path
) -> None:
    der = tmp_path / "imap-ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(mail_tls.cert.read_text()))  # DER is accepted as well
    config = tmp_path / "config.toml"
    done = _caducee(
        "init", "-y", "--config", str(config), *_identity_args(pki, tmp_path),
        "--smtp-ca-file", str(mail_tls.cert), "--imap-ca-file", str(der),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = load_config(config)
    assert loaded.smtp is not None and loaded.smtp.ca_file == mail_tls.cert.resolve()
    server = loaded.sources[0].server
    assert server is not None and server.ca_file == der.resolve()
    for mail_server in (loaded.smtp, server):
        stats = mail_ssl_context(mail_server).cert_store_stats()
        assert stats["x509_ca"] == ssl.create_default_context().cert_store_stats()["x509_ca"] + 1


@pytest.mark.parametrize("option", ["--smtp-ca-file", "--imap-ca-file"])
def test_init_refuses_a_ca_file_without_a_certificate(
    pki: root.TestPKI, tmp_path: pathlib.Path, option: str
) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = tmp_path / "config.toml"
    done = _caducee(
        "init", "-y", "--config", str(config), *_identity_args(pki, tmp_path), option, str(bad)
    )
    assert done.returncode == 2, done.stderr
    assert "CA file" in done.stderr and str(bad) in done.stderr
    assert "no readable certificate" in done.stderr
    assert not config.exists()
