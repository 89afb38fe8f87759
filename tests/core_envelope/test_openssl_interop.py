"""Interop both ways with the real ``openssl cms`` (the reference S/MIME peer)."""

from __future__ import annotations

import base64

import pytest

from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.core.mime.enveloped import decrypt_mime, encrypt_mime
from tests.conftest import TestPKI as PKI
from tests.conftest import run
from tests.core_envelope.conftest import identity, rand

pytestmark = pytest.mark.interop

ENTITY = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "Résultat: glycémie 5,2 mmol/l\r\n".encode() * 40
)

OPENSSL_CIPHER = {
    ContentCipher.AES_256_GCM: "-aes-256-gcm",
    ContentCipher.AES_128_GCM: "-aes-128-gcm",
    ContentCipher.AES_256_CBC: "-aes-256-cbc",
    ContentCipher.AES_128_CBC: "-aes128",
    ContentCipher.AES_192_GCM: "-aes-192-gcm",
    ContentCipher.AES_192_CBC: "-aes192",
}
OPENSSL_KEYOPTS = {
    KeyTransport.RSA_PKCS1V15: [],
    KeyTransport.RSA_OAEP_SHA1: ["-keyopt", "rsa_padding_mode:oaep"],
    KeyTransport.RSA_OAEP_SHA256: [
        "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
    ],
}  # fmt: skip


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CMS-----\n" + body + b"-----END CMS-----\n"


# --- ours -> openssl --------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", list(KeyTransport))
def test_openssl_decrypts_our_smime(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, cipher: ContentCipher, transport: KeyTransport
) -> None:
    cert, key = key_files("alice")
    recipient = Recipient(identity(pki, "alice").encryption.certificate, transport)
    message = encrypt_mime(ENTITY, [recipient], random=rand, cipher=cipher)
    path = files("msg.eml", message)
    out = run([openssl, "cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", path])
    assert out == ENTITY


@pytest.mark.parametrize("form", ["DER", "PEM"])
@pytest.mark.parametrize("name", ["alice", "bob", "carol", "dave"])
@pytest.mark.parametrize("use_ski", [False, True], ids=["issuer-serial", "keyid"])
def test_openssl_decrypts_our_der_and_pem(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, form: str, name: str, use_ski: bool
) -> None:
    cert, key = key_files(name)
    # Several recipients, ours last, so openssl has to find it.
    others = [identity(pki, n).encryption.certificate for n in ("alice", "carol") if n != name]
    recipients = [Recipient(c) for c in others]
    recipients.append(Recipient(identity(pki, name).encryption.certificate, use_ski=use_ski))
    der = encrypt_data(ENTITY, recipients, random=rand)
    path = files("msg.p7m", der if form == "DER" else _pem(der))
    out = run(
        [openssl, "cms", "-decrypt", "-inform", form, "-recip", cert, "-inkey", key, "-in", path]
    )
    assert out == ENTITY


@pytest.mark.parametrize("cipher", [ContentCipher.AES_128_GCM, ContentCipher.AES_256_CBC])
@pytest.mark.parametrize("name", ["carol", "dave"])
def test_openssl_decrypts_our_ecdh_smime(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, cipher: ContentCipher, name: str
) -> None:
    cert, key = key_files(name)
    recipient = Recipient(identity(pki, name).encryption.certificate, use_ski=True)
    message = encrypt_mime(ENTITY, [recipient], random=rand, cipher=cipher)
    out = run(
        [openssl, "cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", files("m", message)]
    )
    assert out == ENTITY


# --- openssl -> ours --------------------------------------------------------------------------


def _openssl_encrypt(openssl: str, files, recip: list[str], *flags: str) -> bytes:  # type: ignore[no-untyped-def]
    path = files("entity.txt", ENTITY)
    return run([openssl, "cms", "-encrypt", "-in", path, "-binary", *flags, *recip])


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_we_decrypt_openssl_rsa(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, cipher, transport, stream
) -> None:
    cert, _ = key_files("alice")
    flags = [OPENSSL_CIPHER[cipher]] + (["-stream"] if stream else [])
    message = _openssl_encrypt(
        openssl, files, ["-recip", cert, *OPENSSL_KEYOPTS[transport]], *flags
    )
    report, entity = decrypt_mime(message, [identity(pki, "alice").encryption])
    assert entity == ENTITY
    assert report.cipher is cipher
    assert report.key_transport is transport
    assert report.authenticated is cipher.aead


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("-des3", "3DES (DES-EDE3-CBC), refused as too weak: ask the sender to use AES"),
    ],
)
def test_ciphers_we_do_not_read_are_named_with_what_to_ask(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, flag: str, said: str
) -> None:
    """What older gateways still write: refused in words a doctor can pass on."""
    from caducee.errors import UnsupportedAlgorithmError

    cert, _ = key_files("alice")
    message = _openssl_encrypt(openssl, files, ["-recip", cert], flag)
    with pytest.raises(UnsupportedAlgorithmError) as caught:
        decrypt_mime(message, [identity(pki, "alice").encryption])
    assert said in str(caught.value)


@pytest.mark.parametrize("name", ["carol", "dave"])
@pytest.mark.parametrize("cipher", [ContentCipher.AES_256_GCM, ContentCipher.AES_128_CBC])
@pytest.mark.parametrize("kdf", [None, "sha256", "sha384"])
def test_we_decrypt_openssl_ecdh(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, name, cipher, kdf
) -> None:
    cert, _ = key_files(name)
    keyopt = ["-keyopt", f"ecdh_kdf_md:{kdf}"] if kdf else []
    der = _openssl_encrypt(
        openssl, files, ["-recip", cert, *keyopt], OPENSSL_CIPHER[cipher], "-outform", "DER"
    )
    report = decrypt_data(der, [identity(pki, name).encryption])
    assert report.content == ENTITY
    wrap = "aes256-wrap" if cipher.key_size == 32 else "aes128-wrap"
    assert report.key_agreement == f"ecdh-{kdf or 'sha1'}kdf-{wrap}"


@pytest.mark.parametrize("outform", ["DER", "PEM", "SMIME"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_we_decrypt_openssl_keyid_multi_recipient(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, outform, stream
) -> None:
    certs = [key_files(n)[0] for n in ("alice", "bob", "carol", "dave")]
    recip: list[str] = []
    for c in certs:
        recip += ["-recip", c]
    flags = ["-keyid", "-aes-256-gcm", "-outform", outform] + (["-stream"] if stream else [])
    out = _openssl_encrypt(openssl, files, recip, *flags)
    for name in ("alice", "bob", "carol", "dave"):
        key = identity(pki, name).encryption
        if outform == "SMIME":
            report, entity = decrypt_mime(out, [key])
        else:
            der = out if outform == "DER" else base64.b64decode(b"".join(out.splitlines()[1:-1]))
            report = decrypt_data(der, [key])
            entity = report.content
        assert entity == ENTITY
        assert report.recipient_count == 4


def test_we_decrypt_openssl_crlf_and_other_widths(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files
) -> None:
    cert, _ = key_files("bob")
    message = _openssl_encrypt(openssl, files, ["-recip", cert], "-aes-256-gcm")
    head, _, body = message.partition(b"\n\n")
    der = base64.b64decode(body)
    key = identity(pki, "bob").encryption
    for width in (64, 72, 76, 1000):
        text = base64.b64encode(der)
        lines = [text[i : i + width] for i in range(0, len(text), width)]
        for eol in (b"\n", b"\r\n"):
            rebuilt = head.replace(b"\n", eol) + eol + eol + eol.join(lines) + eol
            assert decrypt_mime(rebuilt, [key])[1] == ENTITY


@pytest.mark.parametrize("cipher", [ContentCipher.AES_256_GCM, ContentCipher.AES_128_CBC])
def test_large_messages_both_ways(  # type: ignore[no-untyped-def]
    pki: PKI, openssl: str, files, key_files, cipher: ContentCipher
) -> None:
    """Megabytes: openssl -stream writes the content as thousands of BER chunks."""
    cert, key = key_files("alice")
    alice = identity(pki, "alice").encryption
    entity = (
        b"Content-Type: application/octet-stream\r\n\r\n"
        + bytes(range(256)).replace(b"\n", b"") * 12_000
    )
    path = files("big.bin", entity)
    streamed = run(
        [openssl, "cms", "-encrypt", "-binary", "-stream", OPENSSL_CIPHER[cipher],
         "-in", path, "-recip", cert]
    )  # fmt: skip
    assert decrypt_mime(streamed, [alice])[1] == entity
    ours = encrypt_mime(entity, [Recipient(alice.certificate)], random=rand, cipher=cipher)
    out = run([openssl, "cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", files("o", ours)])
    assert out == entity
