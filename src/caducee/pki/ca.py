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
from caducee.pki.errors import CSRError
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
from caducee.pki.store import CAConfig, CAStore, IssuedRecord

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
    (the certificate stays issued/revoked: publication can be retried).
    """

    def issued(
        self, cert: x509.Certificate, identity: ProfessionalIdentity, purpose: str
    ) -> None: ...

    def revoked(self, cert: x509.Certificate, reason: str) -> None: ...


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
    attrs = []
    if country:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country.upper()))
    if organisation:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    return x509.Name(attrs)


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
        signer, key = _signer_for(key, signer)
        now = now or _utcnow()
        subject = ca_name(config.name, organisation, country)
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
        """Create an operator CA certified by ``parent`` (the national root)."""
        signer, key = _signer_for(key, signer)
        public = check_public_key(signer.public_key(), "CA key")
        cert = parent.certify_ca(
            public, ca_name(config.name, organisation, country), days=days, now=now
        )
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
    ) -> x509.Certificate:
        """Sign an operator CA's request (subject as requested: the root operator reviews it)."""
        if isinstance(csr, bytes):
            csr = load_csr(csr)
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise CSRError("the request's public key cannot be read") from None
        return self.certify_ca(
            check_public_key(public_key, "CA key"), csr.subject, days=days, now=now
        )

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
    ) -> x509.Certificate:
        """Sign a subordinate (operator) CA certificate; path length 0: it signs only people."""
        signer = self.require_signer()
        now = self._now(now)
        self._check_ca_valid(now)
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
    ) -> x509.Certificate:
        """Issue a professional's signature or encryption certificate for ``public_key``.

        ``capabilities`` (encryption certificates) puts an RFC 4262 SMIMECapabilities extension
        in it, so that a first correspondent already knows what the card can decrypt.
        """
        purpose = Purpose.parse(purpose)
        key = check_public_key(public_key, "subject key")
        signer = self.require_signer()
        now = self._now(now)
        self._check_ca_valid(now)
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
    ) -> x509.Certificate:
        if isinstance(csr, bytes):
            csr = load_csr(csr)
        try:
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise CSRError("the request's public key cannot be read") from None
        return self.issue(public_key, identity, purpose, days=days, now=now)

    # -- revocation --------------------------------------------------------------------------------

    def revoke(
        self, serial: int, reason: str = "unspecified", *, now: dt.datetime | None = None
    ) -> x509.CertificateRevocationList:
        """Revoke ``serial`` and publish a new CRL at once (returned)."""
        if reason not in REASONS:
            raise UsageError(f"unknown revocation reason {reason!r} (one of {', '.join(REASONS)})")
        self.require_signer()
        now = self._now(now).replace(microsecond=0)
        self.store.mark_revoked(serial, now, reason)
        crl = self.crl(now=now)
        if self.listeners:
            cert = self.issued_certificate(serial)
            for listener in self.listeners:
                listener.revoked(cert, reason)
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
