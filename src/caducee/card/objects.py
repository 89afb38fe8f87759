"""PKCS#11 object templates for what caducee puts on a card, and reading public keys back.

Private keys are always created sensitive and non-extractable: once on the card they cannot leave
it. Keys and their certificate share a CKA_ID (the X.509 key identifier) so they can be paired.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import PyKCS11
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caducee.errors import UnsupportedAlgorithmError
from caducee.keys.pkcs11 import CardSession, key_id
from caducee.keys.pkcs11_errors import card_errors

KeyKind = Literal["rsa2048", "rsa3072", "p256", "p384"]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_CURVES: dict[str, tuple[ec.EllipticCurve, bytes]] = {
    "p256": (ec.SECP256R1(), bytes.fromhex("06082a8648ce3d030107")),
    "p384": (ec.SECP384R1(), bytes.fromhex("06052b81040022")),
}
_CURVE_PARAMS = {curve.name: der for curve, der in _CURVES.values()}

T, F = PyKCS11.CK_TRUE, PyKCS11.CK_FALSE


def new_private_key(kind: KeyKind) -> PrivateKey:
    """A fresh off-card key (the escrowable encryption key)."""
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind][0])
    raise UnsupportedAlgorithmError(f"unknown key kind {kind!r}")


def _ec_params(curve: ec.EllipticCurve) -> bytes:
    try:
        return _CURVE_PARAMS[curve.name]
    except KeyError:
        raise UnsupportedAlgorithmError(f"curve {curve.name} is not supported on cards") from None


#: What a key generated on the card is for: the signature key, or the keystore access key
#: (decrypts/derives the keystore's wrapping key; signs once, its own certificate, at issuance).
KeyUsageOnCard = Literal["signature", "access"]


def generate_on_card(
    card: CardSession,
    kind: KeyKind,
    label: str,
    *,
    always_authenticate: bool = False,
    usage: KeyUsageOnCard = "signature",
) -> tuple[Any, PublicKey]:
    """Generate a key pair inside the card; returns (private handle, public key).
    ``always_authenticate`` makes the card ask the PIN again for every signature. An ``access``
    key may decrypt (RSA) or derive (EC); :func:`disable_signing` ends its signing right."""
    access = usage == "access"
    is_rsa = kind in ("rsa2048", "rsa3072")
    tmp_id = os.urandom(20)  # replaced by the key identifier once the public key is known
    common = [(PyKCS11.CKA_TOKEN, T), (PyKCS11.CKA_LABEL, label), (PyKCS11.CKA_ID, tmp_id)]
    private = [
        *common,
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
        (PyKCS11.CKA_PRIVATE, T),
        (PyKCS11.CKA_SENSITIVE, T),
        (PyKCS11.CKA_EXTRACTABLE, F),
        (PyKCS11.CKA_SIGN, T),
        (PyKCS11.CKA_DECRYPT, T if access and is_rsa else F),
        (PyKCS11.CKA_UNWRAP, F),
        (PyKCS11.CKA_DERIVE, T if access and not is_rsa else F),
        (PyKCS11.CKA_ALWAYS_AUTHENTICATE, T if always_authenticate else F),
    ]
    public = [
        *common,
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY),
        (PyKCS11.CKA_PRIVATE, F),
        (PyKCS11.CKA_VERIFY, T),
        (PyKCS11.CKA_ENCRYPT, T if access and is_rsa else F),
    ]
    if kind in ("rsa2048", "rsa3072"):
        public += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA),
            (PyKCS11.CKA_MODULUS_BITS, 2048 if kind == "rsa2048" else 3072),
            (PyKCS11.CKA_PUBLIC_EXPONENT, (0x01, 0x00, 0x01)),
        ]
        private.append((PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA))
        mech = PyKCS11.Mechanism(PyKCS11.CKM_RSA_PKCS_KEY_PAIR_GEN, None)
    elif kind in _CURVES:
        public += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
            (PyKCS11.CKA_EC_PARAMS, _CURVES[kind][1]),
        ]
        private.append((PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC))
        mech = PyKCS11.Mechanism(PyKCS11.CKM_EC_KEY_PAIR_GEN, None)
    else:
        raise UnsupportedAlgorithmError(f"unknown key kind {kind!r}")
    session = card.raw_session()
    with card_errors(f"generating the {usage} key on the card"):
        pub_handle, priv_handle = session.generateKeyPair(public, private, mech)
    pub = read_public_key(card, pub_handle, kind)
    with card_errors("naming the new key on the card"):
        for handle in (pub_handle, priv_handle):
            session.setAttributeValue(handle, [(PyKCS11.CKA_ID, key_id(pub))])
    return priv_handle, pub


def disable_signing(card: CardSession, handle: Any) -> bool:
    """Take the signing right away from a private key (CKA_SIGN is modifiable in PKCS#11).
    False when the card refuses: the key then keeps a right that nothing asks it to use."""
    try:
        card.raw_session().setAttributeValue(handle, [(PyKCS11.CKA_SIGN, F)])
    except PyKCS11.PyKCS11Error as exc:
        if exc.value in (PyKCS11.CKR_ATTRIBUTE_READ_ONLY, PyKCS11.CKR_ACTION_PROHIBITED):
            return False
        with card_errors("restricting the access key"):
            raise
    return True


def read_public_key(card: CardSession, handle: Any, kind: KeyKind) -> PublicKey:
    """The public key of a public-key object on the card."""
    if kind in ("rsa2048", "rsa3072"):
        n, e = card.attributes(handle, [PyKCS11.CKA_MODULUS, PyKCS11.CKA_PUBLIC_EXPONENT])
        return rsa.RSAPublicNumbers(
            int.from_bytes(bytes(e), "big"), int.from_bytes(bytes(n), "big")
        ).public_key()
    curve = _CURVES[kind][0]
    (raw,) = card.attributes(handle, [PyKCS11.CKA_EC_POINT])
    point = bytes(raw)
    size = (curve.key_size + 7) // 8
    if len(point) != 1 + 2 * size:  # PKCS#11 says DER OCTET STRING; some tokens give it raw
        point = bytes(core.OctetString.load(point).native)
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)


def import_private_key(card: CardSession, key: PrivateKey, label: str) -> Any:
    """Put an off-card key on the card, sensitive and non-extractable, for decryption only."""
    pub = key.public_key()
    kid = key_id(pub)
    attrs: list[tuple[int, Any]] = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
        (PyKCS11.CKA_TOKEN, T),
        (PyKCS11.CKA_PRIVATE, T),
        (PyKCS11.CKA_SENSITIVE, T),
        (PyKCS11.CKA_EXTRACTABLE, F),
        (PyKCS11.CKA_SIGN, F),
        (PyKCS11.CKA_LABEL, label),
        (PyKCS11.CKA_ID, kid),
    ]
    public: list[tuple[int, Any]] = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY),
        (PyKCS11.CKA_TOKEN, T),
        (PyKCS11.CKA_PRIVATE, F),
        (PyKCS11.CKA_LABEL, label),
        (PyKCS11.CKA_ID, kid),
    ]
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        pn = nums.public_numbers

        def b(value: int) -> bytes:
            return value.to_bytes((value.bit_length() + 7) // 8, "big")

        attrs += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA),
            (PyKCS11.CKA_DECRYPT, T),
            (PyKCS11.CKA_UNWRAP, T),
            (PyKCS11.CKA_DERIVE, F),
            (PyKCS11.CKA_MODULUS, b(pn.n)),
            (PyKCS11.CKA_PUBLIC_EXPONENT, b(pn.e)),
            (PyKCS11.CKA_PRIVATE_EXPONENT, b(nums.d)),
            (PyKCS11.CKA_PRIME_1, b(nums.p)),
            (PyKCS11.CKA_PRIME_2, b(nums.q)),
            (PyKCS11.CKA_EXPONENT_1, b(nums.dmp1)),
            (PyKCS11.CKA_EXPONENT_2, b(nums.dmq1)),
            (PyKCS11.CKA_COEFFICIENT, b(nums.iqmp)),
        ]
        public += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_RSA),
            (PyKCS11.CKA_ENCRYPT, T),
            (PyKCS11.CKA_MODULUS, b(pn.n)),
            (PyKCS11.CKA_PUBLIC_EXPONENT, b(pn.e)),
        ]
    else:
        params = _ec_params(key.curve)
        size = (key.curve.key_size + 7) // 8
        point = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        attrs += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
            (PyKCS11.CKA_DERIVE, T),
            (PyKCS11.CKA_DECRYPT, F),
            (PyKCS11.CKA_EC_PARAMS, params),
            (PyKCS11.CKA_VALUE, key.private_numbers().private_value.to_bytes(size, "big")),
        ]
        public += [
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
            (PyKCS11.CKA_EC_PARAMS, params),
            (PyKCS11.CKA_EC_POINT, core.OctetString(point).dump()),
        ]
    session = card.raw_session()
    with card_errors("importing the encryption key on the card"):
        handle = session.createObject(attrs)
        session.createObject(public)
    return handle


def write_certificate(card: CardSession, cert: x509.Certificate, label: str) -> Any:
    """Store ``cert`` on the card as a public X.509 certificate object next to its key."""
    pub = cert.public_key()
    if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise UnsupportedAlgorithmError("only RSA and EC certificates go on cards")
    template = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
        (PyKCS11.CKA_CERTIFICATE_TYPE, PyKCS11.CKC_X_509),
        (PyKCS11.CKA_TOKEN, T),
        (PyKCS11.CKA_PRIVATE, F),
        (PyKCS11.CKA_LABEL, label),
        (PyKCS11.CKA_ID, key_id(pub)),
        (PyKCS11.CKA_SUBJECT, cert.subject.public_bytes()),
        (PyKCS11.CKA_ISSUER, cert.issuer.public_bytes()),
        (PyKCS11.CKA_SERIAL_NUMBER, core.Integer(cert.serial_number).dump()),
        (PyKCS11.CKA_VALUE, cert.public_bytes(serialization.Encoding.DER)),
    ]
    with card_errors("writing the certificate on the card"):
        return card.raw_session().createObject(template)
