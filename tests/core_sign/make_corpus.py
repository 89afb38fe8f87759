"""Regenerate the bad-input corpus in tests/data/malformed/sign/ (run by hand, not by pytest).

    .venv/bin/python -m tests.core_sign.make_corpus

Each file is a signed message (made with a throw-away key) broken in one way; the expected
outcome of each lives in test_malformed.py. The files are kept so the corpus stays stable.
"""

from __future__ import annotations

import base64
import datetime as dt
import pathlib

from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from caducee import devpki
from caducee.core.cms.der import der_oid, der_set_of, tlv
from caducee.core.cms.sign import sign_data
from caducee.core.cms.sign_attrs import ID_DATA, OID_CONTENT_TYPE, OID_MESSAGE_DIGEST
from caducee.core.mime.signed import sign_mime

OUT = pathlib.Path(__file__).parent.parent / "data" / "malformed" / "sign"
T0 = dt.datetime(2026, 11, 29, 8, 30, tzinfo=dt.UTC)
CONTENT = b"Content-Type: text/plain\r\n\r\nCompte rendu\r\n"
SHA256_OID = der_oid("2.16.840.1.101.3.4.2.1")


def _resign(der: bytes, key: devpki.TestIdentity, attrs: list[bytes]) -> bytes:
    """Replace the signed attributes and sign them properly: only the attributes are wrong.

    Assembled by hand: asn1crypto refuses to re-encode some of the broken attributes."""
    info = cms.ContentInfo.load(der)
    sd = info["content"]
    si = sd["signer_infos"][0]
    attr_set = der_set_of(attrs)
    private = key.signing._key
    signature = private.sign(attr_set, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg,arg-type]
    signer_info = tlv(
        0x30,
        si["version"].dump(),
        si["sid"].dump(),
        si["digest_algorithm"].dump(),
        b"\xa0" + attr_set[1:],
        si["signature_algorithm"].dump(),
        tlv(0x04, signature),
    )
    signed_data = tlv(
        0x30,
        sd["version"].dump(),
        sd["digest_algorithms"].dump(),
        sd["encap_content_info"].dump(),
        sd["certificates"].dump(),
        tlv(0x31, signer_info),
    )
    return tlv(0x30, der_oid("1.2.840.113549.1.7.2"), tlv(0xA0, signed_data))


def _attr(oid: str, value: bytes) -> bytes:
    return tlv(0x30, der_oid(oid), tlv(0x31, value))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ca = devpki.make_ca("Corpus CA")
    alice = devpki.make_identity(ca, "alice@corpus.test")
    opaque = sign_data(CONTENT, alice.signing, signing_time=T0, detached=False)
    h = hashes.Hash(hashes.SHA256())
    h.update(CONTENT)
    digest = h.finalize()
    files: dict[str, bytes] = {}

    files["empty.der"] = b""
    files["truncated.der"] = opaque[: len(opaque) // 2]
    files["truncated-header.der"] = b"\x30\x82\x10"
    files["wrong-outer-length.der"] = opaque[:2] + bytes([opaque[2] + 1]) + opaque[3:]
    files["huge-declared-length.der"] = b"\x30\x84\xff\xff\xff\xf0" + opaque[4:]
    files["nine-byte-length.der"] = b"\x30\x89" + b"\x01" * 9 + opaque[4:]
    files["wrong-tag-contentinfo.der"] = b"\x31" + opaque[1:]
    si_set = opaque.rfind(b"\x31\x82", 0, len(opaque) - 300)
    files["wrong-tag-signerinfos.der"] = opaque[:si_set] + b"\x30" + opaque[si_set + 1 :]
    files["not-signed-data.der"] = opaque.replace(
        der_oid("1.2.840.113549.1.7.2"), der_oid("1.2.840.113549.1.7.3"), 1
    )
    files["unknown-digest-oid.der"] = opaque.replace(
        SHA256_OID, der_oid("2.16.840.1.101.3.4.2.127")
    )
    files["sha224-digest.der"] = opaque.replace(SHA256_OID, der_oid("2.16.840.1.101.3.4.2.4"))
    files["unknown-signature-oid.der"] = opaque.replace(
        der_oid("1.2.840.113549.1.1.1"), der_oid("1.2.840.113549.1.1.99")
    )
    files["pss-without-parameters.der"] = opaque.replace(
        tlv(0x30, der_oid("1.2.840.113549.1.1.1"), b"\x05\x00"),
        tlv(0x30, der_oid("1.2.840.113549.1.1.10"), b"\x05\x00"),
    )
    files["trailing-garbage.der"] = opaque + b"garbage"
    files["absurd-nesting.der"] = b"\x30\x80" * 20000 + b"\x00\x00" * 20000
    deep = b"\x30\x80" * 5000 + b"\x00\x00" * 5000
    files["deep-unknown-attribute.der"] = _resign(
        opaque,
        alice,
        [
            _attr(OID_CONTENT_TYPE, der_oid(ID_DATA)),
            _attr(OID_MESSAGE_DIGEST, tlv(0x04, digest)),
            _attr("1.2.3.4", deep),
        ],
    )
    files["signature-over-other-content.der"] = opaque.replace(b"Compte rendu", b"Compte-rendu")
    files["tampered-signed-attribute.der"] = opaque.replace(b"261129083000Z", b"261129083001Z")
    no_cert = cms.ContentInfo.load(opaque)
    no_cert["content"]["certificates"] = []
    files["missing-certificate.der"] = bytes(no_cert.dump(force=True))
    no_signer = cms.ContentInfo.load(opaque)
    no_signer["content"]["signer_infos"] = []
    files["no-signer.der"] = bytes(no_signer.dump(force=True))
    content_type = _attr(OID_CONTENT_TYPE, der_oid(ID_DATA))
    message_digest = _attr(OID_MESSAGE_DIGEST, tlv(0x04, digest))
    files["duplicate-message-digest.der"] = _resign(
        opaque, alice, [content_type, message_digest, message_digest + b""]
    )
    files["no-message-digest.der"] = _resign(opaque, alice, [content_type])
    files["content-type-mismatch.der"] = _resign(
        opaque,
        alice,
        [_attr(OID_CONTENT_TYPE, der_oid("1.2.840.113549.1.7.2")), message_digest],
    )
    files["bad-signing-time.der"] = _resign(
        opaque,
        alice,
        [content_type, message_digest, _attr("1.2.840.113549.1.9.5", b"\x17\x03abc")],
    )

    detached = sign_mime(CONTENT, alice.signing, signing_time=T0)
    boundary_at = detached.index(b"boundary=")
    files["mime-no-boundary.eml"] = detached[:boundary_at] + b"x" + detached[boundary_at + 9 :]
    files["mime-signature-part-missing.eml"] = detached[: detached.index(b"\r\n--", 200)]
    files["mime-bad-base64.eml"] = detached.replace(b"MII", b"!!!", 1)
    files["mime-signature-truncated.eml"] = detached[: len(detached) - 300] + b"\r\n"
    files["mime-tampered-content.eml"] = detached.replace(b"Compte rendu", b"Compte-rendu")
    files["mime-opaque-garbage.eml"] = (
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"\x30\x03\x02\x01")
    )
    for name, data in files.items():
        (OUT / name).write_bytes(data)


if __name__ == "__main__":
    main()
