"""Property tests: round trips hold; random damage only ever raises caducee errors."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caducee import devpki
from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.errors import CaduceeError

# Module-level identities: hypothesis re-runs the test body, fixtures would be shared anyway.
_CA = devpki.make_ca("caducee property CA")
_RSA = devpki.make_identity(_CA, "prop-rsa@op1.test").encryption
_EC = devpki.make_identity(_CA, "prop-ec@op1.test", "p256").encryption
_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_SETTINGS
@given(
    content=st.binary(max_size=2048),
    cipher=st.sampled_from(list(ContentCipher)),
    transport=st.sampled_from(list(KeyTransport)),
    use_ski=st.booleans(),
    ec_first=st.booleans(),
)
def test_round_trip(
    content: bytes, cipher: ContentCipher, transport: KeyTransport, use_ski: bool, ec_first: bool
) -> None:
    recipients = [
        Recipient(_RSA.certificate, transport, use_ski),
        Recipient(_EC.certificate, use_ski=use_ski),
    ]
    if ec_first:
        recipients.reverse()
    der = encrypt_data(content, recipients, random=os.urandom, cipher=cipher)
    for key in (_RSA, _EC):
        assert decrypt_data(der, [key]).content == content


_BASE = {
    cipher: encrypt_data(
        b"Content-Type: text/plain\r\n\r\nbonjour\r\n",
        [Recipient(_RSA.certificate, KeyTransport.RSA_PKCS1V15), Recipient(_EC.certificate)],
        random=os.urandom,
        cipher=cipher,
    )
    for cipher in (ContentCipher.AES_256_GCM, ContentCipher.AES_128_CBC)
}


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(_BASE[draw(st.sampled_from(list(_BASE)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x80, 0xFF, 0x30, 0x31, 0xA0, 0x04, 0x24]))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@_SETTINGS
@given(data=_mutated(), use_ec=st.booleans())
def test_mutations_raise_only_caducee_errors(data: bytes, use_ec: bool) -> None:
    key = _EC if use_ec else _RSA
    with contextlib.suppress(CaduceeError):
        decrypt_data(data, [key])
