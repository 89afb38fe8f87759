"""The keystore access key: the card key that opens the "card as access key" keystore.

In keystore mode the encryption key lives in a local file (:mod:`caducee.keys.keystore`) and the
card holds a second, decrypt-only key pair that unwraps the file's key-encryption key. It is
generated on the card and never leaves it. The keystore names it by a certificate, which must not
look like an e-mail certificate: it is self-signed by the card key itself (through the keys
protocol, once, at issuance), has key usage dataEncipherment only, no e-mail address and no
e-mail protection purpose - so no directory publishes it and no decryption-key lookup
(``CardSession.decryption_keys``, which wants keyEncipherment or keyAgreement) ever picks it.
After that one signature the key's signing right is taken away (CKA_SIGN false).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from caducee.card.objects import KeyKind, disable_signing, generate_on_card, write_certificate
from caducee.errors import CaduceeError
from caducee.keys.keystore import ACCESS_LABEL, is_access_certificate
from caducee.keys.pkcs11 import CardSession, Pkcs11Key
from caducee.pki.signer import SignatureFaultError, SigningKeyCASigner, sign_certificate

__all__ = ["ACCESS_LABEL", "AccessKeyError", "add_access_key", "card_access_key"]

#: The access certificate identifies a key; its dates are not checked by anything.
_VALIDITY = dt.timedelta(days=20 * 366)


class AccessKeyError(CaduceeError):
    """The card produced an access certificate that does not verify (a card fault)."""


def card_access_key(card: CardSession) -> Pkcs11Key | None:
    """The card's keystore access key, if it has one (newest first)."""
    for cert in card.certificates():
        if (cert.label == ACCESS_LABEL or is_access_certificate(cert.certificate)) and (
            card.private_keys(id=cert.id)
        ):
            return card.key_for(cert)
    return None


def _throwaway_key(
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    # Only lays out the to-be-signed certificate with the right signature algorithm; its
    # signature is replaced by the card's before anything uses the certificate.
    if isinstance(public, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    return ec.generate_private_key(public.curve)


def add_access_key(
    card: CardSession, kind: KeyKind = "rsa2048", *, now: dt.datetime | None = None
) -> Pkcs11Key:
    """Generate the access key pair on the card, self-sign its certificate with it, store the
    certificate, and take the signing right away. Returns the (decrypt-only) key."""
    handle, public = generate_on_card(card, kind, ACCESS_LABEL, usage="access")
    start = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0) - dt.timedelta(minutes=5)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "caducee keystore access key"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "not an e-mail certificate"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, card.token.serial or "unknown"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=True,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    # The card key signs its own certificate, the way a CA key on a token signs (pki.signer);
    # the key object needs a certificate to know its public key: a throw-away layout serves.
    layout = builder.sign(_throwaway_key(public), hashes.SHA256())
    provisional = Pkcs11Key(card, handle, layout, ACCESS_LABEL)
    try:
        cert = sign_certificate(builder, SigningKeyCASigner(provisional))
    except SignatureFaultError:
        raise AccessKeyError(
            f"card {card.token.label!r} made an access certificate that does not verify"
        ) from None
    write_certificate(card, cert, ACCESS_LABEL)
    disable_signing(card, handle)
    return Pkcs11Key(card, handle, cert, ACCESS_LABEL)
