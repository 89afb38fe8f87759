"""Encodings other peers produce: BER indefinite lengths and chunked content, authAttrs."""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caducee.core.algorithms import ContentCipher
from caducee.core.cms import der as a
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.errors import IntegrityError
from tests.conftest import TestPKI as PKI
from tests.core_envelope.conftest import identity

CONTENT = b"Content-Type: text/plain\r\n\r\n" + b"0123456789abcdef" * 300 + b"tail\r\n"


def _deterministic(seed: bytes):  # type: ignore[no-untyped-def]
    counter = 0

    def take(size: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < size:
            out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
            counter += 1
        return out[:size]

    return take


def _to_ber(der: bytes, chunk: int) -> bytes:
    """Re-encode: indefinite lengths for the outer layers, encryptedContent in chunks."""
    buf = memoryview(der)

    def walk(tlv: a.Tlv, depth: int) -> bytes:
        if tlv.tag == 0x80:  # [0] IMPLICIT OCTET STRING: make it constructed, chunked
            body = bytes(buf[tlv.body : tlv.end])
            pieces = [a.tlv(0x04, body[i : i + chunk]) for i in range(0, len(body), chunk)]
            return b"\xa0\x80" + b"".join(pieces) + b"\x00\x00"
        if tlv.constructed and depth < 4:
            inner = b"".join(walk(c, depth + 1) for c in a.children(buf, tlv, "test"))
            return bytes((tlv.tag, 0x80)) + inner + b"\x00\x00"
        return bytes(buf[tlv.start : tlv.next])

    return walk(a.read_tlv(buf, 0, len(buf), "test"), 0)


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_ber_indefinite_and_chunked(pki: PKI, cipher: ContentCipher, chunk: int) -> None:
    names = ("alice", "carol")
    recipients = [Recipient(identity(pki, n).encryption.certificate) for n in names]
    der = encrypt_data(CONTENT, recipients, random=_deterministic(b"ber"), cipher=cipher)
    ber = _to_ber(der, chunk)
    assert ber != der and b"\x80" in ber[:4]
    for name in names:
        assert decrypt_data(ber, [identity(pki, name).encryption]).content == CONTENT


def test_auth_attrs_are_authenticated(pki: PKI) -> None:
    """RFC 5083: authAttrs (DER, tagged as SET OF) are the GCM additional data."""
    alice = identity(pki, "alice").encryption
    stream = _deterministic(b"aad")
    der = encrypt_data(CONTENT, [Recipient(alice.certificate)], random=stream)
    replay = _deterministic(b"aad")
    cek, nonce = replay(32), replay(12)
    attrs = cms.CMSAttributes([{"type": "content_type", "values": ["data"]}])
    aad = attrs.dump()
    sealed = AESGCM(cek).encrypt(nonce, CONTENT, aad)
    info = cms.ContentInfo.load(der)
    info["content"]["auth_encrypted_content_info"]["encrypted_content"] = sealed[:-16]
    info["content"]["auth_attrs"] = attrs
    info["content"]["mac"] = sealed[-16:]
    with_attrs = info.dump(force=True)
    assert decrypt_data(with_attrs, [alice]).content == CONTENT
    info = cms.ContentInfo.load(with_attrs)
    info["content"]["auth_attrs"] = cms.CMSAttributes(
        [{"type": "content_type", "values": ["signed_data"]}]
    )
    with pytest.raises(IntegrityError):
        decrypt_data(info.dump(force=True), [alice])
