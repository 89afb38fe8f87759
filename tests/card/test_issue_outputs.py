"""``caducee card issue --cert-out`` checks its outputs before touching the card or the CA
(defect #13 of 2026-11-29: a missing directory used to fail after the card was initialised and
two certificates issued, and the rerun then found the label taken)."""

from __future__ import annotations

import os
import pathlib

import pytest
from click.testing import CliRunner, Result

from caducee.cli.card import group
from caducee.errors import UsageError
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Module

pytestmark = pytest.mark.softhsm

PINS = {"CADUCEE_SO_PIN": "12345678", "CADUCEE_PIN": "2468", "CADUCEE_CA_PASS": "ca-pass"}


def _issue(label: str, out: pathlib.Path, *extra: str) -> Result:
    args = ["issue", "--token", label, "--email", "petit@op1.test", "--kind", "p256",
            "--cert-out", str(out), "--module", SOFTHSM2_MODULE, *extra]  # fmt: skip
    return CliRunner().invoke(group, args, env=PINS)


def _labels() -> list[str]:
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        return [t.label for t in module.tokens()]


def _refused(result: Result) -> str:
    assert isinstance(result.exception, UsageError), result.output
    return str(result.exception)


@pytest.fixture
def operator_ca(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    from caducee.pki import CAConfig, CertificateAuthority
    from caducee.pki.ca import generate_ca_key

    return CertificateAuthority.init_root(
        tmp_path / "op1-ca", CAConfig("Operator 1 Health CA", "http://127.0.0.1:9/op1.crl"),
        key=generate_ca_key("p256"), passphrase=b"ca-pass",
    )  # fmt: skip


def _with_ca(tmp_path: pathlib.Path) -> list[str]:
    return ["--ca", str(tmp_path / "op1-ca"), "--given-name", "Jean", "--surname", "Petit",
            "--professional-id", "10000000003"]  # fmt: skip


def test_missing_directory_is_refused_before_the_card_and_the_ca(  # type: ignore[no-untyped-def]
    blank_hsm, tmp_path: pathlib.Path, operator_ca
) -> None:
    missing = tmp_path / "people" / "petit"
    message = _refused(_issue("dr-petit", missing, *_with_ca(tmp_path)))
    assert message == f"--cert-out {missing}: no such directory (create it first)"
    assert "dr-petit" not in _labels()  # the card was not initialised
    assert operator_ca.records() == []  # and the CA issued nothing
    assert not missing.exists()
    # once the directory exists, the same command works: nothing was left half done
    missing.mkdir(parents=True)
    result = _issue("dr-petit", missing, *_with_ca(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in missing.iterdir()) == [
        "ca.pem", "encryption.pem", "signature.pem"
    ]  # fmt: skip
    assert len(operator_ca.records()) == 2


def test_a_file_given_as_directory_is_refused(blank_hsm, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "certs"
    file.write_text("not a directory")
    assert _refused(_issue("dr-file", file)) == f"--cert-out {file}: not a directory"
    assert "dr-file" not in _labels()


def test_existing_certificates_are_not_overwritten_unless_asked(  # type: ignore[no-untyped-def]
    blank_hsm, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "certs"
    out.mkdir()
    (out / "encryption.pem").write_text("someone else's certificate")
    message = _refused(_issue("dr-second", out))
    assert message == (
        f"--cert-out {out}: encryption.pem already there; choose another directory, "
        "or add --overwrite"
    )
    assert "dr-second" not in _labels()
    assert (out / "encryption.pem").read_text() == "someone else's certificate"
    result = _issue("dr-second", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "encryption.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert "dr-second" in _labels()


def test_a_directory_in_place_of_a_certificate_file_is_refused(  # type: ignore[no-untyped-def]
    blank_hsm, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "certs"
    (out / "test-ca.pem").mkdir(parents=True)
    assert _refused(_issue("dr-dir", out, "--overwrite")) == (
        f"--cert-out {out}: test-ca.pem is a directory"
    )
    assert "dr-dir" not in _labels()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_refused(blank_hsm, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "certs"
    out.mkdir(mode=0o500)
    assert _refused(_issue("dr-ro", out)) == f"--cert-out {out}: directory not writable"
    assert "dr-ro" not in _labels()
