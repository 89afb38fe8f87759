"""The demo's embedded mail service: SMTP on loopback, one durable Maildir copy per recipient."""

from __future__ import annotations

import pathlib
import stat

import pytest

from caducee.mail.api import Envelope
from caducee.mail.embedded import EmbeddedMailService
from caducee.mail.smtp import SmtpRejectedError, SmtpSubmitter
from tests.mail.conftest import message


def test_delivers_each_recipient_copy_to_its_maildir(tmp_path: pathlib.Path) -> None:
    with EmbeddedMailService(tmp_path / "op1", ["op1.test"]) as service:
        submitter = SmtpSubmitter(service.host, service.port, security="none", timeout=10)
        submitter.submit(
            Envelope("x@op2.test", ("alice@op1.test", "carol@op1.test")), message("demo")
        )
        for who in ("alice@op1.test", "carol@op1.test"):
            (msg,) = list(service.source(who).fetch_new(None))
            assert msg.data == message("demo")
            (name,) = (service.maildir(who) / "new").iterdir()
            assert stat.S_IMODE(name.stat().st_mode) == 0o600


def test_refuses_other_domains_and_keeps_the_good_copy(tmp_path: pathlib.Path) -> None:
    with EmbeddedMailService(tmp_path / "op1", ["op1.test"]) as service:
        submitter = SmtpSubmitter(service.host, service.port, security="none", timeout=10)
        with pytest.raises(SmtpRejectedError) as info:
            submitter.submit(
                Envelope("x@op2.test", ("alice@op1.test", "bob@op2.test", "../x@op1.test")),
                message("mixed"),
            )
        assert set(info.value.refused) == {"bob@op2.test", "../x@op1.test"}
        assert len(list(service.source("alice@op1.test").fetch_new(None))) == 1
        assert not (tmp_path / "op2.test").exists()


def test_two_operators_side_by_side(tmp_path: pathlib.Path) -> None:
    with (
        EmbeddedMailService(tmp_path / "op1", ["op1.test"]) as op1,
        EmbeddedMailService(tmp_path / "op2", ["op2.test"], users=["bob@op2.test"]) as op2,
    ):
        SmtpSubmitter(op2.host, op2.port, security="none").submit(
            Envelope("alice@op1.test", ("bob@op2.test",)), message("to bob")
        )
        SmtpSubmitter(op1.host, op1.port, security="none").submit(
            Envelope("bob@op2.test", ("alice@op1.test",)), message("to alice")
        )
        assert [m.data for m in op2.source("bob@op2.test").fetch_new(None)] == [message("to bob")]
        assert [m.data for m in op1.source("alice@op1.test").fetch_new(None)] == [
            message("to alice")
        ]
        assert not op2.accepts("eve@op2.test")
