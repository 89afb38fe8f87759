"""Issuance publishes, revocation withdraws: the CA's link to its public directory."""

from __future__ import annotations

from cryptography import x509

from caducee.directory.api import Directory
from caducee.pki.profiles import ProfessionalIdentity


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

    def revoked(self, cert: x509.Certificate, reason: str) -> None:
        # A revoked certificate must stop being found at once, whatever the reason.
        self.directory.withdraw(cert)
