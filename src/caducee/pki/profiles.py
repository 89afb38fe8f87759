"""Certificate profiles: who a professional is in a certificate, and what each certificate may do.

A professional holds two certificates: a *signature* certificate (digitalSignature +
nonRepudiation) and an *encryption* certificate (keyEncipherment for RSA, keyAgreement for EC),
both with the emailProtection EKU. Separating them lets an operator escrow encryption keys (so a
lost card does not lose mail) without ever being able to sign in the professional's name.

The subject carries (see docs/pki.md for the reasoning):

- ``CN`` "Given Surname", ``givenName``, ``surname``;
- ``title`` — the profession ("Médecin", "Infirmier"...), X.520 title;
- ``O`` — the organisation (practice, hospital), optionally ``C``;
- ``serialNumber`` (2.5.4.5) — the national professional identifier (RPPS-style, 11 digits).
  X.520 defines serialNumber as the identifier of the named subject; every toolkit and LDAP
  schema (core.schema) knows it, unlike a private OID.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caducee.errors import UsageError
from caducee.pki.errors import KeyPolicyError
from caducee.pki.names import (
    UB_COMMON_NAME,
    UB_EMAIL,
    UB_NAME,
    UB_ORGANIZATION_NAME,
    UB_TITLE,
    bad_character,
    check_country,
    check_days,
    check_text,
)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: Curves the CA accepts in requests (and for its own key).
ALLOWED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048
PROFESSIONAL_ID_DIGITS = 11


class Purpose(enum.Enum):
    SIGNATURE = "signature"
    ENCRYPTION = "encryption"

    @classmethod
    def parse(cls, value: str | Purpose) -> Purpose:
        if isinstance(value, Purpose):
            return value
        try:
            return cls(value.lower())
        except ValueError:
            raise UsageError(
                f"unknown certificate purpose {value!r} (signature or encryption)"
            ) from None


@dataclasses.dataclass(frozen=True)
class ProfessionalIdentity:
    """The identity a CA vouches for; the CA decides it, never the CSR's own subject."""

    given_name: str
    surname: str
    email: str
    professional_id: str
    profession: str | None = None
    organisation: str | None = None
    country: str | None = None

    def __post_init__(self) -> None:
        if not self.given_name.strip() or not self.surname.strip():
            raise UsageError("a professional identity needs a given name and a surname")
        check_text("given name", self.given_name, UB_NAME)
        check_text("surname", self.surname, UB_NAME)
        if len(self.common_name) > UB_COMMON_NAME:
            raise UsageError(
                f"common name {self.common_name[:40]!r}... (given name and surname) is "
                f"{len(self.common_name)} characters long; X.509 allows at most {UB_COMMON_NAME}"
            )
        if self.profession is not None:
            check_text("profession", self.profession, UB_TITLE)
        if self.organisation is not None:
            check_text("organisation", self.organisation, UB_ORGANIZATION_NAME)
        bad = bad_character(self.email)
        if bad is not None or any(c.isspace() for c in self.email):
            raise UsageError(f"e-mail address {self.email[:60]!r} contains spaces or controls")
        if len(self.email) > UB_EMAIL:
            raise UsageError(f"e-mail address is longer than {UB_EMAIL} characters")
        pid = self.professional_id
        if len(pid) != PROFESSIONAL_ID_DIGITS or not pid.isascii() or not pid.isdigit():
            raise UsageError(
                f"professional identifier {pid!r} must be exactly "
                f"{PROFESSIONAL_ID_DIGITS} digits (RPPS-style)"
            )
        local, sep, domain = self.email.partition("@")
        if (
            not sep
            or not local
            or "." not in domain
            or "@" in domain
            or domain.startswith(".")
            or domain.endswith(".")
            or not self.email.isascii()
        ):
            raise UsageError(f"{self.email!r} is not an ASCII e-mail address")
        if self.country is not None:
            check_country(self.country)

    @property
    def common_name(self) -> str:
        return f"{self.given_name} {self.surname}"

    def to_name(self) -> x509.Name:
        attrs = []
        if self.country:
            attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, self.country.upper()))
        if self.organisation:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organisation))
        if self.profession:
            attrs.append(x509.NameAttribute(NameOID.TITLE, self.profession))
        attrs += [
            x509.NameAttribute(NameOID.SURNAME, self.surname),
            x509.NameAttribute(NameOID.GIVEN_NAME, self.given_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, self.professional_id),
            x509.NameAttribute(NameOID.COMMON_NAME, self.common_name),
        ]
        return x509.Name(attrs)

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> ProfessionalIdentity:
        """Read back the identity from a certificate we issued (directory publication)."""

        def one(oid: x509.ObjectIdentifier) -> str | None:
            values = cert.subject.get_attributes_for_oid(oid)
            return str(values[0].value) if values else None

        emails = certificate_emails(cert)
        return cls(
            given_name=one(NameOID.GIVEN_NAME) or "",
            surname=one(NameOID.SURNAME) or "",
            email=emails[0] if emails else "",
            professional_id=one(NameOID.SERIAL_NUMBER) or "",
            profession=one(NameOID.TITLE),
            organisation=one(NameOID.ORGANIZATION_NAME),
            country=one(NameOID.COUNTRY_NAME),
        )


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """rfc822Name SAN entries, else the legacy subject emailAddress (RFC 8550 section 3)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        found = []
    except ValueError:  # a malformed extension: treat as no address
        found = []
    if not found:
        found = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    return found


def email_matches(cert_email: str, wanted: str) -> bool:
    """Compare addresses; domains are case-insensitive and so, in practice, are local parts."""
    return cert_email.strip().lower() == wanted.strip().lower()


def check_public_key(key: object, where: str = "public key") -> PublicKey:
    """Enforce the key policy: RSA >= 2048 bits (exponent 65537), EC on P-256 or P-384."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyPolicyError(
                f"{where}: RSA key of {key.key_size} bits refused (minimum {MIN_RSA_BITS})"
            )
        if key.public_numbers().e != 65537:
            raise KeyPolicyError(f"{where}: RSA public exponent must be 65537")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            raise KeyPolicyError(
                f"{where}: curve {key.curve.name} refused (P-256 or P-384 expected)"
            )
        return key
    raise KeyPolicyError(f"{where}: only RSA and EC keys are accepted")


def key_usage_for(purpose: Purpose, key: PublicKey) -> x509.KeyUsage:
    sign = purpose is Purpose.SIGNATURE
    is_ec = isinstance(key, ec.EllipticCurvePublicKey)
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=sign,
        key_encipherment=not sign and not is_ec,
        data_encipherment=False,
        key_agreement=not sign and is_ec,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

EMAIL_PROTECTION = ExtendedKeyUsageOID.EMAIL_PROTECTION


def required_key_usage(purpose: Purpose, key: PublicKey) -> list[str]:
    """Key-usage bits a certificate needs for ``purpose`` (names as in cryptography's KeyUsage).

    nonRepudiation is issued on our signature certificates but not required of others': plain
    S/MIME correspondents' signature certificates often lack it.
    """
    if purpose is Purpose.SIGNATURE:
        return ["digital_signature"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ["key_agreement"]
    return ["key_encipherment"]


@dataclasses.dataclass(frozen=True)
class ValidityPolicy:
    """How long certificates live; a certificate never outlives its CA."""

    signature_days: int = 3 * 365
    encryption_days: int = 3 * 365
    crl_days: int = 7

    def __post_init__(self) -> None:
        check_days("signature certificate validity (--sig-days)", self.signature_days)
        check_days("encryption certificate validity (--enc-days)", self.encryption_days)
        check_days("CRL lifetime (--crl-days)", self.crl_days)

    def days_for(self, purpose: Purpose) -> int:
        return self.signature_days if purpose is Purpose.SIGNATURE else self.encryption_days

    def window(
        self, purpose: Purpose, now: dt.datetime, ca_not_after: dt.datetime, days: int | None
    ) -> tuple[dt.datetime, dt.datetime]:
        if days is not None:
            check_days("certificate validity (--days)", days)
        start = now.replace(microsecond=0) - dt.timedelta(minutes=5)  # tolerate clock skew
        end = start + dt.timedelta(days=days if days is not None else self.days_for(purpose))
        return start, min(end, ca_not_after)
