"""The PKCS#11 key backend: the professional's card behind the keys protocol.

A :class:`Pkcs11Module` is the loaded card middleware (SoftHSM2, OpenSC, a vendor's module); a
:class:`CardSession` is a logged-in session kept open like a card inserted in the morning; a
:class:`Pkcs11Key` is one private key on it with its certificate. Each ``sign_digest``,
``decrypt_key`` or ``ecdh`` is exactly one private-key operation on the card. What a key announces
(``signature_schemes``/``key_transports``) is what the token says it can do, so senders pick
something the card can decrypt. The module object is the seam tests wrap to inject card faults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import threading
from collections.abc import Callable
from typing import Any

import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from caducee.core.algorithms import KEY_TRANSPORT_PREFERENCE, Digest, KeyTransport, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.errors import ConfigError, UnsupportedAlgorithmError, UsageError
from caducee.keys.pkcs11_errors import (
    CKF_SO_PIN_COUNT_LOW,
    CKF_TOKEN_INITIALIZED,
    CKF_USER_PIN_COUNT_LOW,
    CardKeyNotFoundError,
    Role,
    TokenNotFoundError,
    card_errors,
)

#: Where Debian puts SoftHSM2, the stand-in card of tests and the demo.
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

#: Token manufacturers known to decrypt RSA-OAEP with SHA-1 only (SoftHSM2 2.6 answers
#: CKR_ARGUMENTS_BAD for SHA-256). For tokens not listed we stay just as careful: announcing a
#: padding the card cannot decrypt would make mail unreadable, announcing less only costs strength.
_OAEP_SHA256_TOKENS: frozenset[str] = frozenset()

#: Token manufacturers that never lock: SoftHSM2 raises "count low" after a wrong PIN but never
#: "final try" or "locked", so its flags cannot tell how many tries are left.
_NO_PIN_COUNTER_TOKENS: frozenset[str] = frozenset({"SoftHSM project"})

# DigestInfo prefixes for RSA PKCS#1 v1.5 (RFC 8017 §9.2, note 1).
_DIGEST_INFO_PREFIX = {
    Digest.SHA1: bytes.fromhex("3021300906052b0e03021a05000414"),
    Digest.SHA256: bytes.fromhex("3031300d060960864801650304020105000420"),
    Digest.SHA384: bytes.fromhex("3041300d060960864801650304020205000430"),
    Digest.SHA512: bytes.fromhex("3051300d060960864801650304020305000440"),
}
#: What a card answers when it does not take a mechanism's parameters (SoftHSM2: OAEP-SHA-256).
_PARAMS_REFUSED = frozenset(
    {PyKCS11.CKR_ARGUMENTS_BAD, PyKCS11.CKR_MECHANISM_INVALID, PyKCS11.CKR_MECHANISM_PARAM_INVALID}
)
_CKM_HASH = {
    Digest.SHA1: (PyKCS11.CKM_SHA_1, PyKCS11.CKG_MGF1_SHA1),
    Digest.SHA256: (PyKCS11.CKM_SHA256, PyKCS11.CKG_MGF1_SHA256),
    Digest.SHA384: (PyKCS11.CKM_SHA384, PyKCS11.CKG_MGF1_SHA384),
    Digest.SHA512: (PyKCS11.CKM_SHA512, PyKCS11.CKG_MGF1_SHA512),
}


def default_module_path() -> str:
    """The PKCS#11 module from ``CADUCEE_PKCS11_MODULE``, else SoftHSM2's."""
    return os.environ.get("CADUCEE_PKCS11_MODULE") or SOFTHSM2_MODULE


def key_id(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """The CKA_ID caducee gives a key pair and its certificate: the X.509 key identifier."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """What a slot's token says about itself (no secret in it)."""

    slot: int
    label: str
    serial: str
    manufacturer: str
    model: str
    flags: int
    min_pin: int
    max_pin: int

    @property
    def initialized(self) -> bool:
        return bool(self.flags & CKF_TOKEN_INITIALIZED)

    @property
    def counts_pin_tries(self) -> bool:
        """Whether the token's PIN-count flags mean anything (SoftHSM2's do not)."""
        return self.manufacturer not in _NO_PIN_COUNTER_TOKENS

    @property
    def pin_flags(self) -> int:
        """The flags, without PIN-count bits from a token that does not count tries."""
        if self.counts_pin_tries:
            return self.flags
        return self.flags & ~(CKF_USER_PIN_COUNT_LOW | CKF_SO_PIN_COUNT_LOW)


class Pkcs11Module:
    """A loaded PKCS#11 library. Every call to the library goes through this object or a session
    it opened, which makes it the place a test double wraps."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_module_path()
        if not os.path.exists(self.path):
            raise ConfigError(f"PKCS#11 module not found: {self.path}")
        self._lib: Any = PyKCS11.PyKCS11Lib()
        self.logins: dict[int, int] = {}  # slot -> our logged-in sessions sharing the login
        try:
            self._lib.load(self.path)
        except PyKCS11.PyKCS11Error as exc:
            hint = ""
            if "softhsm" in self.path.lower():
                conf = os.environ.get("SOFTHSM2_CONF", "/etc/softhsm/softhsm2.conf")
                hint = f"; check SoftHSM2's configuration {conf} and its token directory"
            code = PyKCS11.CKR.get(exc.value, exc.value)
            message = f"cannot load the PKCS#11 module {self.path} ({code}){hint}"
            raise ConfigError(message) from None

    def __repr__(self) -> str:
        return f"<Pkcs11Module {self.path}>"

    def close(self) -> None:
        """Unload the library (SoftHSM2 re-reads its configuration on the next load)."""
        lib, self._lib = self._lib, None
        if lib is not None:
            lib.unload()

    def __enter__(self) -> Pkcs11Module:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- slots and tokens --------------------------------------------------------------------

    def token_info(self, slot: int) -> TokenInfo:
        with card_errors("reading the card"):
            t = self._lib.getTokenInfo(slot)
        return TokenInfo(
            slot=slot,
            label=str(t.label).rstrip(" \x00"),
            serial=str(t.serialNumber).strip(" \x00"),
            manufacturer=str(t.manufacturerID).strip(" \x00"),
            model=str(t.model).strip(" \x00"),
            flags=int(t.flags),
            min_pin=int(t.ulMinPinLen),
            max_pin=int(t.ulMaxPinLen),
        )

    def tokens(self, *, initialized_only: bool = True) -> list[TokenInfo]:
        """Tokens present in the module's slots (initialised ones unless asked otherwise)."""
        with card_errors("listing card readers"):
            slots = list(self._lib.getSlotList(tokenPresent=True))
        infos = [self.token_info(int(slot)) for slot in slots]
        return [t for t in infos if t.initialized or not initialized_only]

    def find_token(
        self,
        *,
        label: str | None = None,
        serial: str | None = None,
        slot_id: int | None = None,
        how_to_name: str = "add token=LABEL to the key URI",
    ) -> TokenInfo:
        """The one token matching the given attributes; a clear error when none or several.
        ``how_to_name`` tells the user how to pick one (a URI attribute, a ``--token`` option)."""
        found = [
            t
            for t in self.tokens()
            if (label is None or t.label == label)
            and (serial is None or t.serial == serial)
            and (slot_id is None or t.slot == slot_id)
        ]
        if len(found) == 1:
            return found[0]
        wanted = ", ".join(
            f"{k} {v!r}"
            for k, v in (("label", label), ("serial", serial), ("slot", slot_id))
            if v is not None
        )
        if not found:
            present = ", ".join(repr(t.label) for t in self.tokens()) or "none"
            where = f" with {wanted}" if wanted else ""
            raise TokenNotFoundError(f"no card{where} in {self.path} (cards present: {present})")
        labels = ", ".join(repr(t.label) for t in found)
        raise TokenNotFoundError(f"several cards match ({labels}): {how_to_name}")

    def free_slot(self) -> int:
        """A slot whose token is not initialised yet (SoftHSM2 always keeps one)."""
        for token in self.tokens(initialized_only=False):
            if not token.initialized:
                return token.slot
        raise TokenNotFoundError(f"no blank card in {self.path}")

    def mechanisms(self, slot: int) -> frozenset[str]:
        """Names of the mechanisms the token offers (``CKM_RSA_PKCS``...)."""
        with card_errors("asking the card for its mechanisms"):
            return frozenset(str(m) for m in self._lib.getMechanismList(slot))

    def init_token(self, slot: int, so_pin: str, label: str) -> None:
        if len(label.encode()) > 32:
            raise UsageError("card label too long (32 bytes at most)")
        info = self.token_info(slot)
        with card_errors(
            "initialising the card", role="so", pin_range=(info.min_pin, info.max_pin)
        ):
            self._lib.initToken(slot, so_pin, label.ljust(32))

    def open_session(self, slot: int, *, rw: bool = False) -> Any:
        """A raw PyKCS11 session (serial; read-write when asked)."""
        flags = PyKCS11.CKF_RW_SESSION if rw else 0
        with card_errors("opening a session on the card"):
            return self._lib.openSession(slot, flags)


# -- logged-in session --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CardCertificate:
    """A certificate object on the card."""

    handle: Any
    id: bytes
    label: str
    certificate: x509.Certificate

    @property
    def for_signature(self) -> bool:
        ku = _key_usage(self.certificate)
        return ku is None or ku.digital_signature or ku.content_commitment

    @property
    def for_encryption(self) -> bool:
        ku = _key_usage(self.certificate)
        return ku is None or ku.key_encipherment or ku.key_agreement


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return None


class CardSession:
    """A session on one token, logged in once and kept open until :meth:`close`.

    PKCS#11 logins belong to the application, not the session: a second session of this process
    on a card that is already logged in shares that login (its PIN is not checked again), and
    only the last of our logged-in sessions logs out.
    """

    def __init__(
        self,
        module: Pkcs11Module,
        token: TokenInfo,
        pin: str | None,
        *,
        rw: bool = False,
        so: bool = False,
        owns_module: bool = False,
        pin_callback: Callable[[str], str] | None = None,
    ) -> None:
        self.module = module
        self._owns_module = owns_module
        # Asked again only for keys that demand the PIN for each use (CKA_ALWAYS_AUTHENTICATE);
        # the callback is kept, never the PIN.
        self.pin_callback = pin_callback
        # A PKCS#11 session runs one operation at a time: threads of the agent take turns.
        self.lock = threading.RLock()
        self.token = token
        self.operations = 0  # private-key operations done, for audit and benchmarks
        self._mechanisms: frozenset[str] | None = None
        self.session: Any = module.open_session(token.slot, rw=rw)
        self._logged_in = False
        if pin is not None:
            role: Role = "so" if so else "user"
            try:
                with card_errors(
                    "checking the SO PIN" if so else "checking the PIN",
                    role=role,
                    flags=lambda: module.token_info(token.slot).pin_flags,
                    pin_range=(token.min_pin, token.max_pin),
                ):
                    try:
                        self.session.login(pin, PyKCS11.CKU_SO if so else PyKCS11.CKU_USER)
                    except PyKCS11.PyKCS11Error as exc:
                        # PKCS#11 logins are per application: another session of ours on this
                        # card is already logged in, and this one shares that login.
                        if exc.value != PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
                            raise
            except BaseException:
                self.close()
                raise
            self._logged_in = True
            module.logins[token.slot] = module.logins.get(token.slot, 0) + 1

    def __repr__(self) -> str:
        return f"<CardSession on {self.token.label!r}>"

    def __enter__(self) -> CardSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out and close; errors from a removed card do not matter any more here."""
        self._close_quietly()
        if self._owns_module:
            self._owns_module = False
            self.module.close()

    def _close_quietly(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if self._logged_in:
            # C_Logout ends the login of every session of this process on the card: only the
            # last logged-in session of ours logs out.
            slot = self.token.slot
            self.module.logins[slot] = left = self.module.logins.get(slot, 1) - 1
            if left <= 0:
                with contextlib.suppress(PyKCS11.PyKCS11Error):
                    session.logout()
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            session.closeSession()

    def raw_session(self) -> Any:
        if self.session is None:
            raise UsageError("the card session is closed")
        return self.session

    @property
    def mechanisms(self) -> frozenset[str]:
        if self._mechanisms is None:
            self._mechanisms = self.module.mechanisms(self.token.slot)
        return self._mechanisms

    # -- objects -----------------------------------------------------------------------------

    def find(self, template: list[tuple[int, Any]]) -> list[Any]:
        with card_errors("searching the card"):
            return list(self.raw_session().findObjects(template))

    def attributes(self, handle: Any, attrs: list[int]) -> list[Any]:
        with card_errors("reading a card object"):
            return list(self.raw_session().getAttributeValue(handle, attrs, allAsBinary=True))

    def certificates(self) -> list[CardCertificate]:
        """Every X.509 certificate object on the card, newest first: latest notBefore, then (a
        tie within notBefore's one-second resolution, e.g. two renewals in a row) the one under
        a current label ("signature", "encryption"; renewal relabels the old ones), then the
        latest notAfter."""
        out: list[CardCertificate] = []
        for handle in self.find([(PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE)]):
            value, cid, label = self.attributes(
                handle, [PyKCS11.CKA_VALUE, PyKCS11.CKA_ID, PyKCS11.CKA_LABEL]
            )
            try:
                cert = x509.load_der_x509_certificate(bytes(value))
            except ValueError:
                continue  # not an X.509 certificate we can read: not ours to use
            out.append(
                CardCertificate(handle, bytes(cid), bytes(label).decode("utf-8", "replace"), cert)
            )
        out.sort(
            key=lambda c: (
                c.certificate.not_valid_before_utc,
                c.label in ("signature", "encryption"),
                c.certificate.not_valid_after_utc,
            ),
            reverse=True,
        )
        return out

    def private_keys(self, *, label: str | None = None, id: bytes | None = None) -> list[Any]:
        template: list[tuple[int, Any]] = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)]
        if label is not None:
            template.append((PyKCS11.CKA_LABEL, label))
        if id is not None:
            template.append((PyKCS11.CKA_ID, id))
        return self.find(template)

    def key_for(self, cert: CardCertificate) -> Pkcs11Key:
        """The private key paired (by CKA_ID) with a certificate on the card."""
        handles = self.private_keys(id=cert.id)
        if not handles:
            raise CardKeyNotFoundError(
                f"no private key on card {self.token.label!r} for certificate {cert.label!r}"
            )
        (always,) = self.attributes(handles[0], [PyKCS11.CKA_ALWAYS_AUTHENTICATE])
        always_auth = bool(always) and bytes(always) != b"\x00"
        return Pkcs11Key(self, handles[0], cert.certificate, cert.label, always_auth)

    def keys(self) -> list[Pkcs11Key]:
        """Every private key that has its certificate on the card, newest first."""
        out = []
        for cert in self.certificates():
            if self.private_keys(id=cert.id):
                out.append(self.key_for(cert))
        return out

    def signing_key(self, at: dt.datetime | None = None) -> Pkcs11Key:
        """The signature key: the newest certificate for signature valid at ``at``."""
        certs = [c for c in self.certificates() if c.for_signature and _valid(c, at)]
        for cert in certs:
            if self.private_keys(id=cert.id):
                return self.key_for(cert)
        raise CardKeyNotFoundError(f"no valid signature key on card {self.token.label!r}")

    def decryption_keys(self) -> list[Pkcs11Key]:
        """One key per encryption certificate on the card (current and earlier ones), newest
        first: old messages stay readable after a renewal."""
        return [
            self.key_for(c)
            for c in self.certificates()
            if c.for_encryption and self.private_keys(id=c.id)
        ]


def rsa_transports(mechanisms: frozenset[str], manufacturer: str) -> frozenset[KeyTransport]:
    """The RSA paddings a token with these mechanisms decrypts with."""
    out = set()
    if "CKM_RSA_PKCS" in mechanisms:
        out.add(KeyTransport.RSA_PKCS1V15)
    if "CKM_RSA_PKCS_OAEP" in mechanisms:
        out.add(KeyTransport.RSA_OAEP_SHA1)
        if manufacturer in _OAEP_SHA256_TOKENS:
            out.add(KeyTransport.RSA_OAEP_SHA256)
    return frozenset(out)


def token_capabilities(mechanisms: frozenset[str], manufacturer: str) -> Capabilities:
    """What a card of this kind can decrypt (written in its encryption certificate)."""
    transports = rsa_transports(mechanisms, manufacturer)
    return Capabilities(
        key_transports=tuple(k for k in KEY_TRANSPORT_PREFERENCE if k in transports)
    )


def card_capabilities(key: Pkcs11Key) -> Capabilities:
    """The SMIMECapabilities to announce when signing: every content cipher (decrypted in
    software) and only the RSA paddings this card decrypts with ``key``, so senders choose
    something the card can open (SoftHSM2: OAEP-SHA-1 and PKCS#1 v1.5)."""
    transports = key.key_transports()
    return Capabilities(
        key_transports=tuple(k for k in KEY_TRANSPORT_PREFERENCE if k in transports)
    )


def _sign_with_context_login(session: Any, key: Any, data: bytes, mech: Any, *, pin: str) -> Any:
    """C_SignInit, C_Login(CKU_CONTEXT_SPECIFIC), C_Sign: for keys that want the PIN at each use.
    PyKCS11's ``sign`` cannot put the login between init and sign, so this is spelled out."""
    lib, handle = session.lib, session.session
    rv = lib.C_SignInit(handle, mech.to_native(), key)
    if rv != PyKCS11.CKR_OK:
        raise PyKCS11.PyKCS11Error(rv)
    signature, data1 = PyKCS11.ckbytelist(), PyKCS11.ckbytelist(data)
    try:
        session.login(pin, PyKCS11.CKU_CONTEXT_SPECIFIC)
    except PyKCS11.PyKCS11Error:
        # End the pending sign operation (a refused C_Sign terminates it; a size query that
        # succeeds does not, hence the second call), or the next signature would meet
        # CKR_OPERATION_ACTIVE.
        for _ in range(2):
            if lib.C_Sign(handle, data1, signature) != PyKCS11.CKR_OK:
                break
        raise
    for _ in range(2):  # first call: size; second: the signature
        rv = lib.C_Sign(handle, data1, signature)
        if rv != PyKCS11.CKR_OK:
            raise PyKCS11.PyKCS11Error(rv)
    return signature


def _valid(cert: CardCertificate, at: dt.datetime | None) -> bool:
    if at is None:
        return True
    c = cert.certificate
    return c.not_valid_before_utc <= at <= c.not_valid_after_utc


# -- the key ------------------------------------------------------------------------------------


class Pkcs11Key:
    """A private key on the card with its certificate; implements SigningKey and DecryptionKey."""

    __slots__ = ("_always_auth", "_card", "_cert", "_handle", "label")

    def __init__(
        self,
        card: CardSession,
        handle: Any,
        certificate: x509.Certificate,
        label: str = "",
        always_authenticate: bool = False,
    ) -> None:
        self._card = card
        self._handle = handle
        self._cert = certificate
        self.label = label
        self._always_auth = always_authenticate

    def __repr__(self) -> str:  # never show key material or PINs
        return (
            f"<Pkcs11Key {self.label!r} on {self._card.token.label!r} "
            f"for {self._cert.subject.rfc4514_string()}>"
        )

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def card(self) -> CardSession:
        return self._card

    def _public(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        pub = self._cert.public_key()
        if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise UnsupportedAlgorithmError("only RSA and EC card keys are supported")
        return pub

    def _operate(self, action: str, call: str, *args: Any, unsupported: str = "") -> Any:
        """One private-key operation on the card; ``unsupported`` names what to blame when
        the card refuses the mechanism or its parameters."""
        card = self._card
        with card.lock:
            session = card.raw_session()
            card.operations += 1
            pin = self._context_pin() if call == "sign" and self._always_auth else None
            with card_errors(
                action,
                flags=lambda: card.module.token_info(card.token.slot).pin_flags,
                key_label=self.label or None,
            ):
                try:
                    if pin is not None:
                        return _sign_with_context_login(session, self._handle, *args, pin=pin)
                    return getattr(session, call)(self._handle, *args)
                except PyKCS11.PyKCS11Error as exc:
                    if unsupported and exc.value in _PARAMS_REFUSED:
                        raise UnsupportedAlgorithmError(unsupported) from None
                    raise

    def _context_pin(self) -> str:
        callback = self._card.pin_callback
        if callback is None:
            raise UsageError(
                f"the card key {self.label!r} asks for the PIN at every signature: "
                "open the card with a PIN prompt"
            )
        return callback(f"card {self._card.token.label!r} (signature)")

    # -- SigningKey --------------------------------------------------------------------------

    def signature_schemes(self) -> frozenset[SignatureScheme]:
        mechs = self._card.mechanisms
        if isinstance(self._public(), rsa.RSAPublicKey):
            out = set()
            if "CKM_RSA_PKCS" in mechs:
                out.add(SignatureScheme.RSA_PKCS1V15)
            if "CKM_RSA_PKCS_PSS" in mechs:
                out.add(SignatureScheme.RSA_PSS)
            return frozenset(out)
        return frozenset({SignatureScheme.ECDSA} if "CKM_ECDSA" in mechs else ())

    def sign_digest(self, digest: bytes, algorithm: Digest, scheme: SignatureScheme) -> bytes:
        if len(digest) != algorithm.size:
            raise UsageError(
                f"digest is {len(digest)} bytes, {algorithm.label} needs {algorithm.size}"
            )
        if scheme not in self.signature_schemes():
            raise UnsupportedAlgorithmError(f"this card key cannot sign with {scheme.value}")
        pub = self._public()
        if scheme is SignatureScheme.RSA_PKCS1V15:
            mech: Any = PyKCS11.Mechanism(PyKCS11.CKM_RSA_PKCS, None)
            data = _DIGEST_INFO_PREFIX[algorithm] + digest
        elif scheme is SignatureScheme.RSA_PSS:
            hash_mech, mgf = _CKM_HASH[algorithm]
            mech = PyKCS11.RSA_PSS_Mechanism(
                PyKCS11.CKM_RSA_PKCS_PSS, hash_mech, mgf, algorithm.size
            )
            data = digest
        else:
            mech = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
            data = digest
        refused = f"this card cannot sign with {scheme.value} and {algorithm.label}"
        raw = bytes(self._operate("signing", "sign", data, mech, unsupported=refused))
        if scheme is not SignatureScheme.ECDSA:
            return raw
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        half = (pub.curve.key_size + 7) // 8
        if len(raw) != 2 * half:
            raise UnsupportedAlgorithmError("the card returned an ECDSA signature of odd size")
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return utils.encode_dss_signature(r, s)

    # -- DecryptionKey -----------------------------------------------------------------------

    def key_transports(self) -> frozenset[KeyTransport]:
        if not isinstance(self._public(), rsa.RSAPublicKey):
            return frozenset()
        return rsa_transports(self._card.mechanisms, self._card.token.manufacturer)

    def decrypt_key(self, encrypted_key: bytes, padding: KeyTransport) -> bytes:
        if not isinstance(self._public(), rsa.RSAPublicKey):
            raise UnsupportedAlgorithmError("RSA key transport needs an RSA key")
        if padding is KeyTransport.RSA_PKCS1V15:
            mech: Any = PyKCS11.Mechanism(PyKCS11.CKM_RSA_PKCS, None)
        else:
            digest = Digest.SHA1 if padding is KeyTransport.RSA_OAEP_SHA1 else Digest.SHA256
            hash_mech, mgf = _CKM_HASH[digest]
            mech = PyKCS11.RSAOAEPMechanism(hash_mech, mgf)
        refused = f"this card cannot decrypt {padding.value}"
        return bytes(
            self._operate(
                "decrypting the message key", "decrypt", encrypted_key, mech, unsupported=refused
            )
        )

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        pub = self._public()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise UnsupportedAlgorithmError("ECDH key agreement needs an EC key")
        if peer_public_key.curve.name != pub.curve.name:
            raise UnsupportedAlgorithmError(
                f"originator key is on {peer_public_key.curve.name}, the card key on "
                f"{pub.curve.name}"
            )
        if "CKM_ECDH1_DERIVE" not in self._card.mechanisms:
            raise UnsupportedAlgorithmError("this card cannot do ECDH")
        point = peer_public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        size = (pub.curve.key_size + 7) // 8
        template = [
            (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_GENERIC_SECRET),
            (PyKCS11.CKA_VALUE_LEN, size),
            (PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE),
            (PyKCS11.CKA_SENSITIVE, PyKCS11.CK_FALSE),
            (PyKCS11.CKA_EXTRACTABLE, PyKCS11.CK_TRUE),
        ]
        mech = PyKCS11.ECDH1_DERIVE_Mechanism(point)
        with self._card.lock:
            return self._derive(template, mech)

    def _derive(self, template: list[tuple[int, Any]], mech: Any) -> bytes:
        secret = self._operate("agreeing the message key (ECDH)", "deriveKey", template, mech)
        session = self._card.raw_session()
        try:
            with card_errors("reading the agreed key"):
                (value,) = session.getAttributeValue(secret, [PyKCS11.CKA_VALUE], True)
        finally:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                session.destroyObject(secret)
        return bytes(value)
