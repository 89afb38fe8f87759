"""Why a certificate is not trusted: one :class:`~caducee.errors.TrustError` subclass per cause.

Each carries the structured facts a caller needs (revocation time and reason, expiry date, the
missing key usages...) and a one-line message naming the certificate, so the CLI can print it and
the agent can decide (e.g. "ask the colleague for a new certificate") without parsing text.
"""

from __future__ import annotations

import datetime as dt

from caducee.errors import PolicyError, TrustError, UsageError


class CertificateRevokedError(TrustError):
    """The certificate (or a CA above it) is on its issuer's CRL."""

    def __init__(
        self, subject: str, revocation_time: dt.datetime, reason: str, *, is_ee: bool = True
    ) -> None:
        self.subject = subject
        self.revocation_time = revocation_time
        self.reason = reason
        self.is_ee = is_ee
        what = "certificate" if is_ee else "CA certificate"
        super().__init__(
            f"{what} of {subject} was revoked on {revocation_time:%Y-%m-%d %H:%M:%S} UTC "
            f"(reason: {reason})"
        )


class ExpiredError(TrustError):
    """The certificate (or a CA above it) is outside its validity period at the checked time."""

    def __init__(
        self,
        subject: str,
        *,
        not_after: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        at: dt.datetime,
    ) -> None:
        self.subject = subject
        self.not_after = not_after
        self.not_before = not_before
        self.at = at
        if not_before is not None:
            detail = f"is not valid before {not_before:%Y-%m-%d %H:%M:%S} UTC"
        else:
            assert not_after is not None
            detail = f"expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
        super().__init__(f"certificate of {subject} {detail} (checked at {at:%Y-%m-%d %H:%M} UTC)")


class WrongUsageError(TrustError):
    """The certificate is not meant for what it is asked to do (signature vs encryption)."""

    def __init__(self, subject: str, purpose: str, missing: list[str]) -> None:
        self.subject = subject
        self.purpose = purpose
        self.missing = missing
        super().__init__(
            f"certificate of {subject} is not an {purpose} certificate "
            f"(missing: {', '.join(missing)})"
            if purpose == "encryption"
            else f"certificate of {subject} is not a {purpose} certificate "
            f"(missing: {', '.join(missing)})"
        )


class UnknownCAError(TrustError):
    """No path leads from the certificate to a trust anchor of this installation."""

    def __init__(self, subject: str, issuer: str) -> None:
        self.subject = subject
        self.issuer = issuer
        super().__init__(
            f"certificate of {subject} was issued by {issuer}, which is not a trusted CA "
            "(add its operator's trust bundle)"
        )


class EmailMismatchError(TrustError):
    """The certificate does not belong to the e-mail address it is used for."""

    def __init__(self, subject: str, email: str, found: list[str]) -> None:
        self.subject = subject
        self.email = email
        self.found = found
        super().__init__(
            f"certificate of {subject} is for {', '.join(found) or 'no e-mail address'}, "
            f"not {email}"
        )


class RevocationUnavailableError(TrustError):
    """The revocation status could not be established (no CRL, CRL unreachable or out of date)."""

    def __init__(self, message: str, *, subject: str | None = None, url: str | None = None):
        self.subject = subject
        self.url = url
        super().__init__(message)


class NoDistributionPointError(RevocationUnavailableError):
    """Policy: every non-anchor certificate must say where its CRL is; this one does not."""

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"certificate of {subject} has no CRL distribution point; its revocation status "
            "cannot be checked, so it is refused",
            subject=subject,
        )


class CrlSignatureError(RevocationUnavailableError):
    """A CRL failed its signature check (or was not signed by the certificate's issuer)."""


class InvalidCertificateError(TrustError):
    """The path exists but breaks a rule (bad signature, not a CA, weak algorithm...)."""


class CSRError(UsageError):
    """A certificate request is unreadable or its self-signature does not verify."""


class KeyPolicyError(PolicyError):
    """A public key is refused by the CA's key policy (RSA below 2048 bits, unlisted curve)."""


class IssuanceRefusedError(PolicyError):
    """The CA refuses to certify: the key is already certified for another identity or
    purpose, the address belongs to another professional, a path length or name would be
    broken, or the CA itself has been revoked."""
