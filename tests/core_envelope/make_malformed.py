"""Regenerate the bad-input corpus in tests/data/malformed/envelope/ (run from the repo root).

    .venv/bin/python -m tests.core_envelope.make_malformed

Each file is a message that must fail with one typed caducee error; ``manifest.json`` says which
(and, for malformed input, a word of the ``where``). The throw-away TEST keys the messages are
encrypted for are stored next to them so the corpus is stable across runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import pathlib
from collections.abc import Callable

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.cms.envelope import Recipient, encrypt_data

HERE = pathlib.Path(__file__).resolve().parent.parent / "data" / "malformed" / "envelope"
CONTENT = b"Content-Type: text/plain\r\n\r\n" + b"Compte rendu de consultation.\r\n" * 10


def deterministic(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def take(size: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < size:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:size]

    return take


def _cert(key, serial: int, name: str = "corpus"):  # type: ignore[no-untyped-def]
    issuer_key = rsa.generate_private_key(65537, 2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "caducee TEST corpus - not a real key"),
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "caducee TEST corpus CA")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=36500))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(issuer_key, hashes.SHA256())
    )


def _pem_key(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _retag(der: bytes, edit: Callable[[cms.ContentInfo], None]) -> bytes:
    info = cms.ContentInfo.load(der)
    edit(info)
    return bytes(info.dump(force=True))


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_cert = _cert(rsa_key, 1001)
    ec_cert = _cert(ec_key, 1002)
    other_key = rsa.generate_private_key(65537, 2048)
    other_cert = _cert(other_key, 1003, "someone else")
    # Same issuer and serial as rsa_cert, another key: "encrypted for us" with the wrong key.
    twin_cert = (
        x509.CertificateBuilder()
        .subject_name(rsa_cert.subject)
        .issuer_name(rsa_cert.issuer)
        .public_key(other_key.public_key())
        .serial_number(rsa_cert.serial_number)
        .not_valid_before(rsa_cert.not_valid_before_utc)
        .not_valid_after(rsa_cert.not_valid_after_utc)
        .sign(other_key, hashes.SHA256())
    )
    (HERE / "rsa-key.pem").write_bytes(_pem_key(rsa_key))
    (HERE / "ec-key.pem").write_bytes(_pem_key(ec_key))
    for name, cert in (("rsa-cert.pem", rsa_cert), ("ec-cert.pem", ec_cert)):
        (HERE / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    cases: dict[str, dict[str, str]] = {}

    def add(name: str, data: bytes, error: str, where: str = "", key: str = "rsa") -> None:
        (HERE / name).write_bytes(data)
        cases[name] = {"error": error, "where": where, "key": key}

    def make(
        cipher: ContentCipher,
        kt: KeyTransport = KeyTransport.RSA_OAEP_SHA256,
        cert: x509.Certificate = rsa_cert,
        seed: bytes = b"corpus",
    ) -> bytes:
        return encrypt_data(
            CONTENT, [Recipient(cert, kt)], random=deterministic(seed), cipher=cipher
        )

    gcm = make(ContentCipher.AES_256_GCM)
    cbc = make(ContentCipher.AES_256_CBC, KeyTransport.RSA_PKCS1V15)
    ec_gcm = make(ContentCipher.AES_128_GCM, cert=ec_cert)
    add("valid-gcm.der", gcm, "")
    add("valid-cbc.der", cbc, "")
    add("valid-ec.der", ec_gcm, "", key="ec")

    # --- framing -------------------------------------------------------------------------------
    add("empty.der", b"", "MalformedMessageError", "ContentInfo")
    add("one-byte.der", gcm[:1], "MalformedMessageError", "ContentInfo")
    add("truncated-half.der", gcm[: len(gcm) // 2], "MalformedMessageError", "ContentInfo")
    add("truncated-mac.der", gcm[:-3], "MalformedMessageError", "ContentInfo")
    assert gcm[:2] == b"\x30\x82"
    longer = (int.from_bytes(gcm[2:4], "big") + 5).to_bytes(2, "big")
    add(
        "outer-length-too-long.der",
        gcm[:2] + longer + gcm[4:],
        "MalformedMessageError",
        "ContentInfo",
    )
    huge = b"\x30\x88\x7f\xff\xff\xff\xff\xff\xff\xff" + gcm[4:]
    add("huge-declared-length.der", huge, "MalformedMessageError", "exceeds")
    add(
        "bad-length-octets.der",
        b"\x30\x89" + b"\x01" * 9 + gcm[4:],
        "MalformedMessageError",
        "length",
    )
    add("wrong-outer-tag.der", b"\x31" + gcm[1:], "MalformedMessageError", "ContentInfo")
    add("trailing-garbage.der", gcm + b"garbage", "MalformedMessageError", "trailing")
    add("primitive-indefinite.der", b"\x04\x80" + gcm, "MalformedMessageError", "indefinite")
    add("indefinite-no-eoc.der", b"\x30\x80" + gcm[4:], "MalformedMessageError", "ContentInfo")
    bomb = b"\x30\x80" * 60 + b"\x00\x00" * 60
    add("nesting-bomb.der", bomb, "MalformedMessageError", "deep")
    add("high-tag.der", b"\x3f\x81\x00\x00", "MalformedMessageError", "tag")

    # --- structure -----------------------------------------------------------------------------
    add(
        "not-enveloped.der",
        _oid_swap(gcm, "1.2.840.113549.1.9.16.1.23", "1.2.840.113549.1.9.16.1.99"),
        "MalformedMessageError",
        "ContentInfo",
    )
    add(
        "unknown-cipher-oid.der",
        _oid_swap(gcm, "2.16.840.1.101.3.4.1.46", "2.16.840.1.101.3.4.1.47"),
        "UnsupportedAlgorithmError",
    )
    auth = cms.ContentInfo.load(gcm)["content"]
    legacy = cms.ContentInfo.load(cbc)["content"]
    gcm_in_env = cms.ContentInfo(
        {
            "content_type": "enveloped_data",
            "content": cms.EnvelopedData(
                {
                    "version": "v0",
                    "recipient_infos": auth["recipient_infos"].copy(),
                    "encrypted_content_info": auth["auth_encrypted_content_info"].copy(),
                }
            ),
        }
    )
    add("gcm-in-enveloped-data.der", gcm_in_env.dump(), "UnsupportedAlgorithmError")
    cbc_in_auth = cms.ContentInfo(
        {
            "content_type": "authenticated_enveloped_data",
            "content": cms.AuthEnvelopedData(
                {
                    "version": "v0",
                    "recipient_infos": legacy["recipient_infos"].copy(),
                    "auth_encrypted_content_info": legacy["encrypted_content_info"].copy(),
                    "mac": b"\x00" * 16,
                }
            ),
        }
    )
    add("cbc-in-auth-enveloped.der", cbc_in_auth.dump(), "UnsupportedAlgorithmError")

    def drop_content(info: cms.ContentInfo) -> None:
        info["content"]["auth_encrypted_content_info"]["encrypted_content"] = None

    add("detached-content.der", _retag(gcm, drop_content), "MalformedMessageError", "detached")

    def short_mac(info: cms.ContentInfo) -> None:
        info["content"]["mac"] = info["content"]["mac"].native[:12]

    add("mac-shorter-than-icvlen.der", _retag(gcm, short_mac), "MalformedMessageError", "icvlen")

    ris = cms.ContentInfo.load(gcm)["content"]["recipient_infos"].dump()
    add(
        "recipientinfos-wrong-tag.der",
        gcm.replace(ris, b"\x30" + ris[1:], 1),
        "MalformedMessageError",
        "recipientInfos",
    )

    def bad_nonce(info: cms.ContentInfo) -> None:
        alg = info["content"]["auth_encrypted_content_info"]["content_encryption_algorithm"]
        alg["parameters"] = core.Any.load(b"\x30\x05\x04\x03abc")

    add("gcm-nonce-too-short.der", _retag(gcm, bad_nonce), "MalformedMessageError", "nonce")

    def not_blocks(info: cms.ContentInfo) -> None:
        eci = info["content"]["encrypted_content_info"]
        eci["encrypted_content"] = eci["encrypted_content"].native[:-1]

    add("cbc-partial-block.der", _retag(cbc, not_blocks), "MalformedMessageError", "blocks")

    def unknown_transport(info: cms.ContentInfo) -> None:
        ktri = info["content"]["recipient_infos"][0].chosen
        ktri["key_encryption_algorithm"] = cms.KeyEncryptionAlgorithm({"algorithm": "1.2.3.4"})

    add("unknown-key-transport.der", _retag(gcm, unknown_transport), "UnsupportedAlgorithmError")

    def oaep_sha512(info: cms.ContentInfo) -> None:
        ktri = info["content"]["recipient_infos"][0].chosen
        params = algos.RSAESOAEPParams(
            {
                "hash_algorithm": {"algorithm": "sha512"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha512"}},
            }
        )
        ktri["key_encryption_algorithm"] = cms.KeyEncryptionAlgorithm(
            {"algorithm": "rsaes_oaep", "parameters": params}
        )

    add("oaep-sha512.der", _retag(gcm, oaep_sha512), "UnsupportedAlgorithmError")

    def unknown_scheme(info: cms.ContentInfo) -> None:
        kari = info["content"]["recipient_infos"][0].chosen
        old = kari["key_encryption_algorithm"]
        kari["key_encryption_algorithm"] = cms.KeyEncryptionAlgorithm.load(
            old.dump().replace(bytes.fromhex("2b8104010b01"), bytes.fromhex("2b8104010b09"))
        )

    add(
        "unknown-ecdh-scheme.der",
        _retag(ec_gcm, unknown_scheme),
        "UnsupportedAlgorithmError",
        key="ec",
    )

    def bad_point(info: cms.ContentInfo) -> None:
        kari = info["content"]["recipient_infos"][0].chosen
        spki = kari["originator"].chosen
        point = bytearray(spki["public_key"].native)
        point[-1] ^= 1
        spki["public_key"] = bytes(point)

    add(
        "ec-point-off-curve.der",
        _retag(ec_gcm, bad_point),
        "MalformedMessageError",
        "point",
        key="ec",
    )

    def bad_wrap(info: cms.ContentInfo) -> None:
        kari = info["content"]["recipient_infos"][0].chosen
        rek = kari["recipient_encrypted_keys"][0]
        wrapped = bytearray(rek["encrypted_key"].native)
        wrapped[3] ^= 0x40
        rek["encrypted_key"] = bytes(wrapped)

    add("ec-wrapped-key-altered.der", _retag(ec_gcm, bad_wrap), "DecryptionError", key="ec")

    # --- cryptographic failures ----------------------------------------------------------------
    flipped = bytearray(gcm)
    flipped[-1] ^= 0x01
    add("gcm-tag-mismatch.der", bytes(flipped), "IntegrityError")
    altered = bytearray(gcm)
    altered[-40] ^= 0x80  # inside the ciphertext
    add("gcm-altered-ciphertext.der", bytes(altered), "IntegrityError")
    ec_altered = bytearray(ec_gcm)
    ec_altered[-30] ^= 0x04
    add("ec-gcm-altered-ciphertext.der", bytes(ec_altered), "IntegrityError", key="ec")

    # CBC with a valid key but a broken padding block (we know the key: deterministic random).
    stream = deterministic(b"corpus")
    cek, iv = stream(32), stream(16)
    fill = 16 - len(CONTENT) % 16
    bad = CONTENT + bytes([5] * (fill - 1) + [fill])  # claims `fill` padding bytes, one is
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    bad_ct = encryptor.update(bad) + encryptor.finalize()

    def bad_padding(info: cms.ContentInfo) -> None:
        info["content"]["encrypted_content_info"]["encrypted_content"] = bad_ct

    add("cbc-bad-padding.der", _retag(cbc, bad_padding), "DecryptionError")
    cbc_altered = bytearray(cbc)
    cbc_altered[-17] ^= 0x10  # last byte of the penultimate block -> last plaintext byte
    add("cbc-altered-ciphertext.der", bytes(cbc_altered), "DecryptionError")

    add(
        "wrong-recipient.der",
        make(ContentCipher.AES_256_GCM, cert=other_cert),
        "NoMatchingRecipientError",
    )
    add("wrong-key-oaep.der", make(ContentCipher.AES_256_GCM, cert=twin_cert), "DecryptionError")
    add(
        "wrong-key-v15-gcm.der",
        make(ContentCipher.AES_256_GCM, KeyTransport.RSA_PKCS1V15, twin_cert),
        "IntegrityError",
    )
    add(
        "wrong-key-v15-cbc.der",
        make(ContentCipher.AES_128_CBC, KeyTransport.RSA_PKCS1V15, twin_cert),
        "DecryptionError",
    )

    def short_encrypted_key(info: cms.ContentInfo) -> None:
        info["content"]["recipient_infos"][0].chosen["encrypted_key"] = b"\x01" * 10

    add("encrypted-key-too-short.der", _retag(gcm, short_encrypted_key), "DecryptionError")

    # --- MIME ----------------------------------------------------------------------------------
    head = (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    body = base64.encodebytes(gcm).replace(b"\n", b"\r\n")
    add("mime-valid.eml", head + body, "")
    add("mime-bad-base64.eml", head + body[:-7] + b"\r\n", "MalformedMessageError", "base64")
    add(
        "mime-not-smime.eml",
        b"Content-Type: text/plain\r\n\r\nhello\r\n",
        "MalformedMessageError",
        "Content-Type",
    )
    add("mime-no-body.eml", head.rstrip(b"\r\n"), "MalformedMessageError", "blank line")
    tampered = bytearray(head + body)
    tampered[-10] = ord("A") if tampered[-10] != ord("A") else ord("B")
    add("mime-tampered.eml", bytes(tampered), "IntegrityError")

    (HERE / "manifest.json").write_text(json.dumps(cases, indent=1, sort_keys=True) + "\n")


def _oid_swap(der: bytes, old: str, new: str) -> bytes:
    old_der = bytes(core.ObjectIdentifier(old).dump())
    new_der = bytes(core.ObjectIdentifier(new).dump())
    assert len(old_der) == len(new_der) and der.count(old_der) == 1
    return der.replace(old_der, new_der)


if __name__ == "__main__":
    main()
