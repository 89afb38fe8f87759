"""What Dr Martin sends: a referral letter and a one-page PDF lab result, made in memory.

Why here: the test checks that none of this text reaches the wire or the disk in clear, so the
phrases it looks for are defined once (:data:`SECRET_PHRASES`).
"""

from __future__ import annotations

from caducee.agent import Attachment

__all__ = ["ATTACHMENT_NAME", "BODY", "SECRET_PHRASES", "SUBJECT", "lab_result_pdf"]

SUBJECT = "Referral: exertional chest pain, stress test requested"
BODY = (
    "Dear colleague,\n\n"
    "I am referring a patient of the practice for an exercise stress test:\n"
    "exertional chest pain for three weeks, normal resting ECG.\n"
    "The lab result of this morning is attached.\n\n"
    "Best regards,\nDr Martin\n"
)
ATTACHMENT_NAME = "lab-result.pdf"
#: text that must never appear in clear outside the agents' memory
SECRET_PHRASES = ("exercise stress test", "exertional chest pain", "Troponin")


def _pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing ``text`` (ASCII, no parentheses)."""
    stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def lab_result_pdf() -> Attachment:
    return Attachment(
        ATTACHMENT_NAME,
        _pdf("DEMO lab result - Troponin I: below the detection threshold - test data only"),
        "application/pdf",
    )
