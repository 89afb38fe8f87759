"""``caducee smime verify --trust/--crl``: full path validation with revocation, at signing time."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.keys.software import SoftwareKey
from caducee.pki import CAConfig, CertificateAuthority, ProfessionalIdentity
from caducee.pki.ca import generate_ca_key
from tests.conftest import pem_cert, pem_key

CADUCEE = [sys.executable, "-m", "caducee.cli.main"]
LETTER = b"From: alice.martin@op-a.test\r\nTo: bob@op-b.test\r\nSubject: ECG\r\n\r\nNormal ECG.\r\n"
ALICE = ProfessionalIdentity(
    "Alice", "Martin", "alice.martin@op-a.test", "10003456789", "General practitioner"
)


@pytest.fixture
def operator(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    ca = CertificateAuthority.init_root(
        tmp_path / "ca",
        CAConfig(name="Operator A Test CA", crl_url="http://127.0.0.1:9/a.crl"),
        organisation="Operator A",
        key=generate_ca_key("p256"),
        passphrase=b"pass",
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = ca.issue(key.public_key(), ALICE, "signature")
    files = {
        "root": tmp_path / "root.pem",
        "cert": tmp_path / "alice.pem",
        "key": tmp_path / "alice.key",
        "letter": tmp_path / "letter.eml",
        "crl": tmp_path / "a.crl",
    }
    files["root"].write_bytes(pem_cert(ca.certificate))
    files["cert"].write_bytes(pem_cert(cert))
    files["key"].write_bytes(pem_key(key))
    files["letter"].write_bytes(LETTER)
    assert SoftwareKey(key, cert)  # key and certificate match
    return ca, cert, files


def _sign(files) -> bytes:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [*CADUCEE, "smime", "sign", "--in", str(files["letter"]), "--signer", str(files["cert"]),
         "--inkey", str(files["key"])], capture_output=True, check=True,
    )  # fmt: skip
    return proc.stdout


def _verify(files, signed: bytes) -> subprocess.CompletedProcess[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [*CADUCEE, "smime", "verify", "--trust", str(files["root"]), "--crl", str(files["crl"])],
        input=signed, capture_output=True, timeout=60,
    )  # fmt: skip


def test_valid_signer_prints_validated_path(operator) -> None:  # type: ignore[no-untyped-def]
    ca, _, files = operator
    files["crl"].write_bytes(ca.crl().public_bytes(Encoding.DER))
    proc = _verify(files, _sign(files))
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.decode()
    assert "Verification successful" in err and "path:" in err and "Operator A Test CA" in err


def test_revoked_signer_is_refused_with_reason(operator) -> None:  # type: ignore[no-untyped-def]
    ca, cert, files = operator
    signed = _sign(files)
    # keyCompromise (a lost card) voids the certificate whatever signing time is claimed
    ca.revoke(cert.serial_number, "keyCompromise")
    files["crl"].write_bytes(ca.crl().public_bytes(Encoding.DER))
    proc = _verify(files, signed)
    assert proc.returncode == 4
    err = proc.stderr.decode()
    assert "revoked" in err.lower() and err.count("\n") == 1


def test_unknown_ca_is_refused(operator, pki) -> None:  # type: ignore[no-untyped-def]
    ca, _, files = operator
    files["crl"].write_bytes(ca.crl().public_bytes(Encoding.DER))
    files["root"].write_bytes(pem_cert(pki.other_ca.certificate))
    proc = _verify(files, _sign(files))
    assert proc.returncode == 4 and b"Traceback" not in proc.stderr
