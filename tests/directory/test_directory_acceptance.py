"""Defects found by the acceptance review of ``caducee directory`` (2026-11-29), one test each.

#3  withdrawing a certificate whose issuer name is not plain ASCII (LDAP: slapd's
    certificateExactMatch never matches such issuers);
#9  ``directory serve`` logging a refused POST's body ("Bad request syntax (...)") and a 400;
#10 SQLite folders created by a lookup, unknown federation keys, serial case, Greek names.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import time
import urllib.request

import ldap3  # after conftest, which imports it with its deprecation warnings silenced
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caducee import devpki
from caducee.cli.directory import group
from caducee.directory import slapd
from caducee.directory.api import Directory, DirectoryUnavailableError
from caducee.directory.federation import load_config, load_federation
from caducee.directory.ldap import LdapDirectory
from caducee.directory.slapd import free_port
from caducee.directory.sqlite import SqliteDirectory
from caducee.errors import ConfigError
from caducee.serials import format_serial, parse_serial

#: issuer names that broke (non-ASCII, escaped spaces) or could break (DN specials) withdrawal
CA_NAMES = [
    "Opérateur 1",
    "Ελληνική Αρχή Πιστοποίησης",
    "Op, 1",
    "Op + 1",
    'Op "1"',
    "Op \\ 1",
    "#1 ; <op> = x",
    " spaced ",
]


def _cert(
    ca: devpki.TestCA,
    email: str,
    *,
    name: str,
    serial: int | None = None,
    surname: str | None = None,
    org: str = devpki.TEST_ORG,
) -> x509.Certificate:
    """A signature certificate (P-256) with a chosen serial and a Unicode subject."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    attrs = [
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ]
    if surname:
        attrs.append(x509.NameAttribute(NameOID.SURNAME, surname))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def cas() -> dict[str, devpki.TestCA]:
    return {name: devpki.make_ca(name, kind="p256") for name in CA_NAMES}


def _pem(path: pathlib.Path, *certs: x509.Certificate) -> str:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return str(path)


# --- #3: withdrawal whatever the issuer's name -------------------------------------------------


@pytest.mark.parametrize("ca_name", CA_NAMES)
def test_withdraw_by_certificate_whatever_the_issuer_name(
    backend: Directory, cas: dict[str, devpki.TestCA], ca_name: str
) -> None:
    ca = cas[ca_name]
    kept = _cert(ca, "eleni@op1.test", name="Eleni K")
    gone = _cert(ca, "eleni@op1.test", name="Eleni K")
    backend.publish(kept)
    backend.publish(gone)
    assert backend.withdraw(gone) == 1
    (entry,) = backend.lookup(email="eleni@op1.test").entries
    assert entry.certificates == (kept,)
    assert backend.withdraw(gone) == 0  # already gone: nothing more
    assert backend.withdraw(kept) == 1
    assert backend.lookup(email="eleni@op1.test").entries == ()


@pytest.mark.slapd
def test_cli_withdraw_from_ldap_with_an_accented_issuer(
    slapd_op1: slapd.Slapd,
    ldap_op1: LdapDirectory,
    cas: dict[str, devpki.TestCA],
    tmp_path: pathlib.Path,
) -> None:
    cert = _cert(cas["Opérateur 1"], "c.martin@op1.test", name="Claire Martin")
    ldap_op1.publish(cert)
    password = tmp_path / "pw"
    password.write_text(slapd_op1.password)
    url = f"{slapd_op1.url}/{slapd_op1.people_dn}"
    args = ["withdraw", "-d", url, "--bind-dn", slapd_op1.root_dn, "--password-file"]
    result = CliRunner().invoke(group, [*args, str(password), _pem(tmp_path / "c.pem", cert)])
    assert result.exit_code == 0, result.output
    assert "withdrew 1 certificate(s)" in result.output
    # straight from slapd, not through our reading of it
    conn = ldap3.Connection(ldap3.Server(slapd_op1.url), auto_bind=True)
    conn.search(slapd_op1.people_dn, "(mail=c.martin@op1.test)", attributes=["mail"])
    assert conn.entries == []
    conn.unbind()


# --- #9: the HTTP server logs no request content -----------------------------------------------


def _serve(db: pathlib.Path, token: pathlib.Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "caducee.cli.main", "directory", "serve", "-d", f"sqlite://{db}"]
    cmd += ["--port", str(port), "--admin-token-file", str(token)]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate(timeout=10)
    pytest.fail(f"directory serve did not start: {err.decode()[-400:]}")


def test_refused_post_is_read_and_nothing_of_it_is_logged(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("op-token\n")
    port = free_port()
    proc = _serve(tmp_path / "d.sqlite", token, port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        secret = json.dumps({"email": "eleni@op1.example"})
        for path, status in (("/v1/withdraw", 403), ("/v1/nowhere", 404)):
            conn.request("POST", path, body=secret, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == status
            response.read()
            # the same connection goes on with the next request, not with the body
            conn.request("GET", "/v1/health")
            health = conn.getresponse()
            assert health.status == 200, health.read()
            health.read()
        conn.request("GET", "/v1/entries/eleni@op1.example/certificates/00ff.der")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    log = err.decode()
    assert "POST /v1/withdraw 403" in log
    assert "GET /v1/entries/<e-mail>/certificates/<sha256>.der 404" in log
    for leak in ("eleni", "Bad request", " 400"):
        assert leak not in log, log


def test_log_routes_carry_no_address() -> None:
    from caducee.directory.http import _route

    assert _route("/v1/lookup?email=a@b.test") == "/v1/lookup"
    assert _route("/a@b.test") == "<other>"
    assert _route("/v1/entries/a@b.test/certificates/ab.der").count("@") == 0


# --- #10: SQLite creates no folder, and nothing at all on lookup -------------------------------


def test_lookup_creates_nothing(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "x.sqlite"
    result = CliRunner().invoke(group, ["lookup", "-d", f"sqlite://{missing}", "-e", "a@b.test"])
    assert isinstance(result.exception, DirectoryUnavailableError)
    assert "no directory database at" in str(result.exception)
    assert not (tmp_path / "nonexistent").exists()
    flat = tmp_path / "x.sqlite"
    result = CliRunner().invoke(group, ["lookup", "-d", f"sqlite://{flat}", "-e", "a@b.test"])
    assert "no directory database at" in str(result.exception)
    assert list(tmp_path.iterdir()) == []
    with (
        SqliteDirectory(flat, create=False) as directory,
        pytest.raises(DirectoryUnavailableError, match="no directory database at"),
    ):
        directory.lookup(email="a@b.test")
    assert list(tmp_path.iterdir()) == []


def test_publish_creates_the_file_but_not_its_folder(
    tmp_path: pathlib.Path, cas: dict[str, devpki.TestCA]
) -> None:
    pem = _pem(tmp_path / "c.pem", _cert(cas["Op, 1"], "p@op1.test", name="P"))
    missing = tmp_path / "nonexistent" / "x.sqlite"
    result = CliRunner().invoke(group, ["publish", "-d", f"sqlite://{missing}", pem])
    assert isinstance(result.exception, DirectoryUnavailableError)
    assert "no directory database at" in str(result.exception)
    assert "does not exist" in str(result.exception)
    assert not missing.parent.exists()
    result = CliRunner().invoke(group, ["publish", "-d", f"sqlite://{tmp_path / 'x.sqlite'}", pem])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.sqlite").is_file()
    result = CliRunner().invoke(
        group, ["withdraw", "-d", f"sqlite://{tmp_path / 'x.sqlite'}", "--email", "q@op1.test"]
    )
    assert "nothing to withdraw" in str(result.exception)


# --- #10: federation configuration keys --------------------------------------------------------


def test_unknown_federation_keys_are_named(tmp_path: pathlib.Path) -> None:
    op = {"name": "local", "url": str(tmp_path / "d.sqlite")}
    with pytest.raises(ConfigError, match=r"unknown key 'ttll' \(did you mean 'ttl'\?\)"):
        load_federation({"ttll": 3, "operators": [op]})
    with pytest.raises(ConfigError, match=r"unknown key 'ttll' \(did you mean 'ttl'\?\)"):
        load_federation({"ttll": 3})
    with pytest.raises(ConfigError, match=r"operator #1: unknown key 'urll'.*'url'"):
        load_federation({"operators": [{"name": "x", "urll": "ldap://h/dc=x"}]})
    with pytest.raises(ConfigError, match="'ttl' must be a number"):
        load_federation({"ttl": "soon", "operators": [op]})
    conf = tmp_path / "fed.toml"
    conf.write_text("[directory]\nttll = 3\n")
    result = CliRunner().invoke(group, ["lookup", "--config", str(conf), "-e", "a@b.test"])
    assert isinstance(result.exception, ConfigError)
    assert "unknown key 'ttll' (did you mean 'ttl'?)" in str(result.exception)
    # a federation listing a database not created yet starts, and reports that operator
    with (
        load_federation(load_config(_fed(tmp_path))) as federation,
        pytest.raises(DirectoryUnavailableError, match="no directory database at"),
    ):
        federation.lookup(email="a@b.test")
    assert not (tmp_path / "d.sqlite").exists()


def _fed(tmp_path: pathlib.Path) -> pathlib.Path:
    conf = tmp_path / "ok.toml"
    conf.write_text(f'[[directory.operators]]\nname = "l"\nurl = "{tmp_path / "d.sqlite"}"\n')
    return conf


# --- #10: serials printed as the CA prints them ------------------------------------------------


def test_format_serial_is_openssl_style() -> None:
    assert format_serial(0x66A1B2C) == "066A1B2C"
    assert format_serial(0xABCD) == "ABCD"
    assert format_serial(0) == "00"
    assert parse_serial("06:6a:1b:2c") == 0x66A1B2C
    with pytest.raises(ValueError, match="hexadecimal"):
        parse_serial("0x12")


def test_lookup_prints_serials_upper_case_with_leading_zero(
    tmp_path: pathlib.Path, cas: dict[str, devpki.TestCA]
) -> None:
    serial = 0x66A0FFEE1234ABCDE  # odd number of hex digits
    cert = _cert(cas["Op + 1"], "s@op1.test", name="S", serial=serial)
    url = f"sqlite://{tmp_path / 'd.sqlite'}"
    assert (
        CliRunner().invoke(group, ["publish", "-d", url, _pem(tmp_path / "s.pem", cert)]).exit_code
        == 0
    )
    result = CliRunner().invoke(group, ["lookup", "-d", url, "-e", "s@op1.test"])
    assert result.exit_code == 0, result.output
    assert "serial 066A0FFEE1234ABCDE " in result.output
    result = CliRunner().invoke(group, ["lookup", "-d", url, "-e", "s@op1.test", "--json"])
    assert json.loads(result.output)["entries"][0]["certificates"][0]["serial"] == (
        "066A0FFEE1234ABCDE"
    )
    result = CliRunner().invoke(group, ["withdraw", "-d", url, "--serial", "066a0ffee1234abcde"])
    assert result.exit_code == 0, result.output


# --- #10: names in any case, in any script -----------------------------------------------------


@pytest.mark.parametrize(
    "asked", ["ελένη παπαδοπούλου", "ΕΛΈΝΗ ΠΑΠΑΔΟΠΟΎΛΟΥ", "Ελένη Παπαδοπούλου", "ΟΔΥΣΣΈΑΣ"]
)
def test_greek_names_match_in_any_case(
    backend: Directory, cas: dict[str, devpki.TestCA], asked: str
) -> None:
    ca = cas["Ελληνική Αρχή Πιστοποίησης"]
    backend.publish(
        _cert(
            ca,
            "eleni@op1.test",
            name="Ελένη Παπαδοπούλου",
            surname="Οδυσσέας",
            org="Νοσοκομείο Αθηνών",
        )
    )
    found = backend.lookup(name=asked).entries
    assert [e.email for e in found] == ["eleni@op1.test"]
    by_org = backend.lookup(organisation="ΝΟΣΟΚΟΜΕΊΟ ΑΘΗΝΏΝ").entries
    assert [e.email for e in by_org] == ["eleni@op1.test"]


def test_older_sqlite_file_is_upgraded_for_unicode_names(
    tmp_path: pathlib.Path, cas: dict[str, devpki.TestCA]
) -> None:
    path = tmp_path / "old.sqlite"
    cert = _cert(cas["Opérateur 1"], "z@op1.test", name="Ζωή Άλφα")
    with SqliteDirectory(path) as directory:
        directory.publish(cert)
    db = sqlite3.connect(path)  # back to the layout without folded columns
    for key in ("common_name_key", "surname_key", "given_name_key", "organisation_key"):
        db.execute(f"DROP INDEX entries_{key}")
        db.execute(f"ALTER TABLE entries DROP COLUMN {key}")
    db.commit()
    db.close()
    with SqliteDirectory(path) as directory:
        assert [e.email for e in directory.lookup(name="ζωή άλφα").entries] == ["z@op1.test"]
