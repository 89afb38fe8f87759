"""The RFC 5280 rules a CRL must meet to decide a certificate's status, checked by caducee itself.

pyhanko-certvalidator applies these rules when the path ends at a self-signed root. It cannot when
the trust anchor is a CA certificate that is not self-signed (an operator CA trusted directly,
without its national root): it looks for the CRL issuer's own path *above* the anchor and gives up
("the chain of trust for the CRL issuer ... could not be determined"), although the CRL issuer is
the anchor itself. For such paths :mod:`caducee.pki.validate` asks pyhanko for the path only and
checks revocation here, with the same strictness: the issuer may sign CRLs, the CRL is current at
the moment checked, covers this kind of certificate (issuing distribution point), is a complete
CRL (not a delta) and carries no critical extension we do not understand. The CRL's issuer name
and signature, and its entry for the certificate, are checked by the caller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from caducee.pki.crl import ParsedCrl, distribution_points
from caducee.pki.errors import RevocationUnavailableError

__all__ = ["check_crl_applies", "check_crl_signer", "is_ca_certificate"]

#: Same leeway as pyhanko-certvalidator's default (clock skew between CA and workstation).
_TOLERANCE = dt.timedelta(seconds=1)
#: A CRL without nextUpdate is taken as valid this long after thisUpdate (pyhanko's fallback).
_NO_NEXT_UPDATE = dt.timedelta(minutes=30)
#: Extensions a complete CRL may carry that do not change its meaning for us.
_UNDERSTOOD = {
    ExtensionOID.CRL_NUMBER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT,
    ExtensionOID.FRESHEST_CRL,
}
#: Entry extensions understood: the reason, the invalidity date, a hold instruction.
_ENTRY_UNDERSTOOD = {
    CRLEntryExtensionOID.CRL_REASON,
    CRLEntryExtensionOID.INVALIDITY_DATE,
    x509.ObjectIdentifier("2.5.29.23"),  # holdInstructionCode
}


def is_ca_certificate(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def check_crl_signer(issuer: x509.Certificate, subject: str, issuer_name: str) -> None:
    """The issuer's KeyUsage, when present, must allow cRLSign."""
    try:
        ku = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except ValueError:
        ku = None
    if ku is None or not ku.crl_sign:
        raise RevocationUnavailableError(
            f"revocation status of {subject} could not be established: its issuer "
            f"{issuer_name} is not allowed to sign CRLs (KeyUsage without cRLSign)",
            subject=subject,
        )


def check_crl_applies(
    parsed: ParsedCrl,
    cert: x509.Certificate,
    subject: str,
    at: dt.datetime,
    retroactive: bool,
) -> None:
    """Raise :class:`RevocationUnavailableError` unless ``parsed`` decides for ``cert`` at ``at``.

    ``retroactive``: a CRL issued after ``at`` is usable (validation at a signing time).
    """

    def refuse(why: str) -> RevocationUnavailableError:
        return RevocationUnavailableError(
            f"revocation status of {subject} could not be established: the CRL from "
            f"{parsed.source} {why}",
            subject=subject,
            url=parsed.source,
        )

    crl = parsed.crl
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc or this_update + _NO_NEXT_UPDATE
    if at - _TOLERANCE > next_update:
        raise RevocationUnavailableError(
            f"the CRLs for {subject}'s path are not current at {at:%Y-%m-%d %H:%M} UTC "
            "(fetch a newer CRL)",
            subject=subject,
        )
    if not retroactive and at + _TOLERANCE < this_update:
        raise refuse(f"was issued after {at:%Y-%m-%d %H:%M} UTC, the moment checked")
    try:
        extensions = list(crl.extensions)
        entry = parsed.entry(cert.serial_number)
        entry_extensions = list(entry.extensions) if entry is not None else []
    except ValueError:
        raise refuse("has a malformed extension") from None
    for ext in extensions:
        if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise refuse("is a delta CRL; a complete CRL is needed")
        if ext.critical and ext.oid not in _UNDERSTOOD:
            raise refuse(f"has an unsupported critical extension ({ext.oid.dotted_string})")
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            _check_scope(ext.value, cert, refuse)
    for ext in entry_extensions:
        if ext.critical and ext.oid not in _ENTRY_UNDERSTOOD:
            raise refuse(f"has an unsupported critical entry extension ({ext.oid.dotted_string})")


def _check_scope(
    idp: x509.IssuingDistributionPoint,
    cert: x509.Certificate,
    refuse: Callable[[str], RevocationUnavailableError],
) -> None:
    """RFC 5280 6.3.3 (b): the CRL must cover this certificate, for every reason, directly."""
    is_ca = is_ca_certificate(cert)
    if idp.only_contains_user_certs and is_ca:
        raise refuse("covers only end-entity certificates")
    if idp.only_contains_ca_certs and not is_ca:
        raise refuse("covers only CA certificates")
    if idp.only_contains_attribute_certs:
        raise refuse("covers only attribute certificates")
    if idp.only_some_reasons:
        raise refuse("covers only some revocation reasons; a complete CRL is needed")
    if idp.indirect_crl:
        raise refuse("is an indirect CRL (not supported)")
    names = [n.value for n in idp.full_name or [] if isinstance(n, x509.UniformResourceIdentifier)]
    if names and not set(names) & set(distribution_points(cert)):
        raise refuse("is for another distribution point than the certificate's")
