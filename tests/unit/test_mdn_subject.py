"""A read receipt quotes the original subject, whatever its characters, and stays 7-bit."""

from __future__ import annotations

import email.message
import email.parser
import email.policy

import pytest

from caducee.core import mdn
from caducee.core.mime import filenames
from caducee.errors import UsageError


def _report(subject: str | None) -> bytes:
    return mdn.build_mdn(
        original_message_id="<orig@op1.test>",
        original_subject=subject,
        from_address="cardio@op2.test",
        to_address="martin@op1.test",
        final_recipient="cardio@op2.test",
        disposition="displayed",
        manual=True,
        date="Sun, 29 Nov 2026 04:00:00 +0000",
        message_id="<mdn@op2.test>",
        boundary="mdn-b",
    )


@pytest.mark.parametrize(
    "subject",
    ["Résultat", "Échographie de Mme Lefèvre — contrôle à 3 mois " * 3, "检查结果", "plain"],
)
def test_subject_is_encoded_and_reads_back(subject: str) -> None:
    wire = _report(subject)
    assert wire.isascii()
    assert all(len(line) <= 78 for line in wire.split(b"\r\n"))
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(wire)
    assert str(msg["subject"]) == "Read receipt: " + " ".join(subject.split())[:200]
    human = list(msg.walk())[1]
    assert isinstance(human, email.message.EmailMessage)
    assert subject[:50] in human.get_content()
    parsed = mdn.parse_mdn(wire)
    assert (parsed.original_message_id, parsed.disposition) == ("<orig@op1.test>", "displayed")


def test_control_characters_in_the_subject_are_tidied_not_injected() -> None:
    wire = _report("Résultat\r\nBcc: evil@op2.test\x07")
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(wire)
    assert msg["bcc"] is None
    assert str(msg["subject"]) == "Read receipt: Résultat Bcc: evil@op2.test"


def test_other_fields_must_still_be_ascii() -> None:
    with pytest.raises(UsageError, match="Original-Message-ID must be printable ASCII"):
        mdn.build_mdn(
            original_message_id="<résumé@op1.test>",
            original_subject="x",
            from_address="cardio@op2.test",
            to_address="martin@op1.test",
            final_recipient="cardio@op2.test",
            disposition="displayed",
            manual=True,
            date="d",
            message_id="<m@op2.test>",
            boundary="b",
        )


# attachment names, as parsed by the compat32 policy the reader uses

PARTS = {
    'attachment; filename="r\xc3\xa9sultat.pdf"': "résultat.pdf",
    'attachment; filename="r\xe9sultat.pdf"': "résultat.pdf",  # Windows-1252, not UTF-8
    'attachment; filename="=?utf-8?b?csOpc3VsdGF0LnBkZg==?="': "résultat.pdf",
    "attachment; filename*=utf-8''r%C3%A9sultat.pdf": "résultat.pdf",
    'attachment; filename="=?x-unknown?q?abc?="': "=?x-unknown?q?abc?=",
    'inline; filename="=?utf-8?b?not base64!?="': "=?utf-8?b?not base64!?=",
    "attachment": None,
}


@pytest.mark.parametrize(("value", "expected"), PARTS.items())
def test_attachment_names(value: str, expected: str | None) -> None:
    raw = b"Content-Type: application/pdf\r\nContent-Disposition: "
    raw += value.encode("latin-1") + b"\r\n\r\nAAAA\r\n"
    part = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    assert filenames.filename(part) == expected
    assert filenames.disposition(part) == value.split(";")[0]
