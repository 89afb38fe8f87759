"""Operators' PKI: certificate profiles, the CA, CRLs and path validation across operators."""

from caducee.pki.ca import CAListener, CertificateAuthority, generate_ca_key, load_csr
from caducee.pki.crl import ChainedCrlSource, CrlCache, CrlSource, HttpCrlFetcher, parse_crl
from caducee.pki.profiles import ProfessionalIdentity, Purpose, ValidityPolicy
from caducee.pki.signer import CASigner, SigningKeyCASigner, SoftwareCASigner
from caducee.pki.store import CAConfig
from caducee.pki.trust import TrustStore
from caducee.pki.validate import (
    ValidationResult,
    async_validate_certificate,
    validate_certificate,
)

__all__ = [
    "CAConfig",
    "CAListener",
    "CASigner",
    "CertificateAuthority",
    "ChainedCrlSource",
    "CrlCache",
    "CrlSource",
    "HttpCrlFetcher",
    "ProfessionalIdentity",
    "Purpose",
    "SigningKeyCASigner",
    "SoftwareCASigner",
    "TrustStore",
    "ValidationResult",
    "ValidityPolicy",
    "async_validate_certificate",
    "generate_ca_key",
    "load_csr",
    "parse_crl",
    "validate_certificate",
]
