"""``caducee ca`` through click's CliRunner, and one real subprocess serving CRLs."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from caducee.cli.ca import group
from caducee.errors import ConfigError
from caducee.pki import CertificateAuthority, TrustStore, validate_certificate
from caducee.pki.errors import CertificateRevokedError
from caducee.serials import format_serial


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cli_pki(tmp_path: pathlib.Path) -> dict[str, pathlib.Path | int]:
    port = _port()
    pw = tmp_path / "pass.txt"
    pw.write_text("s3cret passphrase\n")
    runner = CliRunner()
    url = f"http://127.0.0.1:{port}"
    r = runner.invoke(group, [
        "init", "--ca", str(tmp_path / "root"), "--name", "Racine Santé", "--key-type", "p256",
        "--crl-url", f"{url}/root.crl", "--aia-url", f"{url}/root.crt", "--pass-source", str(pw),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "created root CA" in r.output
    r = runner.invoke(
        group,
        ["init", "--ca", str(tmp_path / "opa"), "--name", "Operator A CA", "--key-type", "p256",
         "--crl-url", f"{url}/opa.crl", "--parent", str(tmp_path / "root"),
         "--parent-pass-source", str(pw)],
        env={"CADUCEE_CA_PASS": "another passphrase"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "subordinate of Racine Santé" in r.output
    return {"base": tmp_path, "pw": pw, "port": port}


def _csr_file(tmp_path: pathlib.Path, name: str) -> pathlib.Path:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / name
    path.write_bytes(csr.public_bytes(Encoding.DER))
    return path


def test_issue_list_revoke_crl(cli_pki: dict[str, pathlib.Path | int]) -> None:
    base = cli_pki["base"]
    assert isinstance(base, pathlib.Path)
    runner = CliRunner()
    env = {"CADUCEE_CA_PASS": "another passphrase"}
    out = base / "alice-enc.pem"
    r = runner.invoke(group, [
        "issue", "--ca", str(base / "opa"), "--csr", str(_csr_file(base, "a.csr")),
        "--purpose", "encryption", "--email", "alice@op-a.test", "--given-name", "Alice",
        "--surname", "Martin", "--rpps", "10003456789", "--profession", "Médecin",
        "--out", str(out),
    ], env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    serial = format_serial(cert.serial_number)
    assert serial in r.output

    r = runner.invoke(group, ["list", "--ca", str(base / "opa"), "--json"])
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert rows[0]["serial"] == serial and rows[0]["status"] == "valid"
    assert rows[0]["professional_id"] == "10003456789"

    r = runner.invoke(
        group, ["revoke", "--ca", str(base / "opa"), serial, "--reason", "keyCompromise"], env=env
    )
    assert r.exit_code == 0, r.output
    assert "CRL number 2 published" in r.output
    r = runner.invoke(group, ["list", "--ca", str(base / "opa"), "--status", "revoked"])
    assert serial in r.output and "keyCompromise" in r.output

    crl_out = base / "opa.crl"
    r = runner.invoke(group, ["crl", "--ca", str(base / "opa"), "--out", str(crl_out)], env=env)
    assert r.exit_code == 0, r.output
    crl = x509.load_der_x509_crl(crl_out.read_bytes())
    root = CertificateAuthority.open(base / "root")
    opa = CertificateAuthority.open(base / "opa")
    root_crl = x509.load_der_x509_crl((base / "root" / "crl.der").read_bytes())
    with pytest.raises(CertificateRevokedError):
        validate_certificate(
            cert, purpose="encryption", trust=TrustStore([root.certificate], [opa.certificate]),
            crls=[crl, root_crl], at=crl.last_update_utc,
        )  # fmt: skip


def test_cli_errors_are_one_line(cli_pki: dict[str, pathlib.Path | int]) -> None:
    base = cli_pki["base"]
    assert isinstance(base, pathlib.Path)
    env_cmd = [sys.executable, "-c", "from caducee.cli.main import main; main()"]
    proc = subprocess.run(
        [*env_cmd, "ca", "revoke", "--ca", str(base / "opa"), "ZZ"],
        capture_output=True, timeout=60, env={"CADUCEE_CA_PASS": "x", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        "caducee: error: 'ZZ' is not a hexadecimal serial number (as 'ca list' shows)"
    ]
    proc = subprocess.run(
        [*env_cmd, "ca", "crl", "--ca", str(base / "opa")],
        capture_output=True, timeout=60, env={"CADUCEE_CA_PASS": "wrong", "PATH": "/usr/bin"},
    )  # fmt: skip
    assert proc.returncode == 5
    assert "cannot decrypt the CA key (wrong passphrase?)" in proc.stderr.decode()
    assert "wrong" not in proc.stderr.decode().replace("wrong passphrase", "")


def test_serve_subprocess(cli_pki: dict[str, pathlib.Path | int]) -> None:
    base, port = cli_pki["base"], cli_pki["port"]
    assert isinstance(base, pathlib.Path)
    exe = shutil.which("caducee", path=str(pathlib.Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the caducee entry point is not installed in this venv")
    proc = subprocess.Popen(
        [exe, "ca", "serve", "--ca", str(base / "root"), "--ca", str(base / "opa"),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        data = b""
        for _ in range(100):  # wait for the listener (up to ~10 s), not a timing assertion
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/opa.crl", timeout=2) as resp:
                    data = resp.read()
                break
            except urllib.error.URLError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        crl = x509.load_der_x509_crl(data)
        opa = CertificateAuthority.open(base / "opa")
        assert crl.issuer == opa.certificate.subject
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/root.crt", timeout=2) as resp:
            root_der = resp.read()
        assert (
            x509.load_der_x509_certificate(root_der)
            == CertificateAuthority.open(base / "root").certificate
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_operator_ca_certified_by_a_separate_root(cli_pki: dict[str, pathlib.Path | int]) -> None:
    """request (operator) -> certify (national root, elsewhere) -> adopt (operator)."""
    base = cli_pki["base"]
    assert isinstance(base, pathlib.Path)
    runner = CliRunner()
    op_env = {"CADUCEE_CA_PASS": "operator C passphrase"}
    r = runner.invoke(group, [
        "request", "--ca", str(base / "opc"), "--name", "Operator C CA", "--key-type", "p256",
        "--crl-url", "http://127.0.0.1:9/opc.crl", "--out", str(base / "opc.csr"),
    ], env=op_env)  # fmt: skip
    assert r.exit_code == 0, r.output
    with pytest.raises(ConfigError, match="no CA here"):  # not usable before adoption
        CertificateAuthority.open(base / "opc")
    r = runner.invoke(group, [
        "certify", "--ca", str(base / "root"), "--csr", str(base / "opc.csr"),
        "--out", str(base / "opc-chain.pem"), "--pass-source", str(cli_pki["pw"]),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    # adopting somebody else's certificate is refused
    r = runner.invoke(
        group, ["adopt", "--ca", str(base / "opc"), "--cert", str(base / "root" / "ca.pem")]
    )
    assert r.exit_code != 0
    assert "not for the key of the pending request" in str(r.exception)
    r = runner.invoke(
        group, ["adopt", "--ca", str(base / "opc"), "--cert", str(base / "opc-chain.pem")]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(group, ["crl", "--ca", str(base / "opc")], env=op_env)
    assert r.exit_code == 0, r.output
    opc = CertificateAuthority.open(base / "opc", passphrase=b"operator C passphrase")
    root = CertificateAuthority.open(base / "root")
    assert opc.chain == [root.certificate]
    key = ec.generate_private_key(ec.SECP256R1())
    from .conftest import ALICE

    cert = opc.issue(key.public_key(), ALICE, "encryption")
    crl = opc.crl()
    root_crl = x509.load_der_x509_crl((base / "root" / "crl.der").read_bytes())
    result = validate_certificate(
        cert, purpose="encryption", trust=TrustStore([root.certificate], [opc.certificate]),
        crls=[crl, root_crl], at=crl.last_update_utc,
    )  # fmt: skip
    assert result.trust_anchor == root.certificate


def test_check_command(two_ops, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from caducee.cli.main import main

    from .conftest import at

    crls = two_ops.crls(at(1))
    (tmp_path / "trust.pem").write_bytes(
        two_ops.root.certificate.public_bytes(Encoding.PEM)
        + two_ops.op_b.certificate.public_bytes(Encoding.PEM)
    )
    (tmp_path / "op-a.pem").write_bytes(two_ops.op_a.certificate.public_bytes(Encoding.PEM))
    for i, crl in enumerate(crls):
        (tmp_path / f"{i}.crl").write_bytes(crl.public_bytes(Encoding.DER))
    (tmp_path / "alice.pem").write_bytes(two_ops.alice.enc.public_bytes(Encoding.PEM))
    args = [
        "ca", "check", str(tmp_path / "alice.pem"), "--trust", str(tmp_path / "trust.pem"),
        "--untrusted", str(tmp_path / "op-a.pem"), "--at", at(2).isoformat(),
        *[a for i in range(3) for a in ("--crl", str(tmp_path / f"{i}.crl"))],
    ]  # fmt: skip
    r = CliRunner().invoke(group, [*args[1:], "--purpose", "encryption"])
    assert r.exit_code == 0, r.output
    assert "OK encryption certificate" in r.output
    assert "Alice Martin (10003456789) <- Operator A Health CA <- " in r.output
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--purpose", "signature"])
    assert exit_.value.code == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "caducee: error: certificate of Alice Martin (10003456789) is not a signature "
        "certificate (missing: digital_signature)"
    ]


def test_issue_publishes_and_revoke_withdraws(cli_pki: dict[str, pathlib.Path | int]) -> None:
    from caducee.directory.sqlite import SqliteDirectory

    base = cli_pki["base"]
    assert isinstance(base, pathlib.Path)
    directory_url = f"sqlite:///{base / 'op-a-directory.sqlite'}"
    env = {"CADUCEE_CA_PASS": "another passphrase"}
    runner = CliRunner()
    r = runner.invoke(group, [
        "issue", "--ca", str(base / "opa"), "--csr", str(_csr_file(base, "p.csr")),
        "--purpose", "encryption", "--email", "dr-petit@op-a.test", "--given-name", "Bob",
        "--surname", "Petit", "--rpps", "10009876543", "--profession", "Cardiologist",
        "--org", "Regional Hospital", "--out", str(base / "petit.pem"), "--publish", directory_url,
    ], env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    cert = x509.load_pem_x509_certificate((base / "petit.pem").read_bytes())
    with SqliteDirectory(base / "op-a-directory.sqlite") as directory:
        found = directory.lookup(professional_id="10009876543").entries
        assert [e.email for e in found] == ["dr-petit@op-a.test"]
        assert found[0].encryption_certificates == (cert,)
        assert found[0].organisation == "Regional Hospital"
    r = runner.invoke(group, [
        "revoke", "--ca", str(base / "opa"), f"{cert.serial_number:X}", "--reason",
        "keyCompromise", "--publish", directory_url,
    ], env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    with SqliteDirectory(base / "op-a-directory.sqlite") as directory:
        entries = directory.lookup(email="dr-petit@op-a.test").entries
        assert all(cert not in e.certificates for e in entries)
