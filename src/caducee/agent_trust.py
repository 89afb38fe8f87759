"""What the agent needs from directories and the PKI, as two small protocols, plus adapters.

The agent asks a :class:`CertificateFinder` for a recipient's candidate encryption certificates
and a :class:`SignerValidator` whether a certificate is trusted for a purpose, at a moment, for an
address. :class:`DirectoryFinder` adapts ``caducee.directory`` (federated directories plus a
local address book); :class:`PkiValidator` adapts ``caducee.pki.validate_certificate`` (path to
the trust anchors, revocation by CRL, key usage, e-mail).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from caducee.errors import CaduceeError, DirectoryError

__all__ = [
    "CertificateFinder",
    "DirectoryFinder",
    "PkiValidator",
    "SignerValidator",
    "StaticFinder",
    "TrustVerdict",
    "common_name",
]

Purpose = Literal["signature", "encryption"]


@dataclasses.dataclass(frozen=True)
class TrustVerdict:
    """A certificate found trustworthy, and who vouches for it (for the reader, in words)."""

    certificate: x509.Certificate
    issuer: str  # e.g. "Operator B CA": the CA that checked the identity


class CertificateFinder(Protocol):
    def find_encryption_certificates(self, email: str) -> list[x509.Certificate]:
        """Candidate (not yet validated) encryption certificates for ``email``; may be empty.

        Raise ``DirectoryError`` only when no directory could be asked at all.
        """
        ...

    def find_signer_certificates(self, email: str) -> list[x509.Certificate]:
        """Every certificate known for ``email`` (any purpose): the candidates for a signature
        whose certificate the message left out. Never raises for a directory outage."""
        ...


class SignerValidator(Protocol):
    def validate(
        self,
        cert: x509.Certificate,
        *,
        purpose: Purpose,
        at: dt.datetime,
        email: str | None,
        at_signing_time: bool = False,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> TrustVerdict:
        """Raise ``TrustError`` (one line: why) unless ``cert`` is trusted for this use;
        ``intermediates`` (those a signed message carries) only help build the path."""
        ...


def common_name(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def _is_encryption(cert: x509.Certificate) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        return False
    return bool(ku.key_encipherment or ku.key_agreement)


def _emails(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = [str(v).lower() for v in san.get_values_for_type(x509.RFC822Name)]
    except (x509.ExtensionNotFound, ValueError):
        found = []
    if not found:
        found = [
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        ]
    return found


class StaticFinder:
    """A local address book: certificates given explicitly, matched by their e-mail address."""

    def __init__(self, certificates: Iterable[x509.Certificate] = ()) -> None:
        self._certs = list(certificates)

    def add(self, cert: x509.Certificate) -> None:
        self._certs.append(cert)

    def find_encryption_certificates(self, email: str) -> list[x509.Certificate]:
        wanted = email.strip().lower()
        return [c for c in self._certs if wanted in _emails(c) and _is_encryption(c)]

    def find_signer_certificates(self, email: str) -> list[x509.Certificate]:
        wanted = email.strip().lower()
        return [c for c in self._certs if wanted in _emails(c)]


class DirectoryFinder:
    """Federated directories first, then the local address book; directory outages tolerated
    while the address book still answers."""

    def __init__(self, directory: object | None, address_book: StaticFinder | None = None) -> None:
        self._directory = directory
        self._book = address_book or StaticFinder()

    def _entries(self, email: str) -> list[Any]:
        """The directories' entries for exactly this address ([] without a directory)."""
        if self._directory is None:
            return []
        result = self._directory.lookup(email=email)  # type: ignore[attr-defined]
        wanted = email.strip().lower()
        return [entry for entry in result.entries if entry.email == wanted]

    def find_encryption_certificates(self, email: str) -> list[x509.Certificate]:
        found = list(self._book.find_encryption_certificates(email))
        try:
            entries = self._entries(email)
        except DirectoryError:
            if found:
                return found
            raise
        return found + [c for entry in entries for c in entry.encryption_certificates]

    def find_signer_certificates(self, email: str) -> list[x509.Certificate]:
        found = list(self._book.find_signer_certificates(email))
        try:
            entries = self._entries(email)
        except DirectoryError:  # a signature left without its certificate stays unchecked
            return found
        return found + [c for entry in entries for c in entry.certificates]


class PkiValidator:
    """``caducee.pki.validate_certificate`` with a trust store and a CRL source."""

    def __init__(self, trust: object, crls: object, intermediates: Sequence[x509.Certificate] = ()):
        self._trust = trust
        self._crls = crls
        self._intermediates = tuple(intermediates)

    def validate(
        self,
        cert: x509.Certificate,
        *,
        purpose: Purpose,
        at: dt.datetime,
        email: str | None,
        at_signing_time: bool = False,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> TrustVerdict:
        from caducee.pki.validate import validate_certificate

        try:
            result = validate_certificate(
                cert,
                purpose=purpose,
                trust=self._trust,  # type: ignore[arg-type]
                crls=self._crls,  # type: ignore[arg-type]
                at=at,
                email=email,
                intermediates=(*self._intermediates, *intermediates),
                at_signing_time=at_signing_time,
            )
        except CaduceeError:
            raise
        issuer = result.path[1] if len(result.path) > 1 else result.path[0]
        return TrustVerdict(cert, common_name(issuer.subject))
