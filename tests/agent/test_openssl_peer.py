"""A correspondent without caducee: plain S/MIME written and read by ``openssl cms``."""

from __future__ import annotations

import pathlib

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import run

from .conftest import AgentFactory, Operators, Person, PostOffice

pytestmark = pytest.mark.interop


def _files(person: Person, ca_pem: bytes, base: pathlib.Path) -> dict[str, str]:
    def key(k: object) -> bytes:
        return k.private_bytes(  # type: ignore[attr-defined,no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    out = {
        "sig.key": key(person.private_keys[0]),
        "sig.crt": person.signing.certificate.public_bytes(serialization.Encoding.PEM),
        "enc.key": key(person.private_keys[1]),
        "enc.crt": person.encryption.certificate.public_bytes(serialization.Encoding.PEM),
        "ca.pem": ca_pem,
    }
    paths = {}
    for name, data in out.items():
        path = base / name
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def test_openssl_user_writes_and_reads(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    openssl: str,
):
    petit = _files(
        ops.petit, ops.op1.certificate.public_bytes(serialization.Encoding.PEM), tmp_path
    )
    martin_cert = tmp_path / "martin-enc.crt"
    martin_cert.write_bytes(
        ops.martin.encryption.certificate.public_bytes(serialization.Encoding.PEM)
    )
    entity = tmp_path / "entity.txt"
    entity.write_bytes(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nFrom an OpenSSL gateway.\r\n"
    )
    signed = run([openssl, "cms", "-sign", "-in", str(entity), "-signer", petit["sig.crt"],
                  "-inkey", petit["sig.key"], "-md", "sha256"])  # fmt: skip
    signed_file = tmp_path / "signed.eml"
    signed_file.write_bytes(signed)
    wire = run([openssl, "cms", "-encrypt", "-in", str(signed_file), "-aes256",
                "-from", "petit@op1.test", "-to", "martin@op1.test", "-subject", "openssl",
                "-recip", str(martin_cert), "-keyopt", "rsa_padding_mode:oaep"])  # fmt: skip
    post.mailbox("martin@op1.test").deliver(wire)

    martin = make_agent(ops.martin)
    (got,) = martin.fetch().ids
    stored = martin.store.get(got)
    assert (stored.signature, stored.encrypted) == ("valid", True), stored.reason
    assert martin.read(got).body.strip() == "From an OpenSSL gateway."

    # and the other way: what caducee sends, openssl decrypts and verifies
    martin.send(["petit@op1.test"], "réponse", "Bien reçu, merci.")
    received = tmp_path / "received.eml"
    received.write_bytes(post.submitted[-1][1])
    decrypted = run([openssl, "cms", "-decrypt", "-in", str(received),
                     "-recip", petit["enc.crt"], "-inkey", petit["enc.key"]])  # fmt: skip
    inner = tmp_path / "inner.eml"
    inner.write_bytes(decrypted)
    verified = run([openssl, "cms", "-verify", "-in", str(inner), "-CAfile", petit["ca.pem"]])
    assert b"Bien re" in verified
    # openssl's signature announced ciphers and no key transport (an older client): the reply
    # uses RSA PKCS#1 v1.5, so the PKCS#7 API (openssl smime, older gateways, gpgsm) reads it
    legacy = run([openssl, "smime", "-decrypt", "-in", str(received),
                  "-recip", petit["enc.crt"], "-inkey", petit["enc.key"]])  # fmt: skip
    assert legacy == decrypted


def test_a_signature_without_its_certificate_is_checked_with_the_known_one(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    openssl: str,
):
    """`openssl cms -sign -nocerts` (gateways saving space, an Outlook setting): the signer's
    certificate is looked up by the From address; unknown, the signature is "cannot be
    checked", not "broken"; known, it is checked, and changed content is still broken."""
    from caducee.agent_trust import StaticFinder

    petit = _files(
        ops.petit, ops.op1.certificate.public_bytes(serialization.Encoding.PEM), tmp_path
    )

    def signed(text: bytes) -> bytes:
        entity = tmp_path / "entity.txt"
        entity.write_bytes(b"Content-Type: text/plain\r\n\r\n" + text + b"\r\n")
        return run([openssl, "cms", "-sign", "-nocerts", "-in", str(entity),
                    "-from", "petit@op1.test", "-to", "martin@op1.test", "-subject", "s",
                    "-signer", petit["sig.crt"], "-inkey", petit["sig.key"]])  # fmt: skip

    box = post.mailbox("martin@op1.test")
    box.deliver(signed(b"first"))
    martin = make_agent(ops.martin)
    (first,) = martin.fetch().ids
    stored = martin.store.get(first)
    assert stored.signature == "untrusted", stored.reason
    assert "neither in the message nor known here" in (stored.reason or "")

    book = StaticFinder([ops.petit.signing.certificate, ops.petit.encryption.certificate])
    known = make_agent(ops.martin, finder=book)
    second = signed(b"second")
    box.deliver(second)
    box.deliver(second.replace(b"second", b"changed"))
    good, changed = (known.store.get(i) for i in known.fetch().ids)
    assert good.signature == "valid", good.reason
    assert good.signer_email == "petit@op1.test"
    assert changed.signature == "invalid"


def test_a_sha1_signature_is_valid_with_a_warning(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    openssl: str,
):
    """Older gateways still sign with SHA-1: accepted (the identity is checked), but the
    reader is told the digest can be forged."""
    petit = _files(
        ops.petit, ops.op1.certificate.public_bytes(serialization.Encoding.PEM), tmp_path
    )
    entity = tmp_path / "entity.txt"
    for digest in ("sha1", "sha256"):
        entity.write_bytes(b"Content-Type: text/plain\r\n\r\n" + digest.encode() + b"\r\n")
        post.mailbox("martin@op1.test").deliver(
            run([openssl, "cms", "-sign", "-md", digest, "-in", str(entity),
                 "-from", "petit@op1.test", "-to", "martin@op1.test", "-subject", digest,
                 "-signer", petit["sig.crt"], "-inkey", petit["sig.key"]])
        )  # fmt: skip
    martin = make_agent(ops.martin)
    weak, strong = (martin.store.get(i) for i in martin.fetch().ids)
    assert weak.signature == strong.signature == "valid"
    assert martin.security_summary(weak).endswith(
        "(WARNING: signed with SHA-1, a digest that can be forged: ask the sender to use"
        " SHA-256); NOT ENCRYPTED"
    )
    assert "WARNING" not in martin.security_summary(strong)


def test_readers_without_protected_headers_see_the_subject_in_the_text(
    ops: Operators,
    post: PostOffice,
    make_agent: AgentFactory,
    tmp_path: pathlib.Path,
    openssl: str,
):
    """Encrypted mail hides its Subject outside ("[...]"); Outlook and Thunderbird's S/MIME
    do not read the protected one, so the text starts with it (RFC 9788 legacy display),
    which caducee hides again. Signed-only mail, whose Subject shows, has none."""
    import email
    import email.policy

    petit = _files(
        ops.petit, ops.op1.certificate.public_bytes(serialization.Encoding.PEM), tmp_path
    )
    martin = make_agent(ops.martin)
    martin.send(["petit@op1.test"], "Résultat du bilan", "Bien reçu, merci.")
    received = tmp_path / "received.eml"
    received.write_bytes(post.submitted[-1][1])
    decrypted = run([openssl, "cms", "-decrypt", "-in", str(received),
                     "-recip", petit["enc.crt"], "-inkey", petit["enc.key"]])  # fmt: skip
    signed = email.message_from_bytes(decrypted, policy=email.policy.default)
    inner = next(p for p in signed.walk() if p.get_content_type() == "text/plain")
    assert inner.get_param("hp-legacy-display") == "1"
    assert inner.get_content().startswith("Subject: Résultat du bilan\r\n\r\nBien reçu, merci.")

    petit_agent = make_agent(ops.petit)
    (got,) = petit_agent.fetch().ids
    view = petit_agent.read(got)
    assert view.headers["subject"] == "Résultat du bilan"
    assert view.body.startswith("Bien reçu, merci.")  # the legacy display hidden

    martin.send(["petit@op1.test", "nobody@op1.test"], "en clair", "texte", allow_plaintext=True)
    clear = email.message_from_bytes(post.submitted[-1][1], policy=email.policy.default)
    text = next(p for p in clear.walk() if p.get_content_type() == "text/plain")
    assert text.get_param("hp-legacy-display") is None and text.get_content().startswith("texte")
