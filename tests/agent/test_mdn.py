"""RFC 8098 reports: building, parsing (ours and a foreign one), and when receipts are sent."""

from __future__ import annotations

import email.parser
import email.policy
import os

import pytest

from caducee.agent import AgentPolicy
from caducee.core import mdn
from caducee.core.message import protect
from caducee.errors import MalformedMessageError, UsageError
from caducee.smime import now

from .conftest import AgentFactory, Operators, PostOffice

# The shape of RFC 8098 section 9 example, as another MUA (e.g. Thunderbird) writes it.
FOREIGN = (
    b"Date: Wed, 20 Sep 1995 00:19:00 (EDT) -0400\r\n"
    b"From: Joe Recipient <Joe_Recipient@example.com>\r\n"
    b"Message-Id: <199509200019.12345@example.com>\r\n"
    b"Subject: Disposition notification\r\n"
    b"To: Jane Sender <Jane_Sender@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=disposition-notification;\r\n"
    b'\tboundary="RAA14128.773615765/example.com"\r\n'
    b"\r\n"
    b"--RAA14128.773615765/example.com\r\n"
    b"\r\n"
    b"The message sent on 1995 Sep 19 at 13:30:00 (EDT) -0400 to Joe\r\n"
    b'Recipient <Joe_Recipient@example.com> with subject "First draft of\r\n'
    b'report" has been displayed.\r\n'
    b"\r\n"
    b"--RAA14128.773615765/example.com\r\n"
    b"Content-Type: message/disposition-notification\r\n"
    b"\r\n"
    b"Reporting-UA: joes-pc.cs.example.com; Foomail 97.1\r\n"
    b"Original-Recipient: rfc822;Joe_Recipient@example.com\r\n"
    b"Final-Recipient: rfc822;Joe_Recipient@example.com\r\n"
    b"Original-Message-ID: <199509192301.23456@example.org>\r\n"
    b"Disposition: manual-action/MDN-sent-manually; displayed\r\n"
    b"\r\n"
    b"--RAA14128.773615765/example.com--\r\n"
)


def test_parse_foreign_report():
    report = mdn.parse_mdn(FOREIGN)
    assert report.original_message_id == "<199509192301.23456@example.org>"
    assert report.final_recipient == "joe_recipient@example.com"
    assert report.disposition == "displayed"
    assert report.mode == "manual-action/MDN-sent-manually"
    assert report.reporting_ua == "joes-pc.cs.example.com; Foomail 97.1"


def test_build_then_parse():
    wire = mdn.build_mdn(
        original_message_id="<a1@op1.test>",
        original_subject="Bilan",
        from_address="cardio@op2.test",
        to_address="martin@op1.test",
        final_recipient="cardio@op2.test",
        disposition="processed",
        manual=False,
        date="Mon, 01 Jan 2024 10:00:00 +0000",
        message_id="<r1@op2.test>",
        boundary="mdn-1234",
        original_recipient="cardio@op2.test",
    )
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(wire)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "message/disposition-notification"]
    report = mdn.parse_mdn(wire)
    assert report.disposition == "processed"
    assert report.mode == "automatic-action/MDN-sent-automatically"
    assert report.final_recipient == "cardio@op2.test"


def test_hostile_values_refused():
    with pytest.raises(UsageError):
        mdn.build_mdn(
            original_message_id="<a@b>\r\nBcc: x@y",
            original_subject=None,
            from_address="a@b.test",
            to_address="c@d.test",
            final_recipient="a@b.test",
            disposition="displayed",
            manual=True,
            date="d",
            message_id="<m@b>",
            boundary="b",
        )
    with pytest.raises(MalformedMessageError):
        mdn.parse_mdn(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    broken = FOREIGN.replace(b"; displayed", b"; exploded")
    with pytest.raises(MalformedMessageError, match="unknown disposition"):
        mdn.parse_mdn(broken)


def test_receipt_request_to_another_address_is_not_honoured(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    msg = (
        b"From: cardio@op2.test\r\nTo: martin@op1.test\r\nSubject: x\r\n"
        b"Message-ID: <q1@op2.test>\r\n"
        b"Disposition-Notification-To: tracker@elsewhere.test\r\n\r\nhello\r\n"
    )
    wire = protect(
        msg,
        signer=ops.cardio.signing,
        recipients=[],
        signing_time=now(),
        random=os.urandom,
    )
    post.mailbox("martin@op1.test").deliver(wire)
    (got,) = martin.fetch().ids
    assert martin.store.get(got).mdn_requested is None
    martin.read(got, send_receipt=True)
    assert post.submitted == []


def test_processed_receipt_on_fetch_when_policy_says_so(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    martin = make_agent(ops.martin)
    cardio = make_agent(ops.cardio, policy=AgentPolicy(mdn_on_fetch=True))
    sent = martin.send(["cardio@op2.test"], "x", "y")
    (got,) = cardio.fetch().ids
    assert cardio.store.get(got).mdn_sent == "processed"
    martin.fetch()
    assert martin.store.get(sent.id).recipients[0].state == "processed"
    cardio.read(got, send_receipt=True)  # then displayed, which supersedes processed
    martin.fetch()
    assert martin.store.get(sent.id).recipients[0].state == "displayed"


def test_no_receipt_when_not_requested(ops: Operators, post: PostOffice, make_agent: AgentFactory):
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    martin.send(["cardio@op2.test"], "x", "y", request_mdn=False)
    (got,) = cardio.fetch().ids
    before = len(post.submitted)
    cardio.read(got, send_receipt=True)
    assert len(post.submitted) == before


def test_software_reading_sends_no_displayed_receipt_unless_it_says_so(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    """A program reading mail (API, default) must not tell the sender a person saw it."""
    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    martin.send(["cardio@op2.test"], "x", "y")
    (got,) = cardio.fetch().ids
    before = len(post.submitted)
    cardio.read(got)
    assert len(post.submitted) == before and cardio.store.get(got).mdn_sent is None
    cardio.read(got, send_receipt=True)  # shown to the professional
    assert len(post.submitted) == before + 1 and cardio.store.get(got).mdn_sent == "displayed"


def test_the_policy_decides_whether_receipts_are_requested(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    quiet = make_agent(ops.martin, policy=AgentPolicy(request_mdn=False))
    sent = quiet.send(["cardio@op2.test"], "x", "y")
    assert quiet.store.get(sent.id).mdn_requested is None
    assert b"Disposition-Notification-To" not in post.submitted[-1][1]
    asked = quiet.send(["cardio@op2.test"], "x", "y", request_mdn=True)  # the call says
    assert quiet.store.get(asked.id).mdn_requested == "martin@op1.test"


def test_delivery_status_per_recipient_and_what_each_fetch_changed(
    ops: Operators, post: PostOffice, make_agent: AgentFactory
):
    """The hospital system asks, per sent message, where each recipient is, by the store id or
    the Message-ID; a fetch says which receipts it applied."""
    from caducee.agent import ReceiptUpdate
    from caducee.store.messages import NoSuchMessageError

    martin, cardio = make_agent(ops.martin), make_agent(ops.cardio)
    sent = martin.send(["cardio@op2.test", "petit@op1.test"], "letter", "text")
    assert martin.delivery(sent.id) == {"cardio@op2.test": "sent", "petit@op1.test": "sent"}
    (got,) = cardio.fetch().ids
    cardio.read(got, send_receipt=True)
    report = martin.fetch()
    assert report.receipt_updates == [
        ReceiptUpdate(sent.id, sent.message_id, "cardio@op2.test", "displayed")
    ]
    assert report.to_json()["receipt_updates"] == [
        {"sent": sent.id, "message_id": sent.message_id, "recipient": "cardio@op2.test",
         "disposition": "displayed"}
    ]  # fmt: skip
    expected = {"cardio@op2.test": "displayed", "petit@op1.test": "sent"}
    assert martin.delivery(sent.id) == expected == martin.delivery(sent.message_id)
    assert martin.fetch().receipt_updates == []
    with pytest.raises(NoSuchMessageError):
        martin.delivery("<nobody@op1.test>")
    with pytest.raises(UsageError, match="was received, not sent"):
        cardio.delivery(got)
