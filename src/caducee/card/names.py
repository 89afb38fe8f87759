"""Certificate names as a person reads them, for ``caducee card status`` and card messages.

cryptography's RFC 4514 rendering knows only the short names of RFC 4514 itself (CN, O, C...);
the attributes of a professional's certificate - serialNumber (the professional identifier),
givenName, surname, title - come out as dotted OIDs ("2.5.4.42=Alice"). This table names them.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

#: Attribute names for the OIDs cryptography leaves dotted (RFC 4519 / RFC 5280 names).
READABLE_ATTRIBUTES: dict[ObjectIdentifier, str] = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.SURNAME: "surname",
    NameOID.TITLE: "title",
    NameOID.INITIALS: "initials",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.POSTAL_CODE: "postalCode",
}


def readable_name(name: x509.Name) -> str:
    """``name`` as an RFC 4514 string with readable attribute names instead of dotted OIDs."""
    return name.rfc4514_string(READABLE_ATTRIBUTES)


__all__ = ["READABLE_ATTRIBUTES", "readable_name"]
