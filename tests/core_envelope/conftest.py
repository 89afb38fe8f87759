"""Fixtures for the enveloping tests: identities by name, counted keys, key/cert files."""

from __future__ import annotations

import os
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from caducee import devpki
from caducee.core.algorithms import KeyTransport
from caducee.keys.software import SoftwareKey
from tests.conftest import TestPKI as PKI
from tests.conftest import pem_cert, pem_key

RSA_NAMES = ("alice", "bob")
EC_NAMES = ("carol", "dave")


def identity(pki: PKI, name: str) -> devpki.TestIdentity:
    return getattr(pki, name)  # type: ignore[no-any-return]


def rand(size: int) -> bytes:
    return os.urandom(size)


class CountingKey:
    """A DecryptionKey that counts private-key operations (real SoftwareKey underneath)."""

    def __init__(self, key: SoftwareKey) -> None:
        self._key = key
        self.calls = 0

    @property
    def certificate(self) -> x509.Certificate:
        return self._key.certificate

    def key_transports(self) -> frozenset[KeyTransport]:
        return self._key.key_transports()

    def decrypt_key(self, encrypted_key: bytes, padding: KeyTransport) -> bytes:
        self.calls += 1
        return self._key.decrypt_key(encrypted_key, padding)

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        self.calls += 1
        return self._key.ecdh(peer_public_key)


@pytest.fixture
def key_files(pki: PKI, files):  # type: ignore[no-untyped-def]
    """Write an identity's encryption certificate and key (0600); return their paths."""

    def write(name: str) -> tuple[str, str]:
        key = identity(pki, name).encryption
        cert_path = files(f"{name}-enc-cert.pem", pem_cert(key.certificate))
        key_path = files(f"{name}-enc-key.pem", pem_key(key._key))
        pathlib.Path(key_path).chmod(0o600)
        return cert_path, key_path

    return write
