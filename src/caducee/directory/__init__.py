"""Public certificate directories: SQLite (default), LDAP, HTTP, and a federation of operators.

A directory returns candidates; a certificate found is used only after path validation.
"""

from caducee.directory.api import (
    ENCRYPTION,
    SIGNATURE,
    Directory,
    DirectoryEntry,
    DirectoryUnavailableError,
    EntryNotFoundError,
    InvalidEntryError,
    LookupResult,
    MalformedCertificateError,
    Query,
    ReadOnlyDirectoryError,
    entry_from_certificate,
)

__all__ = [
    "ENCRYPTION",
    "SIGNATURE",
    "Directory",
    "DirectoryEntry",
    "DirectoryUnavailableError",
    "EntryNotFoundError",
    "InvalidEntryError",
    "LookupResult",
    "MalformedCertificateError",
    "Query",
    "ReadOnlyDirectoryError",
    "entry_from_certificate",
]
