"""``caducee ca`` behaviour found wrong by the operator acceptance review (defects 1, 2, 4-8, 10).

Commands run through ``caducee.cli.main.main`` (the real error-to-exit-code mapping), or as a
subprocess where a terminal, a server or stdin matters. CAs are real (caducee.pki), directories
are SQLite files and, for the credentials case, a throw-away slapd.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import queue
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from caducee.cli.main import main
from caducee.pki import CAConfig, CertificateAuthority
from caducee.pki.ca import generate_ca_key

PASS = "cli acceptance passphrase"
CADUCEE = str(pathlib.Path(sys.executable).with_name("caducee"))


@dataclasses.dataclass
class Setup:
    base: pathlib.Path
    root: pathlib.Path
    op1: pathlib.Path
    pw: pathlib.Path

    def csr(self, name: str, subject: x509.Name | None = None) -> pathlib.Path:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "card")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject)
        path = self.base / name
        path.write_bytes(csr.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM))
        return path

    def issue(self, csr: pathlib.Path, *extra: str, email: str = "c.martin@op1.test") -> list[str]:
        return [
            "ca", "issue", "--ca", str(self.op1), "--pass-source", str(self.pw),
            "--csr", str(csr), "--email", email, "--given-name", "Claire", "--surname", "Martin",
            "--rpps", "10000000001", "--purpose", "signature", *extra,
        ]  # fmt: skip


@pytest.fixture
def setup(tmp_path: pathlib.Path) -> Setup:
    pw = tmp_path / "ca.pass"
    pw.write_text(PASS + "\n")
    pw.chmod(0o600)
    root = CertificateAuthority.init_root(
        tmp_path / "root", CAConfig("Racine Santé", "http://127.0.0.1:9/root.crl"),
        organisation="Santé", key=generate_ca_key("p256"), passphrase=PASS.encode(),
    )  # fmt: skip
    op1 = CertificateAuthority.init_subordinate(
        tmp_path / "op1",
        CAConfig("Opérateur 1 CA", "http://127.0.0.1:9/op1.crl",
                 ocsp_url="http://127.0.0.1:9/ocsp/op1"),
        root, organisation="Opérateur 1", key=generate_ca_key("p256"),
        passphrase=PASS.encode(),
    )  # fmt: skip
    root.crl()
    op1.crl()
    return Setup(tmp_path, tmp_path / "root", tmp_path / "op1", pw)


def caducee(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _records(ca_dir: pathlib.Path) -> list[str]:
    return [r.serial_hex for r in CertificateAuthority.open(ca_dir).records()]


# -- defects 1 and 2 ------------------------------------------------------------


def test_one_key_one_identity_one_purpose(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    csr = setup.csr("alice-sig.csr")
    code, out, err = caducee(capsys, *setup.issue(csr, "--out", str(setup.base / "a.pem")))
    assert code == 0, err
    assert out.startswith("signature certificate ") and "issued and written to" in out
    code, _, err = caducee(capsys, *setup.issue(csr, email="mallory@op1.test"))
    assert code == 8
    assert "this key is already certified by Opérateur 1 CA for c.martin@op1.test" in err
    args = setup.issue(csr)
    args[args.index("signature")] = "encryption"
    code, _, err = caducee(capsys, *args)
    assert code == 8 and "already certified" in err
    assert len(_records(setup.op1)) == 1


def test_address_of_another_professional(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    from caducee.directory.sqlite import SqliteDirectory

    url = f"sqlite:///{setup.base / 'dir1.sqlite'}"
    code, _, err = caducee(capsys, *setup.issue(setup.csr("c.csr"), "--publish", url))
    assert code == 0, err
    paul = setup.issue(setup.csr("p.csr"), "--publish", url)
    paul[paul.index("Claire")] = "Paul"
    paul[paul.index("10000000001")] = "10000000099"
    code, _, err = caducee(capsys, *paul)
    assert code == 8
    assert "c.martin@op1.test belongs to professional 10000000001" in err
    assert "--reassign-address" in err
    with SqliteDirectory(setup.base / "dir1.sqlite") as directory:
        assert [e.given_name for e in directory.lookup(email="c.martin@op1.test").entries] == [
            "Claire"
        ]
    code, _, err = caducee(capsys, *paul, "--reassign-address")
    assert code == 0, err


# -- defect 4: half-done issue and revoke ---------------------------------------------------------


def test_output_checked_before_issuing(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    out = setup.base / "nonexistent-dir" / "f.pem"
    code, _, err = caducee(capsys, *setup.issue(setup.csr("f.csr"), "--out", str(out)))
    assert code == 2
    assert f"--out {out}: no directory {out.parent}" in err
    assert _records(setup.op1) == []


def test_publish_failure_after_issue_says_what_was_done(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup.base / "f.pem"
    url = "ldap://127.0.0.1:1/ou=people,dc=op1,dc=test"
    code, _, err = caducee(
        capsys, *setup.issue(setup.csr("f.csr"), "--out", str(out), "--publish", url,
                             "--timeout", "2")
    )  # fmt: skip
    assert code == 6
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    serial = _records(setup.op1)[0]
    assert f"{cert.serial_number:X}".rjust(len(serial), "0") == serial
    line = err.strip().splitlines()[-1]
    assert f"signature certificate {serial} issued and written to {out}" in line
    assert f"publishing to {url} failed" in line
    assert f"'caducee directory publish -d {url} {out}'" in line


def test_directory_refusal_checked_before_issuing(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{setup.base / 'dir.sqlite'}"
    args = setup.issue(setup.csr("f.csr"), "--publish", url, "--profession", "x" * 70)
    code, _, err = caducee(capsys, *args)
    assert code == 2 and "profession is 70 characters long" in err
    assert _records(setup.op1) == []


@pytest.mark.slapd
def test_publish_and_withdraw_with_credentials(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    from caducee.directory import slapd

    if not slapd.available():
        pytest.skip("slapd (with core/cosine/inetorgperson schemas) is not installed")
    server = slapd.Slapd("dc=op1,dc=test")
    try:
        server.start()
        url = f"{server.url}/{server.people_dn}"
        pw = setup.base / "ldap.pw"
        pw.write_text(server.password)
        creds = ["--bind-dn", server.root_dn, "--password-file", str(pw)]
        out = setup.base / "c.pem"
        code, _, err = caducee(
            capsys, *setup.issue(setup.csr("c.csr"), "--out", str(out), "--publish", url, *creds)
        )
        assert code == 0, err
        serial = _records(setup.op1)[0]
        # anonymous: revoked and CRL published, the withdrawal refused, and said so
        revoke = ["ca", "revoke", "--ca", str(setup.op1), "--pass-source", str(setup.pw), serial]
        code, _, err = caducee(capsys, *revoke, "--publish", url)
        assert code == 6
        assert f"revoked {serial} (unspecified); CRL number 2 published" in err
        assert f"withdrawing it from {url} failed" in err
        assert f"caducee directory withdraw -d {url} --serial {serial}" in err
        # running it again with credentials finishes the job (CA named with an accent)
        code, out_text, err = caducee(capsys, *revoke, "--publish", url, *creds)
        assert code == 0, err
        assert "already revoked" in out_text and f"withdrawn from {url}" in out_text
        code, _, _ = caducee(capsys, "directory", "lookup", "-d", url, "-p", "10000000001")
        assert code != 0
    finally:
        server.remove()


# -- defects 5-8: CA creation and operator CA controls ------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--name", "N" * 65], "CA name is 65 characters long; X.509 allows at most 64"),
        (["--name", ""], "CA name is empty"),
        (["--name", "X", "--country", "FRA"], "country 'FRA' must be a two-letter"),
        (["--name", "X", "--crl-days", "-3"], r"--crl-days) must be a positive number"),
        (["--name", "X", "--days", "0"], "--days) must be a positive number of days, got 0"),
        (["--name", "X", "--crl-url", "not a url"], "CRL URL 'not a url' contains spaces"),
    ],
)
def test_init_refused_creates_nothing(
    setup: Setup, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    target = setup.base / "op9"
    args = ["ca", "init", "--ca", str(target), "--crl-url", "http://x/c.crl",
            "--pass-source", str(setup.pw), *extra]  # fmt: skip
    if extra.count("--crl-url") == 1:
        args[args.index("--crl-url") : args.index("--crl-url") + 2] = []
    code, _, err = caducee(capsys, *args)
    assert code == 2, err
    assert message in err
    assert "internal error" not in err
    assert not target.exists()


def test_sub_ca_under_pathlen_zero(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = caducee(
        capsys, "ca", "init", "--ca", str(setup.base / "op11"), "--name", "Op 11",
        "--crl-url", "http://x/op11.crl", "--parent", str(setup.op1),
        "--parent-pass-source", str(setup.pw), "--pass-source", str(setup.pw),
    )  # fmt: skip
    assert code == 8
    assert "Opérateur 1 CA has path length constraint 0" in err
    assert not (setup.base / "op11").exists()


def test_certify_controls(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    person = setup.csr("person.csr", x509.Name([
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "p@op1.test"),
        x509.NameAttribute(NameOID.COMMON_NAME, "P"),
    ]))  # fmt: skip
    certify = [
        "ca", "certify", "--ca", str(setup.root), "--pass-source", str(setup.pw),
        "--csr", str(person), "--days", "365", "--out", str(setup.base / "x.pem"),
    ]  # fmt: skip
    code, _, err = caducee(capsys, *certify)
    assert code == 8 and "looks like a professional's request" in err
    assert not (setup.base / "x.pem").exists()
    code, out, err = caducee(capsys, *certify, "--any-subject")
    assert code == 0, err
    assert "certified" in out
    code, _, err = caducee(capsys, *certify, "--any-subject")
    assert code == 8 and "this key is already certified" in err


# -- defect 10, CA items ------------------------------------------------------------


def test_missing_and_pending_ca(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = caducee(capsys, "ca", "crl", "--ca", str(setup.base / "nodir"),
                           "--pass-source", str(setup.pw))  # fmt: skip
    assert code == 2 and "no such CA directory" in err and "token" not in err
    code, _, err = caducee(
        capsys, "ca", "request", "--ca", str(setup.base / "op3"), "--name", "Op 3",
        "--crl-url", "http://x/op3.crl", "--out", str(setup.base / "op3.csr"),
        "--pass-source", str(setup.pw),
    )  # fmt: skip
    assert code == 0, err
    args = setup.issue(setup.csr("x.csr"))
    args[args.index(str(setup.op1))] = str(setup.base / "op3")
    code, _, err = caducee(capsys, *args)
    assert code == 2 and "caducee ca adopt" in err


def test_no_terminal_for_the_passphrase(setup: Setup) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CADUCEE_CA_PASS"}
    proc = subprocess.run(
        [CADUCEE, "ca", "crl", "--ca", str(setup.op1)], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "GetPassWarning" not in proc.stderr
    assert "no terminal to ask on; give --pass-source FILE or set CADUCEE_CA_PASS" in proc.stderr


def test_world_readable_passphrase_file(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.pw.chmod(0o644)
    code, _, err = caducee(capsys, "ca", "crl", "--ca", str(setup.op1),
                           "--pass-source", str(setup.pw))  # fmt: skip
    assert code == 0, err
    assert f"passphrase file {setup.pw} is readable by other users" in err


def test_port_out_of_range(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = caducee(capsys, "ca", "serve", "--ca", str(setup.op1), "--port", "99999")
    assert code == 2
    assert "99999" in err and "internal error" not in err


def test_issue_days_negative(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = caducee(capsys, *setup.issue(setup.csr("d.csr"), "--days", "-1"))
    assert code == 2 and "must be a positive number of days, got -1" in err
    given = setup.issue(setup.csr("g.csr"))
    given[given.index("Claire")] = "W\nX"
    code, _, err = caducee(capsys, *given)
    assert code == 2 and "given name contains a control or invisible character (U+000A)" in err
    assert _records(setup.op1) == []


def test_check_at_reports_the_end_entity_expiry(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    out = setup.base / "c.pem"
    code, _, err = caducee(capsys, *setup.issue(setup.csr("c.csr"), "--out", str(out)))
    assert code == 0, err
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    (setup.base / "root.pem").write_bytes((setup.root / "ca.pem").read_bytes())
    code, _, err = caducee(
        capsys, "ca", "check", str(out), "--purpose", "signature", "--trust",
        str(setup.base / "root.pem"), "--untrusted", str(setup.op1 / "ca.pem"),
        "--at", "2060-01-01T00:00:00Z",
    )  # fmt: skip
    assert code == 4
    assert (
        f"certificate of Claire Martin (10000000001) expired on "
        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    ) in err


def test_help_names_every_command() -> None:
    from caducee.cli.ca import group

    assert group.help is not None
    for name in group.commands:
        assert name in group.help, name


def test_serve_counts_what_it_lists(setup: Setup) -> None:
    env = {**os.environ, "CADUCEE_CA_PASS": PASS}
    proc = subprocess.Popen(
        [CADUCEE, "ca", "serve", "--ca", str(setup.root), "--ca", str(setup.op1), "--port", "0",
         "--ocsp", "--renew-crls"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    lines: list[str] = []
    received: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None

    def read() -> None:
        for text in proc.stderr or []:
            received.put(text)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        while not lines or not lines[-1].startswith("CRLs are renewed"):
            try:
                line = received.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"ca serve stopped printing: {lines}")
            lines.append(line.rstrip("\n"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        reader.join(timeout=20)
        proc.stderr.close()
    serving = next(line for line in lines if line.startswith("serving "))
    listed = [line for line in lines if line.startswith("  http")]
    assert serving.startswith(f"serving {len(listed)} paths on ")
    assert any("/ocsp/op1" in line for line in listed)


def test_list_serials_even_length(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        code, _, err = caducee(
            capsys, *setup.issue(setup.csr(f"{i}.csr"), email=f"u{i}@op1.test")[:-2],
            "--purpose", "encryption",
        )  # fmt: skip
        assert code == 0, err
    code, out, _ = caducee(capsys, "ca", "list", "--ca", str(setup.op1))
    serials = [line.split()[0] for line in out.splitlines()]
    assert len(serials) == 3
    assert all(len(s) % 2 == 0 and s == s.upper() for s in serials)
