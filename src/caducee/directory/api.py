"""The directory contract: entries, queries, results and errors shared by every backend.

A directory returns *candidates*. A certificate found here is used only after path validation
(the caller's job, see ``caducee.pki``): backends never decide trust. What they do guarantee is
that a lookup never crashes on bad data: an unreadable certificate or entry is skipped and
described in :attr:`LookupResult.problems`.
"""

from __future__ import annotations

import abc
import dataclasses
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from caducee.errors import DirectoryError, UsageError
from caducee.serials import format_serial

__all__ = [
    "ENCRYPTION",
    "SIGNATURE",
    "Directory",
    "DirectoryAccessError",
    "DirectoryEntry",
    "DirectoryUnavailableError",
    "EntryNotFoundError",
    "InvalidEntryError",
    "LookupResult",
    "MalformedCertificateError",
    "Query",
    "ReadOnlyDirectoryError",
    "certificate_emails",
    "certificate_purposes",
    "decode_certificate",
    "entry_from_certificate",
    "fingerprint",
    "fold",
]

SIGNATURE = "signature"
ENCRYPTION = "encryption"

#: RPPS-style national professional identifier: 11 digits.
PROFESSIONAL_ID = re.compile(r"[0-9]{11}")
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}")
MAX_FIELD = 256


# --- errors ------------------------------------------------------------------------------------


class DirectoryUnavailableError(DirectoryError):
    """The directory could not be reached or did not answer within its timeout."""


class DirectoryAccessError(DirectoryError):
    """The directory refused our credentials or the operation for lack of rights."""


class ReadOnlyDirectoryError(DirectoryAccessError):
    """The directory refuses changes (public read-only endpoint, missing credentials)."""


class EntryNotFoundError(DirectoryError):
    """No entry matches what was asked."""


class InvalidEntryError(DirectoryError):
    """An entry or certificate given to publish is unusable (no e-mail, CA certificate...)."""


class MalformedCertificateError(DirectoryError):
    """Bytes stored as a certificate do not parse as X.509. ``where`` names the entry."""

    def __init__(self, message: str, where: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


def fold(text: str) -> str:
    """The form names are compared in: NFC, then Unicode case folding (all sigmas agree).

    SQLite's NOCASE and LOWER() fold ASCII only, so backends store and compare this form.
    """
    return unicodedata.normalize("NFC", text).casefold()


# --- certificates ------------------------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint in lower-case hex: the identity of a certificate in every backend."""
    return cert.fingerprint(hashes.SHA256()).hex()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def decode_certificate(data: bytes, where: str) -> x509.Certificate:
    """Parse DER and touch the fields we rely on, so a broken one fails here and not later."""
    try:
        cert = x509.load_der_x509_certificate(data)
        cert.subject.rfc4514_string()
        cert.public_key()
        certificate_purposes(cert)
        certificate_emails(cert)
    except MalformedCertificateError:
        raise
    except Exception as exc:  # cryptography raises ValueError and friends; none may escape
        raise MalformedCertificateError(
            f"unreadable certificate ({type(exc).__name__}: {str(exc)[:120]})", where
        ) from None
    return cert


def certificate_purposes(cert: x509.Certificate) -> frozenset[str]:
    """{"signature"}, {"encryption"} or both, from the key usage (both when it is absent)."""
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        return frozenset({SIGNATURE, ENCRYPTION})
    assert isinstance(ku, x509.KeyUsage)
    purposes = set()
    if ku.digital_signature or ku.content_commitment:
        purposes.add(SIGNATURE)
    if ku.key_encipherment or ku.key_agreement:
        purposes.add(ENCRYPTION)
    return frozenset(purposes)


def certificate_emails(cert: x509.Certificate) -> tuple[str, ...]:
    """E-mail addresses a certificate is bound to (SAN rfc822Name, else subject emailAddress)."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        assert isinstance(san, x509.SubjectAlternativeName)
        emails = [e.lower() for e in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        emails = []
    if not emails:
        emails = [
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        ]
    return tuple(emails)


def _subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def refuse_ca(cert: x509.Certificate) -> None:
    """A directory entry holds end-entity certificates only."""
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        is_ca = isinstance(bc, x509.BasicConstraints) and bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise InvalidEntryError(
            f"certificate {format_serial(cert.serial_number)} is a CA certificate, "
            "not a professional's"
        )


# --- entries -----------------------------------------------------------------------------------


def _check_text(label: str, value: str) -> str:
    value = value.strip()
    if len(value) > MAX_FIELD or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidEntryError(f"invalid {label}: control characters or longer than {MAX_FIELD}")
    return value


@dataclasses.dataclass(frozen=True)
class DirectoryEntry:
    """One professional as published by an operator, with all of their certificates.

    ``source`` names the directory that returned the entry (filled in by lookups).
    """

    email: str
    common_name: str
    surname: str = ""
    given_name: str = ""
    profession: str = ""
    organisation: str = ""
    professional_id: str = ""
    certificates: tuple[x509.Certificate, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        email = self.email.strip().lower()
        if not _EMAIL.fullmatch(email):
            raise InvalidEntryError(f"invalid e-mail address {self.email[:80]!r}")
        object.__setattr__(self, "email", email)
        for field in ("common_name", "surname", "given_name", "profession", "organisation"):
            object.__setattr__(self, field, _check_text(field, getattr(self, field)))
        if not self.common_name:
            raise InvalidEntryError(f"entry {email}: a common name is required")
        if not self.surname:
            object.__setattr__(self, "surname", self.common_name.split()[-1])
        if self.professional_id and not PROFESSIONAL_ID.fullmatch(self.professional_id):
            raise InvalidEntryError(
                f"entry {email}: professional identifier must be 11 digits (RPPS-style), "
                f"got {self.professional_id[:20]!r}"
            )
        unique: dict[str, x509.Certificate] = {}
        for cert in self.certificates:
            unique.setdefault(fingerprint(cert), cert)
        object.__setattr__(self, "certificates", tuple(unique.values()))

    @property
    def signature_certificates(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for c in self.certificates if SIGNATURE in certificate_purposes(c))

    @property
    def encryption_certificates(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for c in self.certificates if ENCRYPTION in certificate_purposes(c))

    def replace(self, **changes: object) -> DirectoryEntry:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def check_certificates(self) -> None:
        """Refuse what must never be published: CA certificates, another person's certificate."""
        for cert in self.certificates:
            refuse_ca(cert)
            serial = f"{format_serial(cert.serial_number)}"
            if self.email not in certificate_emails(cert):
                raise InvalidEntryError(
                    f"certificate {serial} is not bound to {self.email} "
                    f"(it names {', '.join(certificate_emails(cert)) or 'no e-mail'})"
                )
            if not certificate_purposes(cert):
                raise InvalidEntryError(
                    f"certificate {serial} allows neither signature nor encryption"
                )


def entry_from_certificate(
    cert: x509.Certificate,
    *,
    email: str | None = None,
    profession: str | None = None,
    organisation: str | None = None,
    professional_id: str | None = None,
    extra_certificates: Iterable[x509.Certificate] = (),
) -> DirectoryEntry:
    """Build an entry from a certificate's subject; keyword arguments override the subject.

    Subject mapping: CN, surname, givenName, O, title (profession) and serialNumber (the
    professional identifier, when it is 11 digits).
    """
    refuse_ca(cert)
    emails = certificate_emails(cert)
    if email is None:
        if not emails:
            raise InvalidEntryError(
                f"certificate {format_serial(cert.serial_number)} names no e-mail address; give one"
            )
        email = emails[0]
    serial_attr = _subject(cert, NameOID.SERIAL_NUMBER)
    pid = professional_id
    if pid is None:
        pid = serial_attr if PROFESSIONAL_ID.fullmatch(serial_attr) else ""
    cn = _subject(cert, NameOID.COMMON_NAME) or email.split("@")[0]
    entry = DirectoryEntry(
        email=email,
        common_name=cn,
        surname=_subject(cert, NameOID.SURNAME),
        given_name=_subject(cert, NameOID.GIVEN_NAME),
        profession=profession if profession is not None else _subject(cert, NameOID.TITLE),
        organisation=(
            organisation if organisation is not None else _subject(cert, NameOID.ORGANIZATION_NAME)
        ),
        professional_id=pid,
        certificates=(cert, *extra_certificates),
    )
    entry.check_certificates()
    return entry


# --- queries and results -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Query:
    """What to look for; every given criterion must match (AND).

    ``email`` and ``professional_id`` match exactly; ``name`` matches the common name, the
    surname or the given name; ``name`` and ``organisation`` ignore case. No wildcard exists, on
    purpose: a public directory must not be enumerable.
    """

    email: str | None = None
    name: str | None = None
    professional_id: str | None = None
    organisation: str | None = None

    def __post_init__(self) -> None:
        for field in ("email", "name", "professional_id", "organisation"):
            value = getattr(self, field)
            if value is None:
                continue
            value = value.strip()
            if not value or len(value) > MAX_FIELD or "\x00" in value:
                raise UsageError(f"invalid {field.replace('_', ' ')} in lookup: {value[:40]!r}")
            object.__setattr__(self, field, value.lower() if field == "email" else value)
        if not any(getattr(self, f) for f in ("email", "name", "professional_id", "organisation")):
            raise UsageError("a lookup needs an e-mail, name, professional id or organisation")

    def matches(self, entry: DirectoryEntry) -> bool:
        """Reference semantics, used by backends that filter in Python and by tests."""
        if self.email is not None and entry.email != self.email:
            return False
        if self.name is not None and fold(self.name) not in {
            fold(entry.common_name),
            fold(entry.surname),
            fold(entry.given_name),
        }:
            return False
        if self.professional_id is not None and entry.professional_id != self.professional_id:
            return False
        return self.organisation is None or fold(entry.organisation) == fold(self.organisation)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in dataclasses.asdict(self).items() if v is not None]
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class LookupResult:
    """Candidate entries (not yet validated) and what was skipped on the way, one line each."""

    entries: tuple[DirectoryEntry, ...] = ()
    problems: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)


# --- the backend contract ----------------------------------------------------------------------

_CertPredicate = Callable[[x509.Certificate], bool]


class Directory(abc.ABC):
    """A store of professionals' certificates. Backends: SQLite, LDAP, HTTP, federation."""

    #: a short label used in problems and results ("op1", "sqlite:/var/lib/...")
    name: str = "directory"
    #: at most this many entries per lookup (a lookup is a search, not a dump)
    max_results: int = 100

    def lookup(
        self,
        *,
        email: str | None = None,
        name: str | None = None,
        professional_id: str | None = None,
        organisation: str | None = None,
    ) -> LookupResult:
        """Find candidate entries; raises DirectoryError only when the directory itself fails."""
        return self.search(Query(email, name, professional_id, organisation))

    @abc.abstractmethod
    def search(self, query: Query) -> LookupResult:
        """Backend implementation of :meth:`lookup`."""

    def publish(
        self,
        item: DirectoryEntry | x509.Certificate,
        *,
        email: str | None = None,
        profession: str | None = None,
        organisation: str | None = None,
        professional_id: str | None = None,
    ) -> DirectoryEntry:
        """Publish an entry, or a certificate (its subject gives the entry; keywords win).

        Certificates are added to those already published for the same e-mail; the entry's
        attributes replace the stored ones. Returns the entry as now stored.
        """
        overrides = (email, profession, organisation, professional_id)
        if isinstance(item, x509.Certificate):
            entry = entry_from_certificate(
                item,
                email=email,
                profession=profession,
                organisation=organisation,
                professional_id=professional_id,
            )
        elif isinstance(item, DirectoryEntry):
            if any(v is not None for v in overrides):
                raise UsageError("attributes are given with a certificate, not with an entry")
            entry = item
            entry.check_certificates()
        else:
            raise UsageError(f"cannot publish a {type(item).__name__}")
        return self._publish(entry)

    @abc.abstractmethod
    def _publish(self, entry: DirectoryEntry) -> DirectoryEntry:
        """Store ``entry`` (already checked), merging certificates."""

    def withdraw(
        self,
        certificate: x509.Certificate | None = None,
        *,
        serial: int | None = None,
        email: str | None = None,
    ) -> int:
        """Remove a certificate (by value or serial number) or a whole entry (by e-mail).

        Returns the number of certificates removed (0 when nothing matched: revoking a
        certificate that was never published is not an error). An entry left without
        certificates is removed.
        """
        given = [x for x in (certificate, serial, email) if x is not None]
        if len(given) != 1:
            raise UsageError("withdraw needs exactly one of: certificate, serial, e-mail")
        if email is not None:
            return self._withdraw_email(email.strip().lower())
        if certificate is not None:
            return self._withdraw_certificates(
                lambda c: fingerprint(c) == fingerprint(certificate), certificate, None
            )
        assert serial is not None
        return self._withdraw_certificates(lambda c: c.serial_number == serial, None, serial)

    @abc.abstractmethod
    def _withdraw_email(self, email: str) -> int: ...

    @abc.abstractmethod
    def _withdraw_certificates(
        self,
        predicate: _CertPredicate,
        certificate: x509.Certificate | None,
        serial: int | None,
    ) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_all(blobs: Sequence[bytes], where: str, problems: list[str]) -> list[x509.Certificate]:
    """Decode every blob, skipping (and reporting) those that do not parse."""
    certs = []
    for i, blob in enumerate(blobs):
        try:
            certs.append(decode_certificate(blob, f"{where} certificate #{i + 1}"))
        except MalformedCertificateError as exc:
            problems.append(str(exc))
    return certs


def build_entry(
    fields: dict[str, str],
    certificates: Sequence[x509.Certificate],
    where: str,
    problems: list[str],
    source: str,
) -> DirectoryEntry | None:
    """Assemble an entry read from storage; None (and a problem) when it is unusable."""
    email = fields.get("email", "").strip().lower()
    kept = []
    for cert in certificates:
        if email and email not in certificate_emails(cert):
            problems.append(
                f"{where}: certificate {format_serial(cert.serial_number)} is bound to "
                f"{', '.join(certificate_emails(cert)) or 'no e-mail'}, not {email}; skipped"
            )
            continue
        kept.append(cert)
    try:
        entry = DirectoryEntry(certificates=tuple(kept), source=source, **fields)
    except (InvalidEntryError, TypeError) as exc:
        problems.append(f"{where}: malformed entry skipped ({exc})")
        return None
    if not entry.certificates:
        problems.append(f"{where}: entry {entry.email} has no usable certificate; skipped")
        return None
    return entry
