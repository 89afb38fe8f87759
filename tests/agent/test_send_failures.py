"""Submission failures that will not go away by themselves (a wrong password, a certificate not
trusted or for another name, the wrong TLS mode, the whole message refused with a 5xx) are
errors the user hears about at once, the message still kept in the outbox; temporary ones (a
server down) stay "queued, will be retried". Real aiosmtpd servers from caducee.mail.servers
where the failure comes from a server; a submitter double where a reply must be forced."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import sqlite3
import time
from collections.abc import Iterator

import pytest

from caducee.agent import Agent, NotSentError, OutboxRound, needs_fixing
from caducee.errors import TransportError
from caducee.mail.api import Envelope
from caducee.mail.smtp import SmtpAuthError, SmtpRejectedError, SmtpSubmitter, SmtpUnavailableError

from .conftest import AgentFactory, Operators, PostOffice

servers = pytest.importorskip("caducee.mail.servers", reason="mail servers module missing")
embedded = pytest.importorskip("caducee.mail.embedded", reason="embedded mail service missing")

RIGHT = "martin-right-pw"
START = dt.datetime.now(dt.UTC).replace(microsecond=0)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


class Network:
    """Dr Cardio's embedded SMTP service (Maildir), and Dr Martin's submission server: STARTTLS,
    AUTH, forwarding op2.test to Dr Cardio's service."""

    def __init__(self, base: pathlib.Path, tls: object) -> None:
        self.tls = tls
        self.service = embedded.EmbeddedMailService(base / "mail", ["op2.test"])
        self.relay = servers.LmtpRelay(
            "127.0.0.1",
            servers.free_port(),  # nothing is delivered locally
            domains=[],
            tls=tls,
            credentials={"martin@op1.test": RIGHT},
            relay_to={"op2.test": (self.service.host, self.service.port)},
        )

    def submitter(self, password: str = RIGHT, **kwargs: object) -> SmtpSubmitter:
        options: dict[str, object] = {
            "security": "starttls",
            "username": "martin@op1.test",
            "password": password,
            "timeout": 15,
            "ssl_context": servers.client_context(self.tls),
        }
        options.update(kwargs)
        host = str(options.pop("host", self.relay.host))
        return SmtpSubmitter(host, self.relay.port, **options)  # type: ignore[arg-type]


@pytest.fixture
def net(tmp_path: pathlib.Path) -> Iterator[Network]:
    network = Network(tmp_path, servers.make_tls_files(tmp_path / "tls"))
    with network.service, network.relay:
        yield network


def _martin(make_agent: AgentFactory, ops: Operators, submitter: object, clock: Clock) -> Agent:
    return make_agent(ops.martin, submitter=submitter, clock=clock)


def test_wrong_password_is_an_error_message_kept_then_sent_once_fixed(
    ops: Operators, make_agent: AgentFactory, net: Network
):
    clock = Clock()
    martin = _martin(make_agent, ops, net.submitter("wrong-pw"), clock)
    with pytest.raises(NotSentError) as caught:
        martin.send(["cardio@op2.test"], "Bilan", "Compte rendu")
    error = caught.value
    assert error.exit_code == 7 and isinstance(error, TransportError)
    assert error.needs_fixing and not error.retryable  # alert someone; do not send it again
    text = str(error)
    assert text.startswith("not sent: SMTP 127.0.0.1:")
    assert "authentication refused (535" in text
    assert text.endswith("kept in the outbox: fix the configuration, then `caducee outbox --retry`")
    assert "will be retried" not in text
    assert error.details["state"] == "queued"
    (item,) = martin.store.outbox()  # nothing lost
    assert item.message == error.details["id"] and item.recipients == ("cardio@op2.test",)
    assert (item.last_error or "").startswith("needs fixing: SMTP")
    # not retried every minute with a password the server refuses: an hour at once
    assert item.next_attempt_at == (START + dt.timedelta(hours=1)).isoformat()
    stored = martin.store.get(item.message or 0)
    assert stored.recipients[0].state == "queued"
    assert net.relay.handler.forwarded == 0

    clock.now += dt.timedelta(minutes=30)
    assert martin.retry_outbox(due_only=True) == (0, 1)  # the agent's round: not due
    assert martin.store.outbox()[0].attempts == 1
    forced = martin.retry_outbox()  # the user asked: tried, still refused, said why
    assert forced == (0, 1) and isinstance(forced, OutboxRound)
    assert repr(forced).startswith("OutboxRound(sent=0, waiting=1, needs_fixing='not sent: SMTP")
    assert forced.needs_fixing is not None and "authentication refused" in forced.needs_fixing
    again = martin.store.outbox()[0]
    assert again.attempts == 2
    assert again.next_attempt_at == (clock.now + dt.timedelta(hours=1)).isoformat()

    martin.submitter = net.submitter(RIGHT)  # the configuration is fixed
    done = martin.retry_outbox()
    assert done == (1, 0) and done.needs_fixing is None
    assert martin.store.outbox() == []
    assert martin.store.get(stored.id).recipients[0].state == "sent"
    cardio = make_agent(ops.cardio, sources={"maildir": net.service.source("cardio@op2.test")})
    assert cardio.fetch().valid == 1


def test_untrusted_certificate_is_an_error(ops: Operators, make_agent: AgentFactory, net: Network):
    import ssl

    martin = _martin(
        make_agent, ops, net.submitter(ssl_context=ssl.create_default_context()), Clock()
    )
    with pytest.raises(NotSentError, match=r"not sent: .*server certificate not trusted"):
        martin.send(["cardio@op2.test"], "S", "B")
    assert len(martin.store.outbox()) == 1


def test_certificate_for_another_name_is_an_error(
    ops: Operators, make_agent: AgentFactory, net: Network
):
    # trusted, and valid for 127.0.0.1, but not for "localhost"
    other = servers.make_tls_files(pathlib.Path(str(net.tls.cert)).parent / "other", "other.test")  # type: ignore[attr-defined]
    relay = servers.LmtpRelay(
        "127.0.0.1", servers.free_port(), domains=[], tls=other, credentials={"m": "p"}
    )
    with relay:
        submitter = SmtpSubmitter(
            "localhost",
            relay.port,
            username="martin@op1.test",
            password=RIGHT,
            timeout=15,
            ssl_context=servers.client_context(other),
        )
        martin = _martin(make_agent, ops, submitter, Clock())
        with pytest.raises(NotSentError, match=r"not sent: .*(not trusted|localhost)"):
            martin.send(["cardio@op2.test"], "S", "B")
    assert len(martin.store.outbox()) == 1


def test_implicit_tls_against_a_starttls_port_is_an_error(
    ops: Operators, make_agent: AgentFactory, net: Network
):
    martin = _martin(make_agent, ops, net.submitter(security="tls"), Clock())
    with pytest.raises(NotSentError, match=r"not sent: .*TLS"):
        martin.send(["cardio@op2.test"], "S", "B")
    assert len(martin.store.outbox()) == 1


def test_server_down_is_still_queued_and_retried_sooner(ops: Operators, make_agent: AgentFactory):
    down = SmtpSubmitter("127.0.0.1", servers.free_port(), security="none", timeout=15)
    martin = _martin(make_agent, ops, down, Clock())
    sent = martin.send(["cardio@op2.test"], "S", "B")  # no error: it passes once the server is up
    assert sent.state == "queued" and "connection refused" in (sent.warning or "")
    (item,) = martin.store.outbox()
    assert item.next_attempt_at == (START + dt.timedelta(minutes=1)).isoformat()
    assert not (item.last_error or "").startswith("needs fixing")
    outcome = martin.retry_outbox()
    assert outcome == (0, 1) and outcome.needs_fixing is None


class Refusing:
    """A submitter that fails with a given error and counts its attempts."""

    def __init__(self, error: TransportError) -> None:
        self.error = error
        self.attempts = 0

    def submit(self, envelope: Envelope, message: bytes) -> None:
        self.attempts += 1
        raise self.error


def test_whole_message_refused_with_5xx_is_an_error_its_recipients_rejected(
    ops: Operators, make_agent: AgentFactory
):
    """A 5xx to the message itself (its content, its size, a relay refusing after DATA) will
    not pass on a timer nor by fixing the configuration: the call fails with the server's
    reply, the recipients are marked rejected, the sent copy is kept, nothing stays queued."""
    refused = SmtpRejectedError(
        "SMTP x:587: message refused (554 5.7.1 policy)", refused={}, retryable=False
    )
    martin = _martin(make_agent, ops, Refusing(refused), Clock())
    with pytest.raises(SmtpRejectedError, match=r"554 5\.7\.1 policy") as caught:
        martin.send(["cardio@op2.test", "petit@op1.test"], "S", "B")
    assert not needs_fixing(caught.value) and caught.value.exit_code == 7
    assert martin.store.outbox() == []
    (kept,) = martin.store.messages("out")
    assert martin.delivery(kept.id) == {"cardio@op2.test": "rejected", "petit@op1.test": "rejected"}


def test_our_sender_address_refused_needs_fixing_and_is_kept(
    ops: Operators, make_agent: AgentFactory, net: Network
):
    """A 5xx to MAIL FROM (the account may not send as this address): the configuration is
    wrong, the message waits in the outbox."""
    petit = make_agent(ops.petit, submitter=net.submitter(RIGHT))  # logs in as Dr Martin
    with pytest.raises(NotSentError, match=r"sender petit@op1.test refused \(553 ") as caught:
        petit.send(["cardio@op2.test"], "S", "B")
    assert caught.value.needs_fixing
    assert petit.store.outbox()[0].recipients == ("cardio@op2.test",)
    assert net.relay.handler.forwarded == 0


def test_refusals_that_may_pass_or_name_recipients_are_not_errors(
    ops: Operators, make_agent: AgentFactory
):
    later = SmtpRejectedError("SMTP x:587: temporary failure (451)", refused={}, retryable=True)
    martin = _martin(make_agent, ops, Refusing(later), Clock())
    assert martin.send(["cardio@op2.test"], "S", "B").state == "queued"
    assert not needs_fixing(later) and not needs_fixing(SmtpUnavailableError("down"))
    one_unknown = SmtpRejectedError(
        "refused", refused={"petit@op1.test": (550, "unknown")}, accepted=("cardio@op2.test",),
        retryable=False,
    )  # fmt: skip
    assert not needs_fixing(one_unknown)
    assert needs_fixing(SmtpAuthError("535"))


def test_one_wrong_password_does_not_hammer_the_server_for_every_message(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = _martin(make_agent, ops, post, Clock())
    post.down = True
    for subject in ("1", "2", "3"):
        assert martin.send(["cardio@op2.test"], subject, "B").state == "queued"
    refusing = Refusing(SmtpAuthError("SMTP x:587: authentication refused (535 5.7.8 bad)"))
    martin.submitter = refusing
    outcome = martin.retry_outbox()
    assert outcome == (0, 3) and refusing.attempts == 1  # the same password, tried once
    assert "authentication refused" in (outcome.needs_fixing or "")
    assert [i.attempts for i in martin.store.outbox()] == [2, 1, 1]


def test_no_submission_server_is_an_error_message_kept(ops: Operators, make_agent: AgentFactory):
    martin = _martin(make_agent, ops, None, Clock())
    with pytest.raises(NotSentError, match="no SMTP submission server is configured"):
        martin.send(["cardio@op2.test"], "S", "B")
    assert len(martin.store.outbox()) == 1


# -- the commands ---------------------------------------------------------------------------------


def _config(tmp_path: pathlib.Path, ops: Operators, port: int, security: str) -> pathlib.Path:
    from .test_cli_mail import _setup

    config = _setup(tmp_path, ops.martin, ops, port, tmp_path / "martin-maildir")
    text = config.read_text()
    assert text.count('security = "none"') == 1, text  # [smtp] only
    config.write_text(text.replace('security = "none"', f'security = "{security}"'))
    return config


def test_cli_send_with_the_wrong_tls_mode_exits_7_kept_in_the_outbox(
    ops: Operators, tmp_path: pathlib.Path
):
    from .test_cli_mail import caducee

    service = embedded.EmbeddedMailService(tmp_path / "mail", ["op2.test"])
    with service:
        config = _config(tmp_path, ops, service.port, "tls")  # a plain SMTP port
        args = ("send", "--config", str(config), "--to", "cardio@op2.test", "--subject", "S")
        sent = caducee(*args, "--json", stdin="x")
        assert sent.returncode == 7, sent.stderr
        out = json.loads(sent.stdout)
        assert out["exit_code"] == 7 and out["state"] == "queued"
        assert out["error"].startswith("not sent: SMTP 127.0.0.1:")
        assert "kept in the outbox" in out["error"] and "TLS" in out["error"]
        plain = caducee(*args, stdin="x")
        assert plain.returncode == 7
        assert plain.stderr.count("\n") == 1 and "caducee outbox --retry" in plain.stderr
        assert "will be retried" not in plain.stderr + plain.stdout
        listed = json.loads(caducee("outbox", "--config", str(config), "--json").stdout)
        assert len(listed["waiting"]) == 2  # nothing lost
        once = caducee("agent", "--once", "--config", str(config))
        assert once.returncode == 0, once.stderr  # put off for an hour, and says why
        summary = once.stderr.splitlines()[0]
        assert summary.startswith("fetched 0, sent 0, waiting 2: message")
        assert "(and 1 more): needs fixing: SMTP 127.0.0.1:" in summary and "TLS" in summary
        # the configuration fixed, the agent started again: its first round sends what was put
        # off for an hour, without waiting for them
        config.write_text(config.read_text().replace('security = "tls"', 'security = "none"'))
        fixed = caducee("agent", "--once", "--config", str(config))
        assert fixed.returncode == 0, fixed.stderr
        assert fixed.stderr.splitlines()[0] == "fetched 0, sent 2, waiting 0"


def test_cli_outbox_retry_fails_while_messages_wait_and_agent_names_them(
    ops: Operators, tmp_path: pathlib.Path
):
    from .test_cli_mail import caducee

    port = servers.free_port()  # the server is down for now
    config = _config(tmp_path, ops, port, "none")
    sent = caducee(
        "send", "--config", str(config), "--to", "cardio@op2.test", "--subject", "S", "--json",
        stdin="x",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr  # a server down: queued, will be retried
    message = json.loads(sent.stdout)["id"]

    retried = caducee("outbox", "--retry", "--config", str(config))
    assert retried.returncode == 7
    assert f"still waiting 1: message {message} to cardio@op2.test:" in retried.stderr
    assert "connection refused" in retried.stderr
    as_json = caducee("outbox", "--retry", "--config", str(config), "--json")
    assert as_json.returncode == 7
    out = json.loads(as_json.stdout)
    assert out["exit_code"] == 7 and out["sent"] == 0 and len(out["waiting"]) == 1
    assert "connection refused" in out["error"]

    once = caducee("agent", "--once", "--config", str(config))
    assert once.returncode == 0, once.stderr  # not due yet: the agent waits, and says for what
    summary = once.stderr.splitlines()[0]
    assert summary.startswith("fetched 0, sent 0, waiting 1: message")
    assert "cardio@op2.test" in summary and "connection refused" in summary

    with embedded.EmbeddedMailService(tmp_path / "mail", ["op2.test"], port=port):
        done = caducee("outbox", "--retry", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "sent 1, still waiting 0" in done.stdout and "the outbox is empty" in done.stdout


def test_cli_agent_pauses_a_mailbox_whose_login_is_refused(ops: Operators, tmp_path: pathlib.Path):
    """`caducee agent` with a refused IMAP password: one login per hour, not one per round (the
    server may lock the account); the Maildir next to it is still read every round."""
    import signal
    import subprocess
    import sys

    from caducee.mail.maildir import deliver

    reason = servers.dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    with servers.DovecotServer({"martin@op1.test": "right"}, name="agentpause") as dovecot:
        config = _config(tmp_path, ops, servers.free_port(), "none")
        (config.parent / "imap.pw").write_text("wrong\n")
        config.write_text(
            config.read_text()
            + f'\n[[imap]]\nname = "work"\nhost = "{dovecot.host}"\nport = {dovecot.imap_port}\n'
            'security = "none"\nusername = "martin@op1.test"\npassword_file = "imap.pw"\n'
        )
        agent = subprocess.Popen(
            [sys.executable, "-c", "from caducee.cli.main import main; main()",
             "agent", "--config", str(config), "--interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while dovecot.log_text().count("auth failed") < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(5)  # several rounds of one second
            deliver(tmp_path / "martin-maildir", b"From: x@op2.test\r\nSubject: s\r\n\r\nhi\r\n")
            store = next((config.parent / "data").glob("*.sqlite"))
            while time.monotonic() < deadline + 60:  # until the agent has stored it
                with sqlite3.connect(store) as db:
                    if db.execute("SELECT count(*) FROM messages").fetchone()[0]:
                        break
                time.sleep(0.2)
        finally:
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=60)
        assert dovecot.log_text().count("auth failed") == 1, err
    assert "login refused for martin@op1.test" in err
    assert "warning: mailbox work needs fixing: not read for an hour" in err
    assert "fetched 1," in err  # the Maildir was still read
    assert err.rstrip().endswith("agent stopped")
