"""Whole messages under mutation: opening never raises anything but caducee errors, and a
message that opens as validly signed is exactly what was sent."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caducee.core.cms.envelope import Recipient
from caducee.core.message import ProtectOptions, open_message, protect
from caducee.errors import CaduceeError

NOW = dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)
BODY = b"Troponin 0.02 ng/mL, within range."
LETTER = b"From: alice@op1.test\r\nTo: bob@op2.test\r\nSubject: Results\r\n\r\n" + BODY + b"\r\n"


@pytest.fixture(scope="module")
def wires(pki):  # type: ignore[no-untyped-def]
    out = {}
    for order in ("sign-encrypt", "encrypt-sign"):
        out[order] = protect(
            LETTER, signer=pki.alice.signing,
            recipients=[Recipient(pki.bob.encryption.certificate)],
            signing_time=NOW, random=os.urandom, options=ProtectOptions(order=order),
        )  # fmt: skip
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), order=st.sampled_from(["sign-encrypt", "encrypt-sign"]))
def test_mutated_messages_raise_only_caducee_errors(pki, wires, data, order) -> None:  # type: ignore[no-untyped-def]
    wire = bytearray(wires[order])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(wire) - 1))
        if kind == "flip":
            wire[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del wire[pos : pos + data.draw(st.integers(1, 64))]
        else:
            wire[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        if not wire:
            wire = bytearray(b"x")
    try:
        opened = open_message(bytes(wire), keys=[pki.bob.encryption])
    except CaduceeError:
        return
    if opened.signature_valid and opened.encrypted:
        assert BODY in opened.entity  # what verifies is what was signed


@given(
    body=st.binary(max_size=2000),
    subject=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_round_trip_of_any_body(pki, body, subject) -> None:  # type: ignore[no-untyped-def]
    import email.header

    encoded = email.header.Header(subject, "utf-8").encode().encode("ascii")
    entity = (b"From: alice@op1.test\r\nSubject: " + encoded
              + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + body)  # fmt: skip
    wire = protect(entity, signer=pki.alice.signing,
                   recipients=[Recipient(pki.bob.encryption.certificate)], signing_time=NOW,
                   random=os.urandom)  # fmt: skip
    opened = open_message(wire, keys=[pki.bob.encryption])
    assert opened.signature_valid
    inner_body = opened.entity.split(b"\r\n\r\n", 1)[1]
    # the signed form is canonical (CRLF) MIME
    assert inner_body == body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    shown = opened.headers.get("subject") or ""
    assert shown.split() == subject.split()  # same words; folding may change the spaces
