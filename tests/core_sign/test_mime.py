"""S/MIME signed entities: the shape we write and the variants real clients send."""

from __future__ import annotations

import binascii
import email
import email.message
import re

import pytest

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.mime.canon import to_lf
from caducee.core.mime.signed import (
    is_signed_mime,
    sign_mime,
    verify_mime,
)
from caducee.errors import MalformedMessageError
from tests.conftest import TestPKI as PKI
from tests.core_sign.conftest import T0

ENTITY_LF = b"Content-Type: text/plain; charset=us-ascii\n\nOrdonnance\n\n-- \nDr Martin\n"
ENTITY = ENTITY_LF.replace(b"\n", b"\r\n")


def _boundary(message: bytes) -> bytes:
    found = re.search(rb'boundary="([^"]+)"', message)
    assert found
    return found.group(1)


@pytest.mark.parametrize(
    ("digest", "micalg"),
    [(Digest.SHA256, "sha-256"), (Digest.SHA384, "sha-384"), (Digest.SHA512, "sha-512")],
)
def test_multipart_signed_shape(pki: PKI, digest: Digest, micalg: str) -> None:
    message = sign_mime(ENTITY_LF, pki.alice.signing, signing_time=T0, digest=digest)
    assert b"\n" not in message.replace(b"\r\n", b"")  # CRLF only
    parsed = email.message_from_bytes(message)
    assert parsed.get_content_type() == "multipart/signed"
    assert parsed.get_param("protocol") == "application/pkcs7-signature"
    assert parsed.get_param("micalg") == micalg
    assert parsed["Date"] is None and parsed["From"] is None
    payload = parsed.get_payload()
    assert isinstance(payload, list) and len(payload) == 2
    second = payload[1]
    assert isinstance(second, email.message.Message)
    assert second.get_content_type() == "application/pkcs7-signature"
    assert second.get_param("name") == "smime.p7s"
    assert second["Content-Transfer-Encoding"] == "base64"
    body = second.get_payload()
    assert isinstance(body, str)
    body_lines = body.split("\r\n")
    assert max(len(line) for line in body_lines) == 76
    assert ENTITY in message  # the entity travels as it was signed (canonical form)
    report, covered = verify_mime(message)
    assert report.valid and covered == ENTITY


def test_boundary_is_derived_not_random(pki: PKI) -> None:
    one = sign_mime(ENTITY, pki.carol.signing, signing_time=T0)
    two = sign_mime(ENTITY, pki.carol.signing, signing_time=T0)
    other = sign_mime(ENTITY + b"x", pki.carol.signing, signing_time=T0)
    assert _boundary(one) == _boundary(two) != _boundary(other)


def test_opaque_shape(pki: PKI) -> None:
    message = sign_mime(ENTITY, pki.dave.signing, signing_time=T0, detached=False)
    parsed = email.message_from_bytes(message)
    assert parsed.get_content_type() == "application/pkcs7-mime"
    assert parsed.get_param("smime-type") == "signed-data"
    assert parsed.get_param("name") == "smime.p7m"
    report, entity = verify_mime(message)
    assert report.valid and not report.detached and entity == ENTITY


# -- tolerance for what clients send -------------------------------------------------------------


def test_lf_only_message_verifies_with_crlf_retry(pki: PKI) -> None:
    message = to_lf(sign_mime(ENTITY, pki.bob.signing, signing_time=T0))
    report, covered = verify_mime(message)
    assert report.valid
    assert covered == ENTITY  # the canonical form that was signed


def _refold(message: bytes, width: int, trailing: bytes = b"") -> bytes:
    head, _, tail = message.partition(b'filename="smime.p7s"')
    headers, _, rest = tail.partition(b"\r\n\r\n")
    body, _, close = rest.partition(b"\r\n--")
    encoded = body.replace(b"\r\n", b"")
    lines = [encoded[i : i + width] + trailing for i in range(0, len(encoded), width)]
    return (
        head
        + b'filename="smime.p7s"'
        + headers
        + b"\r\n\r\n"
        + b"\r\n".join(lines)
        + b"\r\n--"
        + close
    )


@pytest.mark.parametrize(("width", "trailing"), [(64, b""), (72, b"  "), (1000, b"\t"), (4, b"")])
def test_base64_folded_any_width(pki: PKI, width: int, trailing: bytes) -> None:
    message = _refold(sign_mime(ENTITY, pki.alice.signing, signing_time=T0), width, trailing)
    assert verify_mime(message)[0].valid


def test_old_content_types_unquoted_boundary_preamble_epilogue(pki: PKI) -> None:
    message = sign_mime(ENTITY, pki.carol.signing, signing_time=T0)
    boundary = _boundary(message)
    old = (
        message.replace(b"application/pkcs7-signature", b"application/x-pkcs7-signature")
        .replace(b'boundary="' + boundary + b'"', b"boundary=" + boundary)
        .replace(b"This is a cryptographically", b"Preamble\r\n--not-a-boundary\r\n")
        + b"epilogue\r\n--"
        + boundary
        + b"\r\njunk\r\n"
    )
    old = b"From: carol@op1.test\r\nSubject: =?utf-8?q?R=C3=A9sultat?=\r\n" + old
    assert is_signed_mime(old)
    report, covered = verify_mime(old)
    assert report.valid and covered == ENTITY


def test_no_preamble(pki: PKI) -> None:
    message = sign_mime(ENTITY, pki.dave.signing, signing_time=T0)
    head, _, rest = message.partition(b"\r\n\r\n")
    bare = head + b"\r\n\r\n" + rest[rest.index(b"--" + _boundary(message)) :]
    assert bare.count(b"cryptographically signed") == 0
    report, covered = verify_mime(bare)
    assert report.valid and covered == ENTITY


def test_folded_content_type_header(pki: PKI) -> None:
    message = sign_mime(ENTITY, pki.carol.signing, signing_time=T0)
    folded = message.replace(b"; micalg=", b";\r\n\tmicalg=", 1)
    assert verify_mime(folded)[0].valid


def test_opaque_variants(pki: PKI) -> None:
    message = sign_mime(ENTITY, pki.alice.signing, signing_time=T0, detached=False)
    x_type = message.replace(b"application/pkcs7-mime", b"application/x-pkcs7-mime")
    no_smime_type = message.replace(b" smime-type=signed-data;", b"")
    lf = to_lf(message)
    headers, _, body = message.partition(b"\r\n\r\n")
    binary = (
        headers.replace(b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: binary")
        + b"\r\n\r\n"
        + binascii.a2b_base64(body)
        + b"\r\n"
    )
    for variant in (x_type, no_smime_type, lf, binary):
        assert is_signed_mime(variant)
        report, entity = verify_mime(variant)
        assert report.valid and entity == ENTITY


def test_is_signed_mime() -> None:
    yes = [
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=b\r\n',
        b'Content-Type: multipart/signed; protocol="application/x-pkcs7-signature"; boundary=b',
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMIIB",
        b"Content-Type: application/x-pkcs7-mime; name=smime.p7m\n\nMIIB",
        b'Content-Type: application/pkcs7-mime\nContent-Disposition: attachment; filename="x.p7m"',
    ]
    no = [
        b"Content-Type: text/plain\r\n\r\nhello",
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=b',
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n",
        b"Content-Type: application/pkcs7-mime; name=smime.p7z\r\n",
        b"",
        b"\x00\xff garbage",
    ]
    assert all(is_signed_mime(h) for h in yes)
    assert not any(is_signed_mime(h) for h in no)


@pytest.mark.parametrize(
    ("message", "where"),
    [
        (b"Content-Type: text/plain\r\n\r\nhello\r\n", "Content-Type"),
        (b"Content-Type: multipart/signed; protocol=application/pkcs7-signature\r\n\r\n", ""),
        (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b"boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--zz--\r\n",
            "multipart/signed",
        ),
        (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b"boundary=zz\r\n\r\n--zz\r\n\r\nhi\r\n--zz\r\nContent-Type: text/plain\r\n\r\nx\r\n",
            "multipart/signed",
        ),
        (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b"boundary=zz\r\n\r\n--zz\r\n\r\nhi\r\n--zz\r\n"
            b"Content-Type: application/pkcs7-signature\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nMIIBAAAA\r\n--zz--\r\n",
            "ContentInfo",
        ),
        (
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
            "",
        ),
    ],
)
def test_broken_mime_raises_malformed(message: bytes, where: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        verify_mime(message)
    assert where in str(info.value)


def test_altered_first_part_is_invalid(pki: PKI) -> None:
    message = sign_mime(ENTITY, pki.alice.signing, signing_time=T0, scheme=SignatureScheme.RSA_PSS)
    report, _ = verify_mime(message.replace(b"Ordonnance", b"Ordonnancf"))
    assert not report.valid
    assert report.signers[0].error == "content digest does not match"
