"""The "card as access key" keystore: the encryption key kept in a local file that only opens
with the card.

The encryption private key (PKCS#8) is sealed with AES-256-GCM under a random key-encryption key
(KEK). The KEK is encrypted to a card key: RSA (OAEP-SHA-1 or PKCS#1 v1.5, whatever the card
decrypts) or EC (ECDH with an ephemeral key, then HKDF-SHA-256). Opening costs one card operation.

Like a card, the keystore locks after 3 failed openings (a card whose key does not open it, or a
file that does not decrypt), and only the card's SO PIN (PUK) unblocks it. The counter lives in
the file: it stops guessing through caducee, not someone who copies the file - the card does that.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from caducee.core.algorithms import KEY_TRANSPORT_PREFERENCE, KeyTransport
from caducee.errors import CaduceeError, CardError, KeyStoreError, UsageError
from caducee.keys.api import DecryptionKey
from caducee.keys.software import PrivateKey, SoftwareKey, load_private_key

if TYPE_CHECKING:
    from caducee.keys.pkcs11 import CardSession, Pkcs11Key, Pkcs11Module, TokenInfo

FORMAT = "caducee-keystore-1"
MAX_FAILURES = 3
#: Label of the card key pair (and its self-signed certificate) that opens the keystore.
ACCESS_LABEL = "keystore-access"
_HKDF_INFO = b"caducee keystore KEK v1"
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


class KeystoreLockedError(KeyStoreError):
    """Too many failed openings."""

    def __init__(self) -> None:
        super().__init__(
            f"keystore locked after {MAX_FAILURES} failed openings: unblock it with the card's "
            "SO PIN (caducee card unblock-keystore)"
        )


class KeystoreAccessError(KeyStoreError):
    """This card key does not open the keystore; ``tries_left`` before it locks."""

    def __init__(self, reason: str, tries_left: int) -> None:
        self.tries_left = tries_left
        tries = "1 try left" if tries_left == 1 else f"{tries_left} tries left"
        super().__init__(f"keystore not opened: {reason} ({tries})")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, field: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise KeyStoreError(f"keystore field {field} is not base64") from None


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _aad(doc: dict[str, Any]) -> bytes:
    header = {k: v for k, v in doc.items() if k not in ("ciphertext", "failures")}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _write(path: pathlib.Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyStoreError(f"cannot write the keystore {path}: {exc.strerror}") from None


def _read(path: pathlib.Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyStoreError(f"cannot read the keystore {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise KeyStoreError(f"{path} is not a caducee keystore") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyStoreError(f"{path} is not a caducee keystore ({FORMAT})")
    return doc


def create_keystore(
    path: str | os.PathLike[str],
    private_key: PrivateKey,
    certificate: x509.Certificate,
    access_key: DecryptionKey,
    *,
    random: Callable[[int], bytes] = os.urandom,
) -> None:
    """Seal ``private_key`` (with its ``certificate``) so that only ``access_key`` opens it."""
    SoftwareKey(private_key, certificate)  # checks they belong together
    access_cert = access_key.certificate
    access_pub = access_cert.public_key()
    kek = random(32)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "access_certificate": _b64(access_cert.public_bytes(_DER)),
        "certificate": _b64(certificate.public_bytes(_DER)),
    }
    if isinstance(access_pub, rsa.RSAPublicKey):
        usable = [k for k in KEY_TRANSPORT_PREFERENCE if k in access_key.key_transports()]
        if not usable:
            raise UsageError("the access key cannot decrypt any RSA padding")
        transport = usable[0]
        doc["wrap"] = transport.value
        doc["wrapped_key"] = _b64(access_pub.encrypt(kek, _rsa_padding(transport)))
    elif isinstance(access_pub, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(access_pub.curve)
        doc["wrap"] = "ecdh-hkdf-sha256"
        doc["ephemeral_public"] = _b64(ephemeral.public_key().public_bytes(_DER, _SPKI))
        kek = _hkdf(ephemeral.exchange(ec.ECDH(), access_pub))
    else:
        raise UsageError("the access key must be RSA or EC")
    nonce = random(12)
    doc["nonce"] = _b64(nonce)
    pkcs8 = private_key.private_bytes(
        _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    doc["ciphertext"] = _b64(AESGCM(kek).encrypt(nonce, pkcs8, _aad(doc)))
    doc["failures"] = 0
    _write(pathlib.Path(path), doc)


def _rsa_padding(transport: KeyTransport) -> padding.AsymmetricPadding:
    if transport is KeyTransport.RSA_PKCS1V15:
        return padding.PKCS1v15()
    h: hashes.HashAlgorithm = (
        hashes.SHA1()  # noqa: S303 - OAEP-SHA-1 is what cards decrypt
        if transport is KeyTransport.RSA_OAEP_SHA1
        else hashes.SHA256()
    )
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def _hkdf(shared: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(shared)


def open_keystore(path: str | os.PathLike[str], access_key: DecryptionKey) -> SoftwareKey:
    """The encryption key sealed in ``path``, opened with the card's ``access_key``."""
    file = pathlib.Path(path)
    doc = _read(file)
    failures = int(doc.get("failures", 0))
    if failures >= MAX_FAILURES:
        raise KeystoreLockedError()
    try:
        expected = x509.load_der_x509_certificate(_unb64(doc["access_certificate"], "access"))
    except (KeyError, ValueError):
        raise KeyStoreError(f"keystore {file}: access certificate unreadable") from None
    if _fingerprint(expected) != _fingerprint(access_key.certificate):
        _fail(file, doc, "this card is not the one the keystore belongs to")
    try:
        kek = _recover_kek(doc, access_key)
        plain = AESGCM(kek).decrypt(
            _unb64(doc["nonce"], "nonce"), _unb64(doc["ciphertext"], "ciphertext"), _aad(doc)
        )
        cert = x509.load_der_x509_certificate(_unb64(doc["certificate"], "certificate"))
    except CardError:
        raise  # a wrong PIN or a removed card is the card's business, not a keystore try
    except (InvalidTag, ValueError, KeyError, CaduceeError):
        _fail(file, doc, "the card key does not open it (altered or foreign keystore)")
    if failures:
        doc["failures"] = 0
        _write(file, doc)
    return SoftwareKey(load_private_key(plain), cert)


def _recover_kek(doc: dict[str, Any], access_key: DecryptionKey) -> bytes:
    wrap = doc.get("wrap")
    if wrap == "ecdh-hkdf-sha256":
        pub = serialization.load_der_public_key(_unb64(doc["ephemeral_public"], "ephemeral"))
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise ValueError("ephemeral key is not EC")
        return _hkdf(access_key.ecdh(pub))
    transport = next((k for k in KeyTransport if k.value == wrap), None)
    if transport is None:
        raise ValueError(f"unknown wrap {wrap!r}")
    kek = access_key.decrypt_key(_unb64(doc["wrapped_key"], "wrapped_key"), transport)
    if len(kek) != 32:
        raise ValueError("bad KEK length")
    return kek


def _fail(file: pathlib.Path, doc: dict[str, Any], reason: str) -> NoReturn:
    failures = int(doc.get("failures", 0)) + 1
    doc["failures"] = failures
    _write(file, doc)
    if failures >= MAX_FAILURES:
        raise KeystoreLockedError()
    raise KeystoreAccessError(reason, MAX_FAILURES - failures)


def keystore_failures(path: str | os.PathLike[str]) -> int:
    """Failed openings since the last good one."""
    return int(_read(pathlib.Path(path)).get("failures", 0))


def reset_keystore(path: str | os.PathLike[str]) -> None:
    """Clear the failure count. Callers prove authority first (``unblock_keystore``)."""
    file = pathlib.Path(path)
    doc = _read(file)
    doc["failures"] = 0
    _write(file, doc)


def unblock_keystore(
    path: str | os.PathLike[str], module: Pkcs11Module, token: TokenInfo, so_pin: str
) -> None:
    """Unblock a locked keystore: the SO PIN (PUK) of the card it belongs to must be right, as
    for the card. Another card's SO PIN does not do."""
    from caducee.keys.pkcs11 import CardSession  # only this path needs the card library

    info = keystore_info(path)  # fail early on a file that is not a keystore
    wanted = _fingerprint(info.access_certificate)
    with CardSession(module, token, None) as card:  # certificates are public: no PIN yet
        if not any(_fingerprint(c.certificate) == wanted for c in card.certificates()):
            raise KeyStoreError(
                f"card {token.label!r} is not the card of the keystore {info.path}: "
                "unblock it with its own card's SO PIN"
            )
    CardSession(module, token, so_pin, rw=True, so=True).close()
    reset_keystore(path)


# -- the keystore next to its card ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeystoreInfo:
    """What a keystore file says about itself without opening it (nothing secret)."""

    path: pathlib.Path
    certificate: x509.Certificate  # the encryption certificate of the sealed key
    access_certificate: x509.Certificate  # the card key that opens it
    failures: int

    @property
    def locked(self) -> bool:
        return self.failures >= MAX_FAILURES

    @property
    def tries_left(self) -> int:
        return max(0, MAX_FAILURES - self.failures)


def keystore_info(path: str | os.PathLike[str]) -> KeystoreInfo:
    """Read a keystore's public header: certificates and failure count."""
    file = pathlib.Path(path)
    doc = _read(file)
    try:
        cert = x509.load_der_x509_certificate(_unb64(doc["certificate"], "certificate"))
        access = x509.load_der_x509_certificate(_unb64(doc["access_certificate"], "access"))
        failures = int(doc.get("failures", 0))
    except (KeyError, ValueError, TypeError):
        raise KeyStoreError(f"keystore {file}: header unreadable") from None
    return KeystoreInfo(file, cert, access, failures)


def is_access_certificate(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is a keystore access certificate (self-issued, dataEncipherment only):
    never an e-mail certificate, so never published nor picked to decrypt messages."""
    if cert.subject != cert.issuer:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    mail_usage = ku.digital_signature or ku.content_commitment or ku.key_encipherment
    return ku.data_encipherment and not (mail_usage or ku.key_agreement or ku.key_cert_sign)


def find_access_key(card: CardSession, path: str | os.PathLike[str]) -> Pkcs11Key:
    """The card key that opens the keystore at ``path``: the one whose certificate the keystore
    names, else the card's own access key (a wrong card: opening it then counts as a failure)."""
    info = keystore_info(path)
    wanted = _fingerprint(info.access_certificate)
    certs = [c for c in card.certificates() if card.private_keys(id=c.id)]
    for cert in certs:
        if _fingerprint(cert.certificate) == wanted:
            return card.key_for(cert)
    for cert in certs:
        if cert.label == ACCESS_LABEL or is_access_certificate(cert.certificate):
            return card.key_for(cert)
    raise KeyStoreError(
        f"card {card.token.label!r} has no keystore access key: the keystore {info.path} "
        "belongs to another card"
    )


def open_keystore_with_card(path: str | os.PathLike[str], card: CardSession) -> SoftwareKey:
    """Open the keystore at ``path`` with the logged-in ``card``: one card operation."""
    return open_keystore(path, find_access_key(card, path))
