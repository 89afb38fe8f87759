"""Issuance publishes, revocation withdraws: the CA's link to its public directory."""

from __future__ import annotations

from cryptography import x509

from caducee.directory.api import Directory, DirectoryEntry
from caducee.errors import DirectoryError
from caducee.pki.profiles import ProfessionalIdentity


class PublicationError(DirectoryError):
    """The CA did its part (certificate issued and saved, or revoked and CRL published) but the
    directory step failed; the message says what was done and how to finish."""


def check_publishable(identity: ProfessionalIdentity) -> None:
    """Raise the directory's own error now if it would refuse this identity's entry, so that
    nothing is issued that cannot be published."""
    DirectoryEntry(
        email=identity.email,
        common_name=identity.common_name,
        surname=identity.surname,
        given_name=identity.given_name,
        profession=identity.profession or "",
        organisation=identity.organisation or "",
        professional_id=identity.professional_id,
    )


class DirectoryPublisher:
    """A :class:`caducee.pki.ca.CAListener` keeping a directory in step with the CA."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def issued(self, cert: x509.Certificate, identity: ProfessionalIdentity, purpose: str) -> None:
        self.directory.publish(
            cert,
            email=identity.email,
            profession=identity.profession or "",
            organisation=identity.organisation or "",
            professional_id=identity.professional_id,
        )

    def revoked(self, cert: x509.Certificate, reason: str) -> int:
        """Withdraw ``cert``; by serial number too when the backend did not match it by value
        (a revoked certificate must stop being found at once, whatever the reason)."""
        removed = self.directory.withdraw(cert)
        if not removed:
            removed = self.directory.withdraw(serial=cert.serial_number)
        return removed
