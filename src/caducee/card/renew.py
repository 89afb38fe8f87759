"""Renewing a card's certificates: new key pairs, new certificates, the same identity.

Why new keys: a renewal is the moment to retire a key that has been in use for years; the CA
certifies a key for a person only once (the one exception, the same key again for the same
purpose, is not used here).

What happens to the old objects:

- **encryption**: the old key and certificate stay on the card, relabelled
  ``encryption-old-<8 hex digits of their CKA_ID>``, so mail encrypted to the old certificate
  stays readable (``CardSession.decryption_keys()`` returns every encryption key, newest first)
  and the plain label ``encryption`` keeps naming the current key in key URIs.
- **signature**: the old key pair and its certificate are destroyed once the new ones are on the
  card. A signature is checked with the certificate carried in the message, never with the card,
  so nothing is lost; and a card then holds exactly one key able to sign for its holder.

Order, so that a refusal leaves the card as it was: every input is checked first
(:func:`plan_renewal`); the new signature key is generated on the card and certified - if the CA
refuses, the new key is destroyed again; the new encryption key is generated off-card and
certified before anything of it touches the card; only then are old objects relabelled or
removed and the new ones written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caducee.card.access import card_access_key
from caducee.card.issue import (
    ENCRYPTION_LABEL,
    SIGNATURE_LABEL,
    CertificateIssuer,
    check_keystore_target,
)
from caducee.card.names import readable_name
from caducee.card.objects import (
    KeyKind,
    PrivateKey,
    PublicKey,
    generate_on_card,
    import_private_key,
    new_private_key,
    write_certificate,
)
from caducee.errors import CaduceeError, PolicyError, UsageError
from caducee.keys.keystore import ACCESS_LABEL, create_keystore, is_access_certificate
from caducee.keys.pkcs11 import CardCertificate, CardSession, key_id
from caducee.keys.pkcs11_errors import card_errors
from caducee.serials import format_serial

if TYPE_CHECKING:
    from caducee.pki.ca import CertificateAuthority

RenewPurpose = Literal["signature", "encryption"]
PURPOSES: tuple[RenewPurpose, ...] = ("signature", "encryption")

#: Renewal is "due" once a certificate has this little time left (it is allowed any time).
RENEWAL_NOTICE = dt.timedelta(days=90)

#: Told each current certificate of the card (purpose, certificate) before anything is done;
#: raises :class:`RenewalRefusedError` when the CA knows it revoked (or never issued) it.
StatusCheck = Callable[[RenewPurpose, x509.Certificate], None]

__all__ = [
    "PURPOSES",
    "RENEWAL_NOTICE",
    "RenewPurpose",
    "RenewalPlan",
    "RenewalRefusedError",
    "RenewedCard",
    "StatusCheck",
    "ca_status_check",
    "current_certificates",
    "key_kind",
    "old_label",
    "plan_renewal",
    "renew_card",
    "renewal_notice",
]


class RenewalRefusedError(PolicyError):
    """The card is not renewed: a certificate on it is revoked, it is not this CA's, or it
    carries no usable identity. Nothing was changed, on the card or at the CA."""


# -- expiry ----------------------------------------------------------------------------------------


def renewal_notice(
    purpose: str, not_after: dt.datetime, at: dt.datetime, notice: dt.timedelta = RENEWAL_NOTICE
) -> str:
    """One line for ``caducee card status``: when the certificate ends and whether to renew."""
    end = not_after.date().isoformat()
    left = not_after - at
    if left < dt.timedelta(0):
        return f"{purpose} certificate EXPIRED on {end}: renew it (caducee card renew)"
    days = left.days
    when = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
    if left <= notice:
        return f"{purpose} certificate expires {end} ({when}): renewal DUE (caducee card renew)"
    return f"{purpose} certificate expires {end} ({when}): renewal not due yet"


# -- what is on the card now ----------------------------------------------------------------------


def _is_access(cert: CardCertificate) -> bool:
    return cert.label == ACCESS_LABEL or is_access_certificate(cert.certificate)


def current_certificates(card: CardSession) -> dict[RenewPurpose, CardCertificate]:
    """The certificate in use for each purpose: the newest one (latest notBefore, then the
    plain label). Encryption means an encryption-only certificate; the access key is never one."""
    current: dict[RenewPurpose, CardCertificate] = {}
    plain = (SIGNATURE_LABEL, ENCRYPTION_LABEL)

    def newest(c: CardCertificate) -> tuple[dt.datetime, bool, dt.datetime]:
        # Two renewals within a second share a notBefore: the plain label (which only the
        # current key carries, earlier ones are relabelled) decides.
        x = c.certificate
        return x.not_valid_before_utc, c.label in plain, x.not_valid_after_utc

    for cert in sorted(card.certificates(), key=newest, reverse=True):
        if _is_access(cert):
            continue
        if cert.for_signature:
            current.setdefault("signature", cert)
        elif cert.for_encryption:
            current.setdefault("encryption", cert)
    return current


def key_kind(cert: x509.Certificate) -> KeyKind:
    """The kind of key a certificate is for (a renewal keeps it unless told otherwise)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in (2048, 3072):
        return "rsa2048" if key.key_size == 2048 else "rsa3072"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return "p256" if key.curve.name == "secp256r1" else "p384"
    raise UsageError("the card's current key is of a kind cards cannot renew: give --kind")


def old_label(purpose: RenewPurpose, cka_id: bytes) -> str:
    """The label an earlier key and certificate get: unique per key, never the plain one."""
    return f"{purpose}-old-{cka_id.hex()[:8]}"


def _identity_of(cert: x509.Certificate) -> tuple[bytes, tuple[str, ...]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        mails = tuple(sorted(m.lower() for m in san.get_values_for_type(x509.RFC822Name)))
    except x509.ExtensionNotFound:
        mails = ()
    return cert.subject.public_bytes(), mails


@dataclasses.dataclass(frozen=True)
class RenewalPlan:
    """Everything checked before the card is changed."""

    purposes: tuple[RenewPurpose, ...]
    #: the card's current certificate for each purpose it has
    current: dict[RenewPurpose, CardCertificate]
    kinds: dict[RenewPurpose, KeyKind]
    #: keystore mode: the new keystore file for the new encryption key
    keystore: pathlib.Path | None = None
    #: the old signature key asked for the PIN at each use: so does the new one
    always_authenticate: bool = False

    @property
    def identity_certificate(self) -> x509.Certificate:
        """The certificate whose identity the new ones repeat."""
        cert = self.current.get("signature") or self.current["encryption"]
        return cert.certificate


def _parse_purposes(purposes: Sequence[str]) -> tuple[RenewPurpose, ...]:
    out: list[RenewPurpose] = []
    for p in purposes:
        if p not in PURPOSES:
            raise UsageError(f"purpose must be signature or encryption, not {p!r}")
        if p not in out:
            out.append(p)
    if not out:
        raise UsageError("nothing to renew: give signature, encryption or both")
    return tuple(out)


def plan_renewal(
    card: CardSession,
    purposes: Sequence[str],
    *,
    kind: KeyKind | None = None,
    keystore: str | os.PathLike[str] | None = None,
    check: StatusCheck | None = None,
) -> RenewalPlan:
    """Check that ``card`` can be renewed for ``purposes``; changes nothing.

    Refused: a purpose with no current certificate; current certificates naming different
    holders; a certificate that ``check`` reports revoked; in keystore mode an encryption
    renewal without a new ``keystore`` file (or a file that exists); a keystore file for a
    card-mode card.
    """
    wanted = _parse_purposes(purposes)
    current = current_certificates(card)
    for purpose in wanted:
        if purpose not in current:
            raise RenewalRefusedError(
                f"card {card.token.label!r} has no {purpose} certificate to renew: "
                "issue the card again (caducee card issue)"
            )
    if len({_identity_of(c.certificate) for c in current.values()}) > 1:
        raise RenewalRefusedError(
            f"the signature and encryption certificates of card {card.token.label!r} name "
            "different holders: it cannot be renewed, issue a new card"
        )
    if check is not None:
        for purpose in PURPOSES:  # a revoked certificate of either purpose stops the renewal
            if purpose in current:
                check(purpose, current[purpose].certificate)
    kinds = {p: kind or key_kind(current[p].certificate) for p in wanted}
    keystore_mode = card_access_key(card) is not None
    target: pathlib.Path | None = None
    if "encryption" in wanted and keystore_mode:
        if keystore is None:
            raise UsageError(
                f"card {card.token.label!r} keeps its encryption key in a keystore: give "
                "--keystore NEW_FILE for the renewed key (earlier keystores stay in use)"
            )
        target = check_keystore_target(keystore)
    elif keystore is not None:
        why = "is in card mode" if not keystore_mode else "keeps its encryption key"
        raise UsageError(f"--keystore is for renewing a keystore-mode card's encryption key "
                         f"(card {card.token.label!r} {why})")  # fmt: skip
    always = False
    if "signature" in wanted:
        handles = card.private_keys(id=current["signature"].id)
        if handles:
            (value,) = card.attributes(handles[0], [PyKCS11.CKA_ALWAYS_AUTHENTICATE])
            always = bool(value) and bytes(value) != b"\x00"
    return RenewalPlan(wanted, current, kinds, target, always)


def ca_status_check(ca: CertificateAuthority) -> StatusCheck:
    """A :data:`StatusCheck` against the CA's own index: the card's certificate must be one
    this CA issued (same serial, same bytes) and must not be revoked or on hold."""

    def check(purpose: RenewPurpose, cert: x509.Certificate) -> None:
        serial = format_serial(cert.serial_number)
        records = ca.store.records(serial=cert.serial_number)
        der = cert.public_bytes(serialization.Encoding.DER)
        if not records or ca.store.certificate_der(cert.serial_number) != der:
            raise RenewalRefusedError(
                f"the card's {purpose} certificate {serial} was not issued by {ca.config.name} "
                f"(issuer {readable_name(cert.issuer)}): renew the card with its own CA"
            )
        record = records[0]
        if record.status != "valid":
            when = record.revocation_time
            since = f" on {when:%Y-%m-%d %H:%M} UTC" if when is not None else ""
            reason = record.reason or "unspecified"
            if reason == "certificateHold":
                raise RenewalRefusedError(
                    f"the card's {purpose} certificate {serial} is on hold{since}: release "
                    f"it first (caducee ca release {serial}), or revoke it and issue a new card"
                )
            raise RenewalRefusedError(
                f"the card's {purpose} certificate {serial} was revoked{since} ({reason}): "
                "a card with a revoked certificate is not renewed; issue a new card"
            )

    return check


# -- renewing --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RenewedCard:
    """What a renewal did. ``encryption_private_key`` is for the escrow, and only for it."""

    signature_certificate: x509.Certificate | None
    encryption_certificate: x509.Certificate | None
    encryption_private_key: PrivateKey | None = dataclasses.field(repr=False)
    #: the certificates they replace
    previous: dict[RenewPurpose, x509.Certificate]
    #: the label the old encryption key and certificate now carry on the card
    old_encryption_label: str | None = None
    keystore: pathlib.Path | None = None

    def certificates(self) -> list[tuple[RenewPurpose, x509.Certificate]]:
        out: list[tuple[RenewPurpose, x509.Certificate]] = []
        if self.signature_certificate is not None:
            out.append(("signature", self.signature_certificate))
        if self.encryption_certificate is not None:
            out.append(("encryption", self.encryption_certificate))
        return out


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _objects(card: CardSession, cka_id: bytes) -> list[Any]:
    """Every object (certificate, public and private key) sharing ``cka_id``."""
    return card.find([(PyKCS11.CKA_ID, cka_id)])


def _destroy(card: CardSession, handles: list[Any], what: str) -> None:
    session = card.raw_session()
    with card_errors(what):
        for handle in handles:
            session.destroyObject(handle)


def _relabel(card: CardSession, handles: list[Any], label: str) -> None:
    session = card.raw_session()
    with card_errors("renaming the earlier encryption key on the card"):
        for handle in handles:
            session.setAttributeValue(handle, [(PyKCS11.CKA_LABEL, label)])


def _certify(issuer: CertificateIssuer, pub: PublicKey, purpose: RenewPurpose) -> x509.Certificate:
    cert = issuer(pub, purpose)
    if _spki(cert.public_key()) != _spki(pub):  # type: ignore[arg-type]
        raise RenewalRefusedError(f"the new {purpose} certificate is not for the new key")
    return cert


def renew_card(card: CardSession, plan: RenewalPlan, issuer: CertificateIssuer) -> RenewedCard:
    """Renew ``plan.purposes`` on ``card`` (a read-write, logged-in session) with new keys
    certified by ``issuer`` (see the module docstring for the order and what is kept)."""
    new_sig: tuple[bytes, x509.Certificate] | None = None
    enc: tuple[PrivateKey, x509.Certificate] | None = None
    if "signature" in plan.purposes:
        _, pub = generate_on_card(
            card,
            plan.kinds["signature"],
            SIGNATURE_LABEL,
            always_authenticate=plan.always_authenticate,
        )
        sig_id = key_id(pub)
        try:
            new_sig = (sig_id, _certify(issuer, pub, "signature"))
        except BaseException:
            _destroy(card, _objects(card, sig_id), "removing the new signature key again")
            raise
    if "encryption" in plan.purposes:
        key = new_private_key(plan.kinds["encryption"])
        try:
            enc = (key, _certify(issuer, key.public_key(), "encryption"))
        except BaseException as exc:
            if new_sig is None:
                raise
            _destroy(card, _objects(card, new_sig[0]), "removing the new signature key again")
            if not isinstance(exc, CaduceeError):
                raise
            serial = format_serial(new_sig[1].serial_number)
            raise type(exc)(
                f"{exc}; the card is unchanged, but the signature certificate {serial} issued "
                f"just before has no key any more: revoke it (caducee ca revoke {serial} "
                "--reason superseded)"
            ) from None
        if plan.keystore is not None:
            access = card_access_key(card)
            if access is None:  # plan_renewal saw it: the card changed meanwhile
                raise RenewalRefusedError("the card's keystore access key disappeared")
            create_keystore(plan.keystore, enc[0], enc[1], access)
    # Everything is certified: now the card changes.
    old_label_used: str | None = None
    if enc is not None:
        old = plan.current["encryption"]
        old_label_used = old_label("encryption", old.id)
        _relabel(card, _objects(card, old.id), old_label_used)
        if plan.keystore is None:
            import_private_key(card, enc[0], ENCRYPTION_LABEL)
        write_certificate(card, enc[1], ENCRYPTION_LABEL)
    if new_sig is not None:
        write_certificate(card, new_sig[1], SIGNATURE_LABEL)
        old_sig = plan.current["signature"]
        if old_sig.for_encryption:  # a combined certificate may still be needed to decrypt
            _relabel(card, _objects(card, old_sig.id), old_label("signature", old_sig.id))
        else:
            _destroy(card, _objects(card, old_sig.id), "removing the earlier signature key")
    return RenewedCard(
        signature_certificate=new_sig[1] if new_sig else None,
        encryption_certificate=enc[1] if enc else None,
        encryption_private_key=enc[0] if enc else None,
        previous={p: plan.current[p].certificate for p in plan.purposes},
        old_encryption_label=old_label_used,
        keystore=plan.keystore,
    )
