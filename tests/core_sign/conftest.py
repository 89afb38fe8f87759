"""Fixtures for the signing tests: a frozen clock, signer combinations, CA and key files."""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Callable

import pytest

from caducee import devpki
from caducee.core.algorithms import Digest, SignatureScheme
from tests.conftest import TestPKI as PKI
from tests.conftest import pem_cert, pem_key

DATA = pathlib.Path(__file__).parent.parent / "data"
SIGN_DATA = DATA / "sign"
MALFORMED = DATA / "malformed" / "sign"

WriteFile = Callable[[str, bytes], str]
SignerFiles = Callable[[str], tuple[str, str]]

T0 = dt.datetime(2026, 11, 29, 8, 30, 0, tzinfo=dt.UTC)

#: (identity name, scheme) pairs: every key type with every scheme it can do.
SIGNERS = [
    ("alice", SignatureScheme.RSA_PKCS1V15),
    ("bob", SignatureScheme.RSA_PSS),
    ("alice", SignatureScheme.RSA_PSS),
    ("carol", SignatureScheme.ECDSA),
    ("dave", SignatureScheme.ECDSA),
]
DIGESTS = [Digest.SHA256, Digest.SHA384, Digest.SHA512]


def identity(pki: PKI, name: str) -> devpki.TestIdentity:
    return getattr(pki, name)  # type: ignore[no-any-return]


@pytest.fixture
def ca_file(pki: PKI, files: WriteFile) -> str:
    return files("ca.pem", pem_cert(pki.ca.certificate))


@pytest.fixture
def signer_files(pki: PKI, files: WriteFile) -> SignerFiles:
    """Write an identity's signing certificate and key (0600) and return their paths."""

    def write(name: str) -> tuple[str, str]:
        key = identity(pki, name).signing
        cert_path = files(f"{name}-cert.pem", pem_cert(key.certificate))
        key_path = files(f"{name}-key.pem", pem_key(key._key))
        pathlib.Path(key_path).chmod(0o600)
        return cert_path, key_path

    return write
