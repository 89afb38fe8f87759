"""SmtpSubmitter against real servers: aiosmtpd submission -> LMTP -> Dovecot, read over IMAP."""

from __future__ import annotations

import ssl

import pytest

from caducee.errors import ConfigError, TransportError
from caducee.mail import servers
from caducee.mail.api import Envelope
from caducee.mail.smtp import (
    SmtpAuthError,
    SmtpRejectedError,
    SmtpSubmitter,
    SmtpTlsError,
    SmtpUnavailableError,
)
from tests.mail.conftest import message


def _subjects(net: servers.MailNetwork, address: str) -> list[bytes]:
    with net.mailbox(address) as box:
        return [m.data for m in box.fetch_new(None)]


def test_starttls_auth_submission_reaches_the_other_operators_mailbox(
    network: servers.MailNetwork,
) -> None:
    before = len(_subjects(network, "bob@op2.test"))
    network.submitter("alice@op1.test").submit(
        Envelope("alice@op1.test", ("bob@op2.test",)), message("cross operator")
    )
    after = _subjects(network, "bob@op2.test")
    assert len(after) == before + 1
    assert b"Subject: cross operator" in after[-1]


def test_one_message_to_recipients_of_both_operators(network: servers.MailNetwork) -> None:
    network.submitter("carol@op1.test").submit(
        Envelope("carol@op1.test", ("alice@op1.test", "dave@op2.test")), message("both ops")
    )
    assert any(b"Subject: both ops" in m for m in _subjects(network, "alice@op1.test"))
    assert any(b"Subject: both ops" in m for m in _subjects(network, "dave@op2.test"))


def test_plain_submission_without_tls(plain_network: servers.MailNetwork) -> None:
    plain_network.submitter("erin@op3.test").submit(
        Envelope("x@op3.test", ("erin@op3.test",)), message("plain smtp")
    )
    assert any(b"Subject: plain smtp" in m for m in _subjects(plain_network, "erin@op3.test"))


def test_implicit_tls(network: servers.MailNetwork, mail_tls: servers.TlsFiles) -> None:
    dovecot = network.operator("op1.test").dovecot
    with servers.LmtpRelay(
        dovecot.host, dovecot.lmtp_port, domains=["op1.test"], tls=mail_tls, implicit_tls=True
    ) as smtps:
        SmtpSubmitter(
            smtps.host, smtps.port, security="tls", ssl_context=servers.client_context(mail_tls)
        ).submit(Envelope("x@op9.test", ("alice@op1.test",)), message("implicit tls"))
        assert smtps.delivered == 1
    assert any(b"Subject: implicit tls" in m for m in _subjects(network, "alice@op1.test"))


def test_partial_refusal_names_the_refused_recipient(network: servers.MailNetwork) -> None:
    with pytest.raises(SmtpRejectedError) as info:
        network.submitter("alice@op1.test").submit(
            Envelope("alice@op1.test", ("carol@op1.test", "nobody@nowhere.test")),
            message("partial"),
        )
    err = info.value
    assert set(err.refused) == {"nobody@nowhere.test"}
    assert err.refused["nobody@nowhere.test"][0] == 550
    assert err.accepted == ("carol@op1.test",)
    assert not err.retryable
    assert "nobody@nowhere.test (550" in str(err) and "accepted for 1" in str(err)
    assert any(b"Subject: partial" in m for m in _subjects(network, "carol@op1.test"))


def test_all_recipients_refused_is_permanent(network: servers.MailNetwork) -> None:
    with pytest.raises(SmtpRejectedError, match="all recipients refused") as info:
        network.submitter("alice@op1.test").submit(
            Envelope("alice@op1.test", ("nobody@nowhere.test",)), message("nobody")
        )
    assert not info.value.retryable and info.value.accepted == ()


def test_wrong_password(network: servers.MailNetwork) -> None:
    op = network.operator("op1.test").submission
    submitter = SmtpSubmitter(
        op.host,
        op.port,
        security="starttls",
        username="alice@op1.test",
        password="wrong-secret-xyz",
        ssl_context=network.ssl_context(),
    )
    with pytest.raises(SmtpAuthError, match="authentication refused") as info:
        submitter.submit(Envelope("alice@op1.test", ("bob@op2.test",)), message("x"))
    assert "wrong-secret-xyz" not in str(info.value)
    assert "wrong-secret-xyz" not in repr(submitter)


def test_untrusted_certificate_is_refused(network: servers.MailNetwork) -> None:
    op = network.operator("op1.test").submission
    submitter = SmtpSubmitter(op.host, op.port, security="starttls", timeout=10)
    with pytest.raises(SmtpTlsError, match="certificate not trusted"):
        submitter.submit(Envelope("a@op1.test", ("alice@op1.test",)), message("x"))


def test_starttls_required_but_not_offered(plain_network: servers.MailNetwork) -> None:
    op = plain_network.operator("op3.test").submission
    with pytest.raises(SmtpTlsError, match="does not offer STARTTLS"):
        SmtpSubmitter(op.host, op.port, security="starttls").submit(
            Envelope("a@op3.test", ("erin@op3.test",)), message("x")
        )


def test_server_down_is_retryable(closed_port: int) -> None:
    submitter = SmtpSubmitter("127.0.0.1", closed_port, security="none", timeout=5)
    with pytest.raises(SmtpUnavailableError, match=f"127.0.0.1:{closed_port}") as info:
        submitter.submit(Envelope("a@op1.test", ("b@op2.test",)), message("x"))
    assert info.value.retryable and isinstance(info.value, TransportError)


def test_hung_server_times_out(silent_port: int) -> None:
    submitter = SmtpSubmitter("127.0.0.1", silent_port, security="starttls", timeout=0.5)
    with pytest.raises(SmtpUnavailableError, match="timed out"):
        submitter.submit(Envelope("a@op1.test", ("b@op2.test",)), message("x"))


def test_tls_to_a_plain_server_fails_cleanly(plain_network: servers.MailNetwork) -> None:
    op = plain_network.operator("op3.test").submission
    submitter = SmtpSubmitter(
        op.host, op.port, security="tls", timeout=5, ssl_context=ssl.create_default_context()
    )
    with pytest.raises((SmtpTlsError, SmtpUnavailableError)):
        submitter.submit(Envelope("a@op3.test", ("erin@op3.test",)), message("x"))


def test_refuses_clear_text_password_to_a_remote_host() -> None:
    with pytest.raises(ConfigError, match="clear text"):
        SmtpSubmitter("smtp.example.test", 25, security="none", username="u", password="p")


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        SmtpSubmitter("h", 1, security="ssl")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SmtpSubmitter("h", 1, username="u")
    with pytest.raises(ConfigError):
        SmtpSubmitter("127.0.0.1", 1, security="none").submit(Envelope("a@b", ()), b"x")


def test_bare_lf_message_is_sent_with_crlf(plain_network: servers.MailNetwork) -> None:
    body = b"Subject: bare lf\n\n" + b"".join(b"line %d\n" % i for i in range(200))
    plain_network.submitter("erin@op3.test").submit(
        Envelope("x@op3.test", ("erin@op3.test",)), body
    )
    (got,) = [m for m in _subjects(plain_network, "erin@op3.test") if b"Subject: bare lf" in m]
    assert b"line 199\r\n" in got and b"\r\n\r\nline 0\r\n" in got
