"""Fixtures shared by the whole suite: a throw-away test PKI and helpers to reach real peers.

Area-specific fixtures (SoftHSM2 tokens, slapd, gpgsm homes) live in each area's conftest.py.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from caducee import devpki


@dataclasses.dataclass(frozen=True)
class TestPKI:
    ca: devpki.TestCA
    alice: devpki.TestIdentity  # RSA-2048, operator 1
    bob: devpki.TestIdentity  # RSA-2048
    carol: devpki.TestIdentity  # EC P-256
    dave: devpki.TestIdentity  # EC P-384
    other_ca: devpki.TestCA  # a CA nobody trusts


@pytest.fixture(scope="session")
def pki() -> TestPKI:
    ca = devpki.make_ca("caducee Test Operator 1 CA")
    return TestPKI(
        ca=ca,
        alice=devpki.make_identity(ca, "alice@op1.test"),
        bob=devpki.make_identity(ca, "bob@op2.test"),
        carol=devpki.make_identity(ca, "carol@op1.test", "p256"),
        dave=devpki.make_identity(ca, "dave@op2.test", "p384"),
        other_ca=devpki.make_ca("Untrusted CA"),
    )


def pem_cert(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]


def pem_key(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl is not installed")
    return path


def run(cmd: list[str], data: bytes | None = None, check: bool = True) -> bytes:
    """Run an external peer; on failure show its stderr in the assertion."""
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return proc.stdout


@pytest.fixture
def files(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    """Write bytes to a named file under tmp_path and return its path as a string."""

    def write(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return write


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """No test reads or writes the real user's caducee data directory."""
    monkeypatch.setenv("CADUCEE_DATA_DIR", str(tmp_path_factory.mktemp("caducee-data")))
