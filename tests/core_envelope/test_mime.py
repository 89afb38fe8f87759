"""The application/pkcs7-mime wrapping: headers, base64 layout, detection, unwrapping."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from caducee.core.algorithms import ContentCipher
from caducee.core.cms.envelope import Recipient
from caducee.core.mime.enveloped import decrypt_mime, encrypt_mime, is_enveloped_mime
from caducee.errors import MalformedMessageError
from tests.conftest import TestPKI as PKI
from tests.core_envelope.conftest import identity, rand

ENTITY_LF = b"Content-Type: text/plain\n\nligne 1\nligne 2\n"
ENTITY_CRLF = ENTITY_LF.replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    ("cipher", "smime_type"),
    [
        (ContentCipher.AES_256_GCM, "authEnveloped-data"),
        (ContentCipher.AES_128_CBC, "enveloped-data"),
    ],
)
def test_layout(pki: PKI, cipher: ContentCipher, smime_type: str) -> None:
    alice = identity(pki, "alice").encryption
    message = encrypt_mime(
        ENTITY_LF * 500, [Recipient(alice.certificate)], random=rand, cipher=cipher
    )
    assert b"\n" not in message.replace(b"\r\n", b"")  # CRLF only
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed.get_content_type() == "application/pkcs7-mime"
    assert parsed.get_param("smime-type") == smime_type
    assert parsed.get_param("name") == "smime.p7m"
    assert parsed.get_filename() == "smime.p7m"
    assert parsed["Content-Transfer-Encoding"] == "base64"
    for header in ("From", "To", "Date", "Subject"):
        assert parsed[header] is None
    body = message.split(b"\r\n\r\n", 1)[1]
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) == 76 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 76
    assert is_enveloped_mime(message)
    report, entity = decrypt_mime(message, [alice])
    assert entity == ENTITY_CRLF * 500  # canonicalised before encryption
    assert report.cipher is cipher


def test_base64_exact_chunk_boundaries(pki: PKI) -> None:
    """Sizes around the encoder's internal chunk boundaries still give 76-column lines."""
    alice = identity(pki, "alice").encryption
    for size in (0, 57 * 4096 - 200, 57 * 4096 * 2 + 13):
        entity = b"Content-Type: application/octet-stream\r\n\r\n" + b"\xab" * size
        message = encrypt_mime(entity, [Recipient(alice.certificate)], random=rand)
        body = message.split(b"\r\n\r\n", 1)[1]
        assert all(len(line) == 76 for line in body.split(b"\r\n")[:-2])
        assert decrypt_mime(message, [alice])[1] == entity


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data", True),
        (b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data", True),
        (b"Content-Type: application/x-pkcs7-mime; smime-type=enveloped-data", True),
        (b'Content-Type: application/x-pkcs7-mime; name="smime.p7m"', True),
        (b'Content-Type: application/pkcs7-mime;\r\n name="MAIL.P7M"', True),
        (b"Content-Type: application/pkcs7-mime\r\nContent-Disposition: attachment;"
         b' filename="x.p7m"', True),
        (b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m", False),
        (b"Content-Type: application/pkcs7-mime; smime-type=certs-only", False),
        (b"Content-Type: application/pkcs7-mime", False),
        (b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"', False),
        (b"Content-Type: text/plain", False),
    ],
)  # fmt: skip
def test_is_enveloped_mime(header: bytes, expected: bool) -> None:
    assert is_enveloped_mime(b"Subject: x\r\n" + header + b"\r\n\r\nAAAA\r\n") is expected
    assert is_enveloped_mime(header.replace(b"\r\n", b"\n") + b"\n\nAAAA\n") is expected


def test_is_enveloped_mime_garbage() -> None:
    assert not is_enveloped_mime(b"")
    assert not is_enveloped_mime(b"no blank line at all")
    assert not is_enveloped_mime(b"\r\n\r\nbody")


def test_decrypt_mime_binary_body(pki: PKI) -> None:
    from caducee.core.cms.envelope import encrypt_data

    bob = identity(pki, "bob").encryption
    der = encrypt_data(ENTITY_CRLF, [Recipient(bob.certificate)], random=rand)
    message = (
        b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + der
    )
    assert decrypt_mime(message, [bob])[1] == ENTITY_CRLF
    folded = base64.encodebytes(der)  # LF, 76 columns, x-pkcs7-mime with a .p7m name only
    legacy = (
        b'Content-Type: application/x-pkcs7-mime; name="smime.p7m"\n'
        b"Content-Transfer-Encoding: base64\n\n" + folded
    )
    assert decrypt_mime(legacy, [bob])[1] == ENTITY_CRLF


@pytest.mark.parametrize(
    "message",
    [
        b"Content-Type: text/plain\r\n\r\nhello\r\n",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAA\r\n",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nAAAA\r\n",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n",
        b"",
    ],
)
def test_decrypt_mime_rejects(pki: PKI, message: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decrypt_mime(message, [identity(pki, "alice").encryption])


def test_canonical_entity_is_taken_as_is(pki: PKI) -> None:
    """``canonical=True`` skips the CRLF scan: the caller vouches for the form."""
    alice = identity(pki, "alice").encryption
    message = encrypt_mime(ENTITY_LF, [Recipient(alice.certificate)], random=rand, canonical=True)
    assert decrypt_mime(message, [alice])[1] == ENTITY_LF
    message = encrypt_mime(ENTITY_CRLF, [Recipient(alice.certificate)], random=rand, canonical=True)
    assert decrypt_mime(message, [alice])[1] == ENTITY_CRLF
