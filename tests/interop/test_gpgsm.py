"""Interop with gpgsm 2.2 (GnuPG's S/MIME), both directions, on what it supports:
AES-CBC with RSA PKCS#1 v1.5 key transport, PKCS#1 v1.5 and PSS (salt 32) signatures, DER."""

from __future__ import annotations

import datetime as dt
import os
import pathlib

import pytest

from caducee.core.algorithms import ContentCipher, Digest, SignatureScheme
from caducee.core.capabilities import LEGACY_GPGSM
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import encrypt_data
from caducee.core.cms.sign import sign_data
from caducee.core.cms.verify import verify_signed_data
from caducee.core.policy import choose_encryption

pytestmark = pytest.mark.interop

CONTENT = b"Compte rendu: glycemie 5.4 mmol/L\r\n" * 20
NOW = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)


def test_gpgsm_detached_signature_verifies_with_caducee(gpgsm, pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.alice)
    (tmp_path / "c.txt").write_bytes(CONTENT)
    sig = tmp_path / "c.sig"
    gpgsm.run("-u", pki.alice.email, "--sign", "--detach", "-o", str(sig), str(tmp_path / "c.txt"))
    report = verify_signed_data(sig.read_bytes(), detached_content=CONTENT)
    assert report.valid, report
    assert report.signers[0].certificate == pki.alice.signing.certificate


def test_gpgsm_opaque_signature_verifies_with_caducee(gpgsm, pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.alice)
    (tmp_path / "c.txt").write_bytes(CONTENT)
    out = tmp_path / "c.p7m"
    gpgsm.run("-u", pki.alice.email, "--sign", "-o", str(out), str(tmp_path / "c.txt"))
    report = verify_signed_data(out.read_bytes())
    assert report.valid
    assert report.content == CONTENT


def test_tampered_gpgsm_signature_is_reported_invalid(gpgsm, pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.alice)
    (tmp_path / "c.txt").write_bytes(CONTENT)
    sig = tmp_path / "c.sig"
    gpgsm.run("-u", pki.alice.email, "--sign", "--detach", "-o", str(sig), str(tmp_path / "c.txt"))
    report = verify_signed_data(sig.read_bytes(), detached_content=CONTENT + b"x")
    assert not report.valid


@pytest.mark.parametrize(
    "scheme", [SignatureScheme.RSA_PKCS1V15, SignatureScheme.RSA_PSS], ids=["pkcs1", "pss32"]
)
def test_caducee_signature_verifies_with_gpgsm(gpgsm, pki, tmp_path, scheme) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.alice)
    der = sign_data(
        CONTENT, pki.alice.signing, signing_time=NOW, digest=Digest.SHA256, scheme=scheme
    )
    (tmp_path / "c.txt").write_bytes(CONTENT)
    (tmp_path / "c.sig").write_bytes(der)
    out = gpgsm.run("--verify", str(tmp_path / "c.sig"), str(tmp_path / "c.txt"))
    assert b"Good signature" in out


def test_gpgsm_encryption_decrypts_with_caducee(gpgsm, pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.bob)
    (tmp_path / "c.txt").write_bytes(CONTENT)
    out = tmp_path / "c.p7m"
    gpgsm.run("-r", pki.bob.email, "--encrypt", "-o", str(out), str(tmp_path / "c.txt"))
    report = decrypt_data(out.read_bytes(), [pki.bob.encryption])
    assert report.content == CONTENT
    assert not report.cipher.aead


def test_caducee_encryption_for_legacy_peer_decrypts_with_gpgsm(gpgsm, pki, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gpgsm.import_identity(pki.bob)
    choice = choose_encryption([(pki.bob.encryption.certificate, LEGACY_GPGSM)])
    assert choice.cipher is ContentCipher.AES_256_CBC
    der = encrypt_data(CONTENT, choice.recipients, random=os.urandom, cipher=choice.cipher)
    (tmp_path / "c.p7m").write_bytes(der)
    out = gpgsm.run("--decrypt", str(tmp_path / "c.p7m"))
    assert out.startswith(CONTENT)


def test_cli_legacy_encrypt_reaches_gpgsm(gpgsm, pki, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from caducee.cli.main import cli
    from tests.conftest import pem_cert

    gpgsm.import_identity(pki.bob)
    (tmp_path / "bob.pem").write_bytes(pem_cert(pki.bob.encryption.certificate))
    (tmp_path / "c.txt").write_bytes(CONTENT)
    result = CliRunner().invoke(
        cli,
        ["smime", "encrypt", "--legacy", "--outform", "der", "--recip", str(tmp_path / "bob.pem"),
         "--in", str(tmp_path / "c.txt"), "--out", str(tmp_path / "c.p7m")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert gpgsm.run("--decrypt", str(tmp_path / "c.p7m")).startswith(CONTENT)
