"""Private-key operations on a real SoftHSM2 card, checked with pyca/cryptography."""

from __future__ import annotations

import datetime as dt
import hashlib

import PyKCS11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from caducee.core.algorithms import Digest, KeyTransport, SignatureScheme
from caducee.errors import DecryptionError, UnsupportedAlgorithmError, UsageError
from caducee.keys.api import DecryptionKey, SigningKey
from caducee.keys.open import open_card, open_key
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Key
from tests.card.card_faults import FaultyModule

pytestmark = pytest.mark.softhsm

MESSAGE = b"referral letter for the cardiologist"


def _pin(prompt: str) -> str:
    assert "dr-martin" in prompt
    return "1234"


def _oaep(h: hashes.HashAlgorithm) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def test_card_keys_implement_the_protocols(rsa_card) -> None:
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        key = card.signing_key()
        assert isinstance(key, SigningKey) and isinstance(key, DecryptionKey)
        assert key.certificate == rsa_card.issued.signature_certificate
        assert "1234" not in repr(key) and "dr-martin" in repr(key)


@pytest.mark.parametrize("digest", [Digest.SHA256, Digest.SHA384, Digest.SHA512])
@pytest.mark.parametrize("scheme", [SignatureScheme.RSA_PKCS1V15, SignatureScheme.RSA_PSS])
def test_rsa_signature_made_on_card_verifies(rsa_card, digest, scheme) -> None:
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        key = card.signing_key()
        assert key.signature_schemes() == {SignatureScheme.RSA_PKCS1V15, SignatureScheme.RSA_PSS}
        value = hashlib.new(digest.label, MESSAGE).digest()
        signature = key.sign_digest(value, digest, scheme)
    pub = rsa_card.issued.signature_certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if scheme is SignatureScheme.RSA_PKCS1V15
        else padding.PSS(mgf=padding.MGF1(digest.hash()), salt_length=digest.size)
    )
    pub.verify(signature, MESSAGE, pad, digest.hash())  # raises if wrong


def test_ecdsa_signature_made_on_card_verifies(ec_card) -> None:
    with open_card(ec_card.uri(), pin_callback=lambda _: ec_card.user_pin) as card:
        key = card.signing_key()
        assert key.signature_schemes() == {SignatureScheme.ECDSA}
        assert key.key_transports() == frozenset()
        sig = key.sign_digest(
            hashlib.sha256(MESSAGE).digest(), Digest.SHA256, SignatureScheme.ECDSA
        )
    pub = ec_card.issued.signature_certificate.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(sig, MESSAGE, ec.ECDSA(hashes.SHA256()))  # DER ECDSA-Sig-Value
    utils.decode_dss_signature(sig)


def test_sign_rejects_bad_digest_and_scheme(rsa_card) -> None:
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        key = card.signing_key()
        with pytest.raises(UsageError, match="needs 32"):
            key.sign_digest(b"short", Digest.SHA256, SignatureScheme.RSA_PKCS1V15)
        with pytest.raises(UnsupportedAlgorithmError, match="ecdsa"):
            key.sign_digest(bytes(32), Digest.SHA256, SignatureScheme.ECDSA)


@pytest.mark.parametrize(
    ("transport", "pad"),
    [
        (KeyTransport.RSA_OAEP_SHA1, _oaep(hashes.SHA1())),
        (KeyTransport.RSA_PKCS1V15, padding.PKCS1v15()),
    ],
)
def test_wrapped_key_is_decrypted_on_card(rsa_card, transport, pad) -> None:
    cek = bytes(range(32))
    pub = rsa_card.issued.encryption_certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    wrapped = pub.encrypt(cek, pad)
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        (key,) = card.decryption_keys()
        assert key.certificate == rsa_card.issued.encryption_certificate
        assert key.key_transports() == {KeyTransport.RSA_OAEP_SHA1, KeyTransport.RSA_PKCS1V15}
        assert key.decrypt_key(wrapped, transport) == cek


def test_softhsm_oaep_sha256_is_reported_unsupported(rsa_card) -> None:
    pub = rsa_card.issued.encryption_certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    wrapped = pub.encrypt(bytes(16), _oaep(hashes.SHA256()))
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        (key,) = card.decryption_keys()
        with pytest.raises(UnsupportedAlgorithmError, match="rsa-oaep-sha256"):
            key.decrypt_key(wrapped, KeyTransport.RSA_OAEP_SHA256)


def test_key_for_someone_else_is_a_decryption_error(rsa_card, pki) -> None:
    other = pki.bob.encryption.certificate.public_key()
    wrapped = other.encrypt(bytes(16), padding.PKCS1v15())
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        (key,) = card.decryption_keys()
        with pytest.raises(DecryptionError):
            key.decrypt_key(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), KeyTransport.RSA_OAEP_SHA1)


def test_ecdh_on_card_matches_software(ec_card) -> None:
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    recipient = ec_card.issued.encryption_certificate.public_key()
    assert isinstance(recipient, ec.EllipticCurvePublicKey)
    expected = ephemeral.exchange(ec.ECDH(), recipient)
    with open_card(ec_card.uri(), pin_callback=lambda _: ec_card.user_pin) as card:
        (key,) = card.decryption_keys()
        assert key.ecdh(ephemeral.public_key()) == expected
        with pytest.raises(UnsupportedAlgorithmError, match="secp384r1"):
            key.ecdh(ec.generate_private_key(ec.SECP384R1()).public_key())


def test_exactly_one_card_operation_per_sign_and_decrypt(rsa_card) -> None:
    pub = rsa_card.issued.encryption_certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    wrapped = pub.encrypt(bytes(16), _oaep(hashes.SHA1()))
    with FaultyModule(SOFTHSM2_MODULE) as module:
        key = open_key(
            rsa_card.uri(";object=signature"), module=module, pin_callback=lambda _: "1234"
        )
        dec = open_key(
            rsa_card.uri(), module=module, purpose="decrypt", pin_callback=lambda _: "1234"
        )
        try:
            before = module.state.private_key_operations
            key.sign_digest(bytes(32), Digest.SHA256, SignatureScheme.RSA_PKCS1V15)
            assert module.state.private_key_operations == before + 1
            assert module.state.calls["sign"] == 1
            dec.decrypt_key(wrapped, KeyTransport.RSA_OAEP_SHA1)
            assert module.state.private_key_operations == before + 2
            assert module.state.calls["login"] == 2  # once per opened card, not per operation
        finally:
            key.card.close()
            dec.card.close()


def test_private_keys_cannot_leave_the_card(rsa_card) -> None:
    with open_card(rsa_card.uri(), pin_callback=lambda _: rsa_card.user_pin) as card:
        handles = card.private_keys()
        assert len(handles) == 2
        for handle in handles:
            sensitive, extractable = card.attributes(
                handle, [PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE]
            )
            assert bytes(sensitive) == b"\x01" and bytes(extractable) == b"\x00"
            # PyKCS11 answers None for an attribute the card refuses as sensitive
            for secret in (PyKCS11.CKA_PRIVATE_EXPONENT, PyKCS11.CKA_PRIME_1):
                assert card.attributes(handle, [secret]) == [None]
        (sig,) = card.private_keys(label="signature")
        (local,) = card.attributes(sig, [PyKCS11.CKA_LOCAL])
        assert bytes(local) == b"\x01"  # generated on the card


def test_open_key_by_uri_with_pin_sources(rsa_card, tmp_path, monkeypatch) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("1234\n")
    pin_file.chmod(0o600)
    uri = (
        "pkcs11:token=dr-martin;object=signature;type=private"
        f"?module-path={SOFTHSM2_MODULE}&pin-source=file:{pin_file}"
    )
    key = open_key(uri)
    try:
        assert key.certificate == rsa_card.issued.signature_certificate
    finally:
        key.card.close()
    monkeypatch.setenv("CADUCEE_PIN", "1234")
    key = open_key(rsa_card.uri(), purpose="sign")
    try:
        assert isinstance(key, Pkcs11Key)
        assert key.certificate == rsa_card.issued.signature_certificate
    finally:
        key.card.close()


def test_open_key_errors(rsa_card, monkeypatch) -> None:
    from caducee.keys.pkcs11_errors import CardKeyNotFoundError, TokenNotFoundError

    monkeypatch.setenv("CADUCEE_PIN", "1234")
    with pytest.raises(CardKeyNotFoundError, match="matches 2 keys"):
        open_key(rsa_card.uri())
    with pytest.raises(CardKeyNotFoundError, match="no private key"):
        open_key(rsa_card.uri(";object=nothing"))
    with pytest.raises(TokenNotFoundError, match=r"no card with label 'other'.*dr-martin"):
        open_key(f"pkcs11:token=other?module-path={SOFTHSM2_MODULE}")
    monkeypatch.delenv("CADUCEE_PIN")
    with pytest.raises(UsageError, match="needs a PIN"):
        open_key(rsa_card.uri(";object=signature"))
    with pytest.raises(UsageError, match="cannot read the PIN file"):
        open_key(rsa_card.uri(";object=signature") + "&pin-source=/nonexistent/pin")


def test_announced_capabilities_follow_the_card(rsa_card) -> None:
    from caducee.core.capabilities import Capabilities
    from caducee.keys.pkcs11 import card_capabilities

    with open_card(rsa_card.uri(), pin_callback=lambda _: "1234") as card:
        (key,) = card.decryption_keys()
        caps = card_capabilities(key)
    assert caps.key_transports == (KeyTransport.RSA_OAEP_SHA1, KeyTransport.RSA_PKCS1V15)
    assert Capabilities.from_der(caps.to_der()).key_transports == caps.key_transports


def test_key_that_wants_the_pin_at_every_signature(rsa_card, pki) -> None:
    """Qualified-signature cards mark the key CKA_ALWAYS_AUTHENTICATE: one PIN entry per
    signature, through the callback; a wrong one is a wrong PIN, and the next try still works."""
    from caducee.card import add_signature_key
    from caducee.card.devissuer import devpki_issuer
    from caducee.keys.pkcs11 import CardSession
    from caducee.keys.pkcs11_errors import WrongPinError

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    issuer = devpki_issuer(pki.ca, "martin@op1.test", "Dr Martin", not_before=later)
    answers = iter(["1234", "1234", "0000", "1234"])
    prompts: list[str] = []

    def pin(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    with open_card(rsa_card.uri(), pin_callback=pin) as card:
        writer = CardSession(card.module, card.token, None, rw=True)
        try:
            cert = add_signature_key(writer, issuer, always_authenticate=True)
        finally:
            writer.close()
        key = card.signing_key(at=later + dt.timedelta(seconds=1))
        assert key.certificate == cert
        value = hashlib.sha256(MESSAGE).digest()
        sig = key.sign_digest(value, Digest.SHA256, SignatureScheme.RSA_PKCS1V15)
        pub = cert.public_key()
        assert isinstance(pub, rsa.RSAPublicKey)
        pub.verify(sig, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        with pytest.raises(WrongPinError):
            key.sign_digest(value, Digest.SHA256, SignatureScheme.RSA_PKCS1V15)
        key.sign_digest(value, Digest.SHA256, SignatureScheme.RSA_PKCS1V15)
        assert prompts == ["card 'dr-martin'"] + ["card 'dr-martin' (signature)"] * 3
