"""An operator's certification authority: create it, issue professionals' certificates, revoke.

Two trust models are supported by the same code:

- **hierarchy** — a national health root (:meth:`CertificateAuthority.init_root`) signs each
  operator's CA (:meth:`CertificateAuthority.init_subordinate`); installations trust the root;
- **independent roots** — an operator runs its own root and other operators add it to their trust
  bundle explicitly.

The CA decides the subject from a :class:`ProfessionalIdentity` it has checked; a CSR only proves
possession of the key (its signature is verified) and supplies the public key (policed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from caducee.core.capabilities import Capabilities
from caducee.errors import KeyStoreError, UsageError
from caducee.pki.errors import CSRError, IssuanceRefusedError
from caducee.pki.names import (
    UB_COMMON_NAME,
    UB_ORGANIZATION_NAME,
    bad_character,
    check_country,
    check_days,
    check_text,
)
from caducee.pki.profiles import (
    CA_KEY_USAGE,
    EMAIL_PROTECTION,
    ProfessionalIdentity,
    PublicKey,
    Purpose,
    ValidityPolicy,
    check_public_key,
    key_usage_for,
)
from caducee.pki.signer import (
    CAPrivateKey,
    CASigner,
    SoftwareCASigner,
    sign_certificate,
    sign_crl,
)
from caducee.pki.store import CAConfig, CAStore, IndexEvent, IssuedRecord
from caducee.serials import format_serial

#: CLI/API reason names (RFC 5280 CRLReason) -> cryptography flags
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "caCompromise": x509.ReasonFlags.ca_compromise,
}

KEY_KINDS = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384")

Clock = Callable[[], dt.datetime]


class CAListener(Protocol):
    """Told after each issuance and revocation (how the directory publishes and withdraws).

    Called after the index is updated; an exception in a listener propagates to the caller
    (the certificate stays issued/revoked: publication can be retried). A listener may also
    have ``released(cert)`` (a hold lifted); without it, ``issued`` is called again.
    """

    def issued(
        self, cert: x509.Certificate, identity: ProfessionalIdentity, purpose: str
    ) -> None: ...

    def revoked(self, cert: x509.Certificate, reason: str) -> object: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_ca_key(kind: str) -> CAPrivateKey:
    """A fresh CA key of ``kind`` (one of :data:`KEY_KINDS`)."""
    if kind.startswith("rsa") and kind[3:] in ("2048", "3072", "4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise UsageError(f"unknown key type {kind!r} (one of {', '.join(KEY_KINDS)})")


def ca_name(name: str, organisation: str | None = None, country: str | None = None) -> x509.Name:
    """A CA's subject (``C``, ``O``, ``CN``), every value checked against X.509's bounds."""
    attrs = []
    if country is not None:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, check_country(country)))
    if organisation is not None:
        check_text("CA organisation", organisation, UB_ORGANIZATION_NAME)
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    check_text("CA name", name, UB_COMMON_NAME)
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    return x509.Name(attrs)


#: subject attributes that say "a person", never found in a CA's name
_PERSON_ATTRIBUTES = {
    NameOID.EMAIL_ADDRESS: "an e-mail address",
    NameOID.GIVEN_NAME: "a given name",
    NameOID.SURNAME: "a surname",
    NameOID.SERIAL_NUMBER: "a professional identifier (serialNumber)",
}


def check_ca_request(csr: x509.CertificateSigningRequest) -> None:
    """Refuse a request that is not a CA's: a professional's card request must not become a CA.

    A CA request names no person (no e-mail, given name, surname, serialNumber, no e-mail in
    a requested subjectAltName) and either asks to be a CA (basicConstraints cA=true, as
    ``caducee ca request`` writes) or carries an organisation and a common name.
    """
    subject = csr.subject
    for oid, what in _PERSON_ATTRIBUTES.items():
        if subject.get_attributes_for_oid(oid):
            raise IssuanceRefusedError(
                f"the request's subject has {what}: it looks like a professional's request, "
                "not a CA's (give --any-subject to certify it anyway)"
            )
    try:
        extensions = csr.extensions
    except ValueError:
        raise CSRError("the request's extensions cannot be read") from None
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if san.get_values_for_type(x509.RFC822Name):
            raise IssuanceRefusedError(
                "the request names an e-mail address: it looks like a professional's request, "
                "not a CA's (give --any-subject to certify it anyway)"
            )
    except x509.ExtensionNotFound:
        pass
    try:
        asks_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        asks_ca = False
    has_cn = bool(subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    has_o = bool(subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    if not has_cn or not (asks_ca or has_o):
        raise IssuanceRefusedError(
            f"the request's subject {subject.rfc4514_string()[:80]!r} does not look like a CA "
            "name (it needs a CN, and an O or a basicConstraints cA=true request; "
            "give --any-subject to certify it anyway)"
        )


def check_subject_text(subject: x509.Name) -> None:
    """Every value of a requested subject: no control or invisible characters, none empty."""
    for attr in subject:
        value = attr.value if isinstance(attr.value, str) else ""
        bad = bad_character(value)
        if bad is not None or (isinstance(attr.value, str) and not value.strip()):
            raise CSRError(
                f"the request's subject attribute {attr.oid._name} is empty or contains a "
                f"control or invisible character ({bad or 'empty'})"
            )


def load_csr(data: bytes, where: str = "CSR") -> x509.CertificateSigningRequest:
    """Read a PEM or DER PKCS#10 request and check its self-signature (proof of possession)."""
    try:
        csr = (
            x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)
        )
    except ValueError:
        raise CSRError(f"{where}: not a PEM or DER certificate request") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise CSRError(f"{where}: the request's signature does not verify")
    return csr


class CertificateAuthority:
    """One CA directory plus (for signing operations) its key.

    Reading (``certificate``, ``records``) needs no key; ``issue``/``revoke``/``crl`` do.
    """

    def __init__(
        self, store: CAStore, signer: CASigner | None = None, *, clock: Clock = _utcnow
    ) -> None:
        self.store = store
        self._signer = signer
        self._clock = clock
        self.listeners: list[CAListener] = []
        self.config: CAConfig = store.config()
        self.certificate: x509.Certificate = store.certificate()
        self.chain: list[x509.Certificate] = store.chain()

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self.config.name!r} at {self.store.path}>"

    # -- opening and creating ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        passphrase: bytes | None = None,
        signer: CASigner | None = None,
        clock: Clock = _utcnow,
    ) -> CertificateAuthority:
        """Open an existing CA; with ``passphrase`` its key file is decrypted now."""
        store = CAStore(path)
        if signer is None and passphrase is not None:
            signer = SoftwareCASigner(store.load_key(passphrase))
        ca = cls(store, signer, clock=clock)
        if signer is not None and not _same_key(signer.public_key(), ca.certificate.public_key()):
            raise KeyStoreError(f"{path}: the signing key does not match the CA certificate")
        return ca

    @classmethod
    def init_root(
        cls,
        path: str | os.PathLike[str],
        config: CAConfig,
        *,
        organisation: str | None = None,
        country: str | None = None,
        key: CAPrivateKey | None = None,
        signer: CASigner | None = None,
        passphrase: bytes | None = None,
        days: int = 20 * 365,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """Create a self-signed root (national root, or an operator's independent root).

        Give either ``key`` (stored encrypted with ``passphrase``) or an external ``signer``.
        """
        check_days("CA validity (--days)", days)
        subject = ca_name(config.name, organisation, country)
        CAStore(path).check_free()
        signer, key = _signer_for(key, signer)
        now = now or _utcnow()
        public = check_public_key(signer.public_key(), "CA key")
        builder = _ca_builder(subject, subject, public, now, days, path_length=None)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
        )
        cert = sign_certificate(builder, signer)
        CAStore(path).create(config, cert, [], key, passphrase)
        return cls(CAStore(path), signer)

    @classmethod
    def init_subordinate(
        cls,
        path: str | os.PathLike[str],
        config: CAConfig,
        parent: CertificateAuthority,
        *,
        organisation: str | None = None,
        country: str | None = None,
        key: CAPrivateKey | None = None,
        signer: CASigner | None = None,
        passphrase: bytes | None = None,
        days: int = 10 * 365,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        """Create an operator CA certified by ``parent`` (the national root).

        The parent's directory is remembered (``parent_dir``): its CRL then tells this CA that
        it has been revoked, and it stops issuing.
        """
        check_days("CA validity (--days)", days)
        subject = ca_name(config.name, organisation, country)
        CAStore(path).check_free()
        if key is not None and passphrase is None:
            raise UsageError("a passphrase is required to protect the CA key")
        signer, key = _signer_for(key, signer)
        public = check_public_key(signer.public_key(), "CA key")
        if config.parent_dir is None:
            config = dataclasses.replace(config, parent_dir=str(parent.store.path.resolve()))
        cert = parent.certify_ca(public, subject, days=days, now=now)
        CAStore(path).create(config, cert, [parent.certificate, *parent.chain], key, passphrase)
        return cls(CAStore(path), signer)

    @classmethod
    def request(
        cls,
        path: str | os.PathLike[str],
        config: CAConfig,
        *,
        key: CAPrivateKey,
        passphrase: bytes,
        organisation: str | None = None,
        country: str | None = None,
    ) -> x509.CertificateSigningRequest:
        """Prepare an operator CA whose certificate a root run elsewhere will sign.

        Stores the encrypted key and returns the CSR; finish with :meth:`adopt`.
        """
        check_public_key(key.public_key(), "CA key")
        CAStore(path).check_free()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(ca_name(config.name, organisation, country))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, _signer_hash(key))
        )
        CAStore(path).create_pending(
            config, key, passphrase, csr.public_bytes(serialization.Encoding.PEM)
        )
        return csr

    def certify_ca_request(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        *,
        days: int = 10 * 365,
        now: dt.datetime | None = None,
        any_subject: bool = False,
        rollover: bool = False,
    ) -> x509.Certificate:
        """Sign an operator CA's request (subject as requested: the root operator reviews it).

        The request must look like a CA's (:func:`check_ca_request`) unless ``any_subject``:
        turning a professional's request into a CA is the administrator's explicit decision.
        """
        if isinstance(csr, bytes):
            csr = load_csr(csr)
        check_subject_text(csr.subject)
        if not any_subject:
            check_ca_request(csr)
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise CSRError("the request's public key cannot be read") from None
        return self.certify_ca(
            check_public_key(public_key, "CA key"), csr.subject, days=days, now=now,
            rollover=rollover,
        )  # fmt: skip

    @classmethod
    def adopt(
        cls,
        path: str | os.PathLike[str],
        config: CAConfig | None,
        certificate: x509.Certificate,
        chain: list[x509.Certificate],
        *,
        key: CAPrivateKey | None = None,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        """Set up a CA directory for a CA certificate made elsewhere.

        For a CA key on a PKCS#11 token (no ``key``: open it later with ``signer=``), or an
        operator CA certified by a root run by another party after :meth:`request` (``config``
        None: the pending one is used, and the certificate must be for the requested key).
        The certificate must be a CA certificate able to sign certificates and CRLs, issued by
        ``chain[0]`` if given.
        """
        pending = CAStore(path).pending()
        if pending is not None:
            config = config or pending[0]
            requested = load_csr(pending[1]).public_key()
            if not _same_key(requested, certificate.public_key()):  # type: ignore[arg-type]
                raise UsageError("the certificate is not for the key of the pending request")
        if config is None:
            raise UsageError(f"{path}: no pending request here; a CA configuration is needed")
        try:
            bc = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
            ku = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
            certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except (x509.ExtensionNotFound, ValueError):
            raise UsageError("not a CA certificate (basicConstraints/keyUsage/SKI)") from None
        if not (bc.ca and ku.key_cert_sign and ku.crl_sign):
            raise UsageError("the certificate is not allowed to sign certificates and CRLs")
        if chain:
            try:
                certificate.verify_directly_issued_by(chain[0])
            except (ValueError, TypeError, InvalidSignature):
                raise UsageError(
                    "the CA certificate is not issued by the first chain certificate"
                ) from None
        if key is not None and not _same_key(key.public_key(), certificate.public_key()):
            raise UsageError("the key does not match the CA certificate")
        CAStore(path).create(config, certificate, chain, key, passphrase)
        return cls(CAStore(path), SoftwareCASigner(key) if key is not None else None)

    def issuer_for(
        self,
        identity: ProfessionalIdentity,
        *,
        days: int | None = None,
        now: dt.datetime | None = None,
        capabilities: Capabilities | None = None,
    ) -> Callable[[PublicKey, str], x509.Certificate]:
        """A ``CertificateIssuer`` callback for card issuance (``caducee.card.issue_card``).

        ``capabilities``: what the card can decrypt, written in its encryption certificate.
        """

        def issue(public_key: PublicKey, role: str) -> x509.Certificate:
            caps = capabilities if role == "encryption" else None
            return self.issue(public_key, identity, role, days=days, now=now, capabilities=caps)

        return issue

    # -- issuing -----------------------------------------------------------------------------------

    def require_signer(self) -> CASigner:
        if self._signer is None:
            raise KeyStoreError(f"{self.store.path}: the CA key is not loaded (passphrase needed)")
        return self._signer

    def _now(self, now: dt.datetime | None) -> dt.datetime:
        return (now or self._clock()).astimezone(dt.UTC)

    def _check_ca_valid(self, now: dt.datetime) -> None:
        if not (
            self.certificate.not_valid_before_utc <= now <= self.certificate.not_valid_after_utc
        ):
            raise UsageError(f"the CA certificate of {self.config.name} is not valid now")
        self._check_not_revoked()

    def _check_not_revoked(self) -> None:
        """Refuse to sign when the parent CA, run on this machine, has revoked this CA.

        Only the parent's own CRL file is read (``parent_dir``), verified with the parent's
        key; a CA whose parent runs elsewhere cannot know and is not checked here.
        """
        if self.config.parent_dir is None or not self.chain:
            return
        try:
            crl = CAStore(self.config.parent_dir).latest_crl()
        except (OSError, ValueError):
            return
        if crl is None or crl.issuer != self.certificate.issuer:
            return
        try:
            if not crl.is_signature_valid(self.chain[0].public_key()):  # type: ignore[arg-type]
                return
        except (TypeError, ValueError, UnsupportedAlgorithm):
            return
        entry = crl.get_revoked_certificate_by_serial_number(self.certificate.serial_number)
        if entry is not None:
            raise IssuanceRefusedError(
                f"the CA certificate of {self.config.name} was revoked by its parent on "
                f"{entry.revocation_date_utc:%Y-%m-%d %H:%M} UTC: this CA can no longer issue"
            )

    def _check_key_unused(
        self, key: PublicKey, purpose: str, identity: ProfessionalIdentity | None
    ) -> None:
        """One key, one identity, one purpose: refuse a key this CA has already certified.

        The only exception is a renewal: the same key again for the same professional
        identifier, the same address and the same purpose, unless that key was revoked as
        compromised.
        """
        if any(_same_key(key, c.public_key()) for c in [self.certificate, *self.chain]):
            raise IssuanceRefusedError("the request is for a CA's own key: refused")
        for r in self.store.records_for_key(key):
            serial = format_serial(r.serial)
            if r.reason == "keyCompromise":
                raise IssuanceRefusedError(
                    f"this key was revoked as compromised (certificate {serial}): "
                    "a new key is needed"
                )
            renewal = (
                identity is not None
                and r.purpose == purpose
                and r.professional_id == identity.professional_id
                and r.email == identity.email.lower()
            )
            if not renewal:
                holder = r.email or r.subject
                raise IssuanceRefusedError(
                    f"this key is already certified by {self.config.name} for {holder} "
                    f"({r.purpose}, certificate {serial}); each certificate needs its own key "
                    "(separate signature and encryption keys, one per person)"
                )

    def _check_address(self, identity: ProfessionalIdentity, now: dt.datetime) -> None:
        """Refuse to bind an address another professional holds a live certificate for."""
        for r in self.store.records_for_email(identity.email):
            live = r.status == "valid" or r.reason == "certificateHold"
            if live and r.not_after > now and r.professional_id != identity.professional_id:
                raise IssuanceRefusedError(
                    f"{identity.email} belongs to professional {r.professional_id} "
                    f"(certificate {format_serial(r.serial)}), not {identity.professional_id}; "
                    "revoke their certificates first, or give --reassign-address "
                    "(reassign_address=True) to bind it anyway"
                )

    def check_can_certify_ca(
        self, subject: x509.Name, *, now: dt.datetime | None = None, rollover: bool = False
    ) -> None:
        """Raise now if a sub-CA named ``subject`` would be refused (validity of this CA, its
        revocation, path length, name already used), before a key is even generated."""
        now = self._now(now)
        self._check_ca_valid(now)
        self._check_path_length()
        if not rollover:
            self._check_ca_name(subject, now)

    def _check_path_length(self) -> None:
        """Refuse a sub-CA that a path length constraint above would make invalid."""
        for depth, cert in enumerate([self.certificate, *self.chain]):
            try:
                bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                continue
            if bc.path_length is not None and bc.path_length < depth + 1:
                name = _cn(cert)
                if depth == 0:
                    raise IssuanceRefusedError(
                        f"{name} has path length constraint {bc.path_length}: it may certify "
                        "professionals only, not another CA"
                    )
                raise IssuanceRefusedError(
                    f"{name}, {depth} level(s) above, has path length constraint "
                    f"{bc.path_length}: no CA may be certified this far below it"
                )

    def _check_ca_name(self, subject: x509.Name, now: dt.datetime) -> None:
        """Two live CAs with one name would publish CRLs under the same issuer name."""
        for cert in [self.certificate, *self.chain]:
            if cert.subject == subject:
                raise IssuanceRefusedError(
                    f"the CA name {subject.rfc4514_string()!r} is that of {_cn(cert)} itself"
                )
        wanted = subject.rfc4514_string()
        for r in self.store.records(status="valid"):
            if r.purpose == "ca" and r.subject == wanted and r.not_after > now:
                raise IssuanceRefusedError(
                    f"a CA named {wanted!r} is already certified by {self.config.name} "
                    f"(certificate {format_serial(r.serial)}, until {r.not_after:%Y-%m-%d}); "
                    "choose another name, or give --rollover for a new key of that CA"
                )

    def _issuer_extensions(self, builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
            critical=False,
        ).add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(self.config.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        access = []
        if self.config.aia_url:
            access.append(
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(self.config.aia_url),
                )
            )
        if self.config.ocsp_url:
            access.append(
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(self.config.ocsp_url),
                )
            )
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        return builder

    def certify_ca(
        self,
        public_key: PublicKey,
        subject: x509.Name,
        *,
        days: int = 10 * 365,
        now: dt.datetime | None = None,
        rollover: bool = False,
    ) -> x509.Certificate:
        """Sign a subordinate (operator) CA certificate; path length 0: it signs only people.

        Refused: under a path length constraint that forbids it, for a key this CA already
        certified, or with the name of a CA it already certified (unless ``rollover``: a new
        key for the same CA).
        """
        check_days("CA validity (--days)", days)
        signer = self.require_signer()
        now = self._now(now)
        self._check_ca_valid(now)
        self._check_path_length()
        public_key = check_public_key(public_key, "CA key")
        self._check_key_unused(public_key, "ca", None)
        if not rollover:
            self._check_ca_name(subject, now)
        builder = _ca_builder(
            subject, self.certificate.subject, public_key, now, days, path_length=0
        )
        builder = self._issuer_extensions(builder)
        cert = sign_certificate(_clip(builder, now, days, self.certificate), signer)
        self.store.record(cert, "ca", None, None)
        return cert

    def issue(
        self,
        public_key: object,
        identity: ProfessionalIdentity,
        purpose: Purpose | str,
        *,
        days: int | None = None,
        now: dt.datetime | None = None,
        capabilities: Capabilities | None = None,
        reassign_address: bool = False,
    ) -> x509.Certificate:
        """Issue a professional's signature or encryption certificate for ``public_key``.

        ``capabilities`` (encryption certificates) puts an RFC 4262 SMIMECapabilities extension
        in it, so that a first correspondent already knows what the card can decrypt.

        Refused (:class:`IssuanceRefusedError`): a key already certified by this CA, except a
        renewal (same key, same identifier, address and purpose); an address another
        professional identifier holds a live certificate for, unless ``reassign_address``.
        """
        purpose = Purpose.parse(purpose)
        key = check_public_key(public_key, "subject key")
        if days is not None:
            check_days("certificate validity (--days)", days)
        signer = self.require_signer()
        now = self._now(now)
        self._check_ca_valid(now)
        self._check_key_unused(key, purpose.value, identity)
        if not reassign_address:
            self._check_address(identity, now)
        start, end = self.config.validity.window(
            purpose, now, self.certificate.not_valid_after_utc, days
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(identity.to_name())
            .issuer_name(self.certificate.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage_for(purpose, key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([EMAIL_PROTECTION]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(identity.email)]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        )
        if capabilities is not None and purpose is Purpose.ENCRYPTION:
            builder = builder.add_extension(capabilities.to_extension(), critical=False)
        cert = sign_certificate(self._issuer_extensions(builder), signer)
        self.store.record(cert, purpose.value, identity.email, identity.professional_id)
        for listener in self.listeners:
            listener.issued(cert, identity, purpose.value)
        return cert

    def issue_from_csr(
        self,
        csr: x509.CertificateSigningRequest | bytes,
        identity: ProfessionalIdentity,
        purpose: Purpose | str,
        *,
        days: int | None = None,
        now: dt.datetime | None = None,
        reassign_address: bool = False,
    ) -> x509.Certificate:
        if isinstance(csr, bytes):
            csr = load_csr(csr)
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise CSRError("the request's public key cannot be read") from None
        return self.issue(
            public_key, identity, purpose, days=days, now=now, reassign_address=reassign_address
        )

    # -- revocation --------------------------------------------------------------------------------

    def revoke(
        self,
        serial: int,
        reason: str = "unspecified",
        *,
        now: dt.datetime | None = None,
        actor: str | None = None,
    ) -> x509.CertificateRevocationList:
        """Revoke ``serial`` and publish a new CRL at once (returned).

        A ``certificateHold`` can later be made final (another reason) or released
        (:meth:`release`); any other reason is final. ``actor`` (who ran it) goes to the
        index's history.
        """
        if reason not in REASONS:
            raise UsageError(f"unknown revocation reason {reason!r} (one of {', '.join(REASONS)})")
        self.require_signer()
        now = self._now(now).replace(microsecond=0)
        self.store.mark_revoked(serial, now, reason, actor=actor)
        crl = self.crl(now=now)
        if self.listeners:
            cert = self.issued_certificate(serial)
            for listener in self.listeners:
                listener.revoked(cert, reason)
        return crl

    def release(
        self, serial: int, *, now: dt.datetime | None = None, actor: str | None = None
    ) -> x509.CertificateRevocationList:
        """Take ``serial`` off hold (a lost card found again) and publish a new CRL at once.

        Only a certificate whose current status is ``certificateHold`` can be released; any
        other reason is final (:class:`UsageError` naming it). The new complete CRL simply no
        longer lists it (RFC 5280 5.3.1: removeFromCRL is for delta CRLs, which we do not
        issue). The index records the release (status valid again; time and ``actor`` in its
        history). Listeners are then told ``released(cert)`` if they have such a method,
        else ``issued(cert, identity, purpose)`` again (the certificate is back in use, so a
        directory publishes it again); CA certificates are not announced, as at issuance.
        """
        self.require_signer()
        now = self._now(now).replace(microsecond=0)
        record = self.store.mark_released(serial, now, actor=actor)
        crl = self.crl(now=now)
        if self.listeners and record.purpose != "ca":
            cert = self.issued_certificate(serial)
            for listener in self.listeners:
                released = getattr(listener, "released", None)
                if callable(released):
                    released(cert)
                else:
                    identity = ProfessionalIdentity.from_certificate(cert)
                    listener.issued(cert, identity, record.purpose)
        return crl

    def crl(self, *, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Issue (and save) a complete CRL listing every revoked certificate."""
        signer = self.require_signer()
        now = self._now(now).replace(microsecond=0)
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=self.config.validity.crl_days))
            .add_extension(x509.CRLNumber(self.store.next_crl_number()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
                critical=False,
            )
        )
        for record in self.store.records(status="revoked"):
            assert record.revocation_time is not None and record.reason is not None
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(record.serial)
                .revocation_date(record.revocation_time)
            )
            if record.reason != "unspecified":
                entry = entry.add_extension(x509.CRLReason(REASONS[record.reason]), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = sign_crl(builder, signer)
        self.store.save_crl(crl)
        return crl

    # -- reading -----------------------------------------------------------------------------------

    def records(self, *, status: str | None = None) -> list[IssuedRecord]:
        return self.store.records(status=status)

    def history(self, serial: int | None = None) -> list[IndexEvent]:
        """Revocations and releases recorded in the index (who and when), oldest first."""
        return self.store.history(serial)

    def issued_certificate(self, serial: int) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.store.certificate_der(serial))


# -- helpers ---------------------------------------------------------------------------------------


def _signer_for(
    key: CAPrivateKey | None, signer: CASigner | None
) -> tuple[CASigner, CAPrivateKey | None]:
    if (key is None) == (signer is None):
        raise UsageError("give exactly one of a CA key or an external signer")
    if key is not None:
        return SoftwareCASigner(key), key
    assert signer is not None
    return signer, None


def _cn(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else cert.subject.rfc4514_string()


def _signer_hash(key: CAPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _same_key(a: PublicKey, b: object) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if not isinstance(b, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: PublicKey,
    now: dt.datetime,
    days: int,
    path_length: int | None,
) -> x509.CertificateBuilder:
    start = now.replace(microsecond=0) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _clip(
    builder: x509.CertificateBuilder, now: dt.datetime, days: int, issuer: x509.Certificate
) -> x509.CertificateBuilder:
    """A subordinate never outlives its issuer."""
    end = now.replace(microsecond=0) - dt.timedelta(minutes=5) + dt.timedelta(days=days)
    if end > issuer.not_valid_after_utc:
        raise UsageError(
            "the subordinate CA would outlive its issuer "
            f"(ends {issuer.not_valid_after_utc:%Y-%m-%d})"
        )
    return builder


__all__ = [
    "KEY_KINDS",
    "REASONS",
    "CertificateAuthority",
    "ProfessionalIdentity",
    "Purpose",
    "ValidityPolicy",
    "generate_ca_key",
    "load_csr",
]
