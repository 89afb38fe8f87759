"""A certificate on hold (lost card) released again: the CA, its CRLs, its index, the directory.

The CRLs are read by OpenSSL (``openssl crl -text``) and used by ``openssl verify -crl_check``;
the directory is a real SQLite directory (and slapd when installed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from caducee.cli.main import main
from caducee.directory.sqlite import SqliteDirectory
from caducee.errors import KeyStoreError, UsageError
from caducee.pki import (
    CAConfig,
    CertificateAuthority,
    ProfessionalIdentity,
    TrustStore,
    validate_certificate,
)
from caducee.pki.ca import generate_ca_key
from caducee.pki.errors import CertificateRevokedError
from caducee.pki.publish import DirectoryPublisher
from caducee.serials import format_serial

PASS = "hold and release"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

MARTIN = ProfessionalIdentity(
    given_name="Claire", surname="Martin", email="dr.martin@op1.test",
    professional_id="10001234567", profession="Médecin généraliste",
    organisation="Cabinet du Parc",
)  # fmt: skip


@dataclasses.dataclass
class Setup:
    base: pathlib.Path
    ca: CertificateAuthority
    cert: x509.Certificate
    cert_file: pathlib.Path

    @property
    def serial(self) -> str:
        return format_serial(self.cert.serial_number)


@pytest.fixture
def setup(tmp_path: pathlib.Path) -> Setup:
    """An operator CA (its own root here: one level keeps openssl's command line short) that
    issued Dr Martin's signature certificate, with real time (openssl verifies at now)."""
    config = CAConfig(name="Operator 1 CA", crl_url="http://127.0.0.1:9/op1.crl")
    ca = CertificateAuthority.init_root(
        tmp_path / "op1", config, key=generate_ca_key("p256"), passphrase=PASS.encode(),
        organisation="Operator 1", country="FR",
    )  # fmt: skip
    ca.crl()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), MARTIN, "signature")
    cert_file = tmp_path / "martin.pem"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    return Setup(tmp_path, ca, cert, cert_file)


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    proc = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {args[0]} failed: {proc.stderr[-1500:]}")
    return proc


def crl_text(s: Setup) -> str:
    """``openssl crl -text`` of the CA's current CRL, its signature checked by openssl."""
    proc = openssl(
        "crl", "-in", str(s.ca.store.path / "crl.der"), "-inform", "DER", "-text",
        "-CAfile", str(s.base / "ca.pem"),
    )  # fmt: skip
    assert "verify OK" in proc.stderr + proc.stdout
    return proc.stdout


def crl_number(text: str) -> int:
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if "X509v3 CRL Number" in line)
    return int(lines[index + 1].strip())


def verify(s: Setup) -> subprocess.CompletedProcess[str]:
    """``openssl verify -crl_check`` of Dr Martin's certificate with the CA's current CRL."""
    return openssl(
        "verify", "-crl_check", "-CAfile", str(s.base / "ca.pem"),
        "-CRLfile", str(s.ca.store.path / "crl.pem"), str(s.cert_file), check=False,
    )  # fmt: skip


def listed(text: str, cert: x509.Certificate) -> bool:
    return f"Serial Number: {format_serial(cert.serial_number)}" in text.replace(":\n", ":")


# -- the library -----------------------------------------------------------------------------------


@needs_openssl
def test_hold_then_release_publishes_a_crl_without_it(setup: Setup) -> None:
    s = setup
    assert verify(s).returncode == 0

    s.ca.revoke(s.cert.serial_number, "certificateHold", actor="admin-a")
    held = crl_text(s)
    assert listed(held, s.cert) and "Certificate Hold" in held
    refused = verify(s)
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr

    crl = s.ca.release(s.cert.serial_number, actor="admin-b")
    released = crl_text(s)
    assert crl_number(released) == crl_number(held) + 1
    assert not listed(released, s.cert)
    assert "No Revoked Certificates" in released
    assert "Remove from CRL" not in released  # complete CRLs: the entry simply disappears
    assert crl.get_revoked_certificate_by_serial_number(s.cert.serial_number) is None
    ok = verify(s)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    record = s.ca.store.get(s.cert.serial_number)
    assert (record.status, record.reason, record.revocation_time) == ("valid", None, None)
    events = s.ca.history(s.cert.serial_number)
    assert [(e.action, e.reason, e.actor) for e in events] == [
        ("revoked", "certificateHold", "admin-a"),
        ("released", "certificateHold", "admin-b"),
    ]
    assert events[1].time == crl.last_update_utc
    assert events[0].time <= events[1].time


@needs_openssl
def test_a_hold_can_still_become_final(setup: Setup) -> None:
    s = setup
    s.ca.revoke(s.cert.serial_number, "certificateHold")
    s.ca.revoke(s.cert.serial_number, "keyCompromise")
    text = crl_text(s)
    assert listed(text, s.cert) and "Key Compromise" in text and "Certificate Hold" not in text
    number = crl_number(text)
    with pytest.raises(UsageError, match=r"revoked \(keyCompromise\) on .*any other .* final"):
        s.ca.release(s.cert.serial_number)
    after = crl_text(s)
    assert crl_number(after) == number and listed(after, s.cert)  # nothing issued or changed
    assert s.ca.store.get(s.cert.serial_number).reason == "keyCompromise"
    assert verify(s).returncode != 0
    assert [e.action for e in s.ca.history(s.cert.serial_number)] == ["revoked", "revoked"]


@pytest.mark.parametrize("reason", ["keyCompromise", "superseded", "unspecified"])
def test_only_a_hold_can_be_released(setup: Setup, reason: str) -> None:
    s = setup
    s.ca.revoke(s.cert.serial_number, reason)
    with pytest.raises(UsageError, match=f"was revoked \\({reason}\\)"):
        s.ca.release(s.cert.serial_number)
    assert s.ca.store.get(s.cert.serial_number).status == "revoked"


def test_a_valid_or_unknown_certificate_is_not_released(setup: Setup) -> None:
    s = setup
    with pytest.raises(UsageError, match="is not on hold \\(it is valid\\)"):
        s.ca.release(s.cert.serial_number)
    with pytest.raises(UsageError, match="no certificate with this serial"):
        s.ca.release(0x1234)
    assert s.ca.history() == []


def test_a_hold_is_not_held_again(setup: Setup) -> None:
    """Holding twice would move the hold's date; refused, the first date kept."""
    s = setup
    s.ca.revoke(s.cert.serial_number, "certificateHold")
    first = s.ca.store.get(s.cert.serial_number).revocation_time
    with pytest.raises(UsageError, match="already on hold since"):
        s.ca.revoke(s.cert.serial_number, "certificateHold")
    assert s.ca.store.get(s.cert.serial_number).revocation_time == first


def test_release_needs_the_key_before_changing_anything(setup: Setup) -> None:
    s = setup
    s.ca.revoke(s.cert.serial_number, "certificateHold")
    reader = CertificateAuthority.open(s.ca.store.path)  # no passphrase: no key
    with pytest.raises(KeyStoreError, match="the CA key is not loaded"):
        reader.release(s.cert.serial_number)
    assert s.ca.store.get(s.cert.serial_number).reason == "certificateHold"


def test_index_made_before_the_history_table(setup: Setup) -> None:
    s = setup
    with sqlite3.connect(s.ca.store.path / "index.sqlite") as db:
        db.execute("DROP TABLE history")
    db.close()
    s.ca.revoke(s.cert.serial_number, "certificateHold")
    s.ca.release(s.cert.serial_number)
    assert [e.action for e in s.ca.history()] == ["revoked", "released"]


def test_listeners_withdraw_on_hold_and_publish_again_on_release(setup: Setup) -> None:
    s = setup
    with SqliteDirectory(s.base / "directory.sqlite", create=True) as directory:
        publisher = DirectoryPublisher(directory)
        publisher.issued(s.cert, MARTIN, "signature")
        s.ca.listeners.append(publisher)

        s.ca.revoke(s.cert.serial_number, "certificateHold")
        assert directory.lookup(email=MARTIN.email).entries == ()

        s.ca.release(s.cert.serial_number)
        found = directory.lookup(email=MARTIN.email).entries
        assert [e.signature_certificates for e in found] == [(s.cert,)]
        assert found[0].professional_id == MARTIN.professional_id
        assert found[0].organisation == MARTIN.organisation


def test_a_listener_with_released_is_told_so(setup: Setup) -> None:
    told: list[tuple[str, int]] = []

    class Listener:
        def issued(self, cert: x509.Certificate, identity: object, purpose: str) -> None:
            told.append(("issued", cert.serial_number))

        def revoked(self, cert: x509.Certificate, reason: str) -> None:
            told.append((reason, cert.serial_number))

        def released(self, cert: x509.Certificate) -> None:
            told.append(("released", cert.serial_number))

    s = setup
    s.ca.listeners.append(Listener())
    s.ca.revoke(s.cert.serial_number, "certificateHold")
    s.ca.release(s.cert.serial_number)
    n = s.cert.serial_number
    assert told == [("certificateHold", n), ("released", n)]


# -- the command line ------------------------------------------------------------------------------


Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def ca_cli(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """``caducee ca ARGS --ca <setup's CA>`` through the real entry point: (exit code, output
    and error lines)."""
    for name in ("CADUCEE_CA_PASS", "USER", "LOGNAME"):
        monkeypatch.setenv(name, PASS if name == "CADUCEE_CA_PASS" else "admin-cli")

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            main(["ca", args[0], "--ca", str(setup.ca.store.path), *args[1:]])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


@needs_openssl
def test_cli_release(setup: Setup, ca_cli: Cli) -> None:
    s = setup
    code, out = ca_cli("revoke", s.serial, "--reason", "certificateHold")
    assert code == 0, out
    code, out = ca_cli("revoke", s.serial, "--reason", "certificateHold")
    assert code == 2 and "already on hold since" in out

    code, out = ca_cli("release", s.serial.lower())
    assert code == 0, out
    text = crl_text(s)
    assert out.strip() == f"released {s.serial} from hold; CRL number {crl_number(text)} published"
    assert not listed(text, s.cert)
    assert verify(s).returncode == 0
    assert [e.actor for e in s.ca.history()] == ["admin-cli", "admin-cli"]

    code, out = ca_cli("list", "--json")
    assert '"status": "valid"' in out and '"reason": null' in out

    code, out = ca_cli("release", s.serial)
    assert code == 2 and "is not on hold (it is valid): nothing to release" in out

    code, out = ca_cli("revoke", s.serial, "--reason", "certificateHold")
    assert code == 0, out
    code, out = ca_cli("revoke", s.serial, "--reason", "cessationOfOperation")
    assert code == 0, out
    code, out = ca_cli("release", s.serial)
    assert code == 2
    assert out.strip().splitlines() == [
        f"caducee: error: serial {s.serial} was revoked (cessationOfOperation) on "
        f"{s.ca.store.get(s.cert.serial_number).revocation_time:%Y-%m-%d %H:%M} UTC: only a "
        "certificateHold can be released, any other revocation is final"
    ]
    assert "Cessation Of Operation" in crl_text(s)


def test_cli_release_publishes_again(setup: Setup, ca_cli: Cli) -> None:
    s = setup
    url = f"sqlite:///{s.base / 'directory.sqlite'}"
    with SqliteDirectory(s.base / "directory.sqlite", create=True) as directory:
        DirectoryPublisher(directory).issued(s.cert, MARTIN, "signature")
    code, out = ca_cli("revoke", s.serial, "--reason", "certificateHold", "--publish", url)
    assert code == 0, out
    assert out.strip().endswith(f"withdrawn from {url}")
    with SqliteDirectory(s.base / "directory.sqlite") as directory:
        assert directory.lookup(professional_id=MARTIN.professional_id).entries == ()
    code, out = ca_cli("release", s.serial, "--publish", url)
    assert code == 0, out
    assert out.strip().endswith(f"published; published to {url}")
    with SqliteDirectory(s.base / "directory.sqlite") as directory:
        found = directory.lookup(professional_id=MARTIN.professional_id).entries
        assert [(e.email, e.signature_certificates) for e in found] == [(MARTIN.email, (s.cert,))]
        assert found[0].profession == MARTIN.profession

    # a second run (e.g. after a failed publication) only publishes
    code, out = ca_cli("release", s.serial, "--publish", url)
    assert code == 0, out
    assert f"{s.serial} was already released on" in out and "CRL number" not in out
    assert [e.action for e in s.ca.history()] == ["revoked", "released"]
    # ... but never for a certificate that was not released
    other = s.ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), MARTIN, "encryption")
    code, out = ca_cli("release", format_serial(other.serial_number), "--publish", url)
    assert code == 2 and "is not on hold (it is valid)" in out


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_release_publication_failure_says_what_was_done(setup: Setup, ca_cli: Cli) -> None:
    s = setup
    s.ca.revoke(s.cert.serial_number, "certificateHold")
    token = s.base / "token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    url = f"http://127.0.0.1:{_port()}"  # nothing listens there
    code, out = ca_cli(
        "release", s.serial, "--publish", url, "--token-file", str(token), "--timeout", "2"
    )
    assert code == 6, out
    assert out.startswith(f"caducee: error: released {s.serial} from hold; CRL number ")
    assert f"publishing it to {url} failed: " in out
    assert f"'caducee ca release --ca {s.ca.store.path} {s.serial} --publish {url}' again" in out
    assert s.ca.store.get(s.cert.serial_number).status == "valid"  # the release itself stands


def _csr(tmp: pathlib.Path) -> pathlib.Path:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    path = tmp / "csr.pem"
    path.write_bytes(csr.public_bytes(Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def slapd_server() -> Iterator[object]:
    from caducee.directory import slapd

    if not slapd.available():
        pytest.skip("slapd (with core/cosine/inetorgperson schemas) is not installed")
    server = slapd.Slapd("dc=hold,dc=test")
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.mark.slapd
def test_cli_hold_and_release_with_slapd(setup: Setup, ca_cli: Cli, slapd_server: object) -> None:
    from caducee.directory.ldap import LdapDirectory
    from caducee.directory.slapd import Slapd

    assert isinstance(slapd_server, Slapd)
    s = setup
    password = s.base / "ldap.pass"
    password.write_text(slapd_server.password + "\n")
    password.chmod(0o600)
    url = f"{slapd_server.url}/{slapd_server.people_dn}"
    creds = ["--bind-dn", slapd_server.root_dn, "--password-file", str(password)]
    cert_out = s.base / "petit.pem"
    code, out = ca_cli(
        "issue", "--csr", str(_csr(s.base)), "--purpose", "encryption",
        "--email", "dr.petit@op1.test", "--given-name", "Paul", "--surname", "Petit",
        "--rpps", "10007654321", "--profession", "Médecin", "--org", "Cabinet du Parc",
        "--out", str(cert_out), "--publish", url, *creds,
    )  # fmt: skip
    assert code == 0, out
    cert = x509.load_pem_x509_certificate(cert_out.read_bytes())
    serial = format_serial(cert.serial_number)

    def published() -> list[x509.Certificate]:
        directory = LdapDirectory(
            slapd_server.url, slapd_server.people_dn, bind_dn=slapd_server.root_dn,
            password=slapd_server.password, name="hold",
        )  # fmt: skip
        try:
            entries = directory.lookup(email="dr.petit@op1.test").entries
            return [c for e in entries for c in e.encryption_certificates]
        finally:
            directory.close()

    assert published() == [cert]
    code, out = ca_cli("revoke", serial, "--reason", "certificateHold", "--publish", url, *creds)
    assert code == 0, out
    assert published() == []
    code, out = ca_cli("release", serial, "--publish", url, *creds)
    assert code == 0, out
    assert published() == [cert]


def test_our_validator_follows_the_crls(setup: Setup) -> None:
    """A signature made during the hold is refused with the hold's CRL, accepted with the CRL
    issued at the release (complete CRLs: the release is the entry's absence)."""
    s = setup
    trust = TrustStore([s.ca.certificate])
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    held = s.ca.revoke(s.cert.serial_number, "certificateHold", now=t0)
    during = t0 + dt.timedelta(minutes=1)
    with pytest.raises(CertificateRevokedError):
        validate_certificate(s.cert, purpose="signature", trust=trust, crls=[held], at=during)
    released = s.ca.release(s.cert.serial_number, now=t0 + dt.timedelta(minutes=2))
    result = validate_certificate(
        s.cert, purpose="signature", trust=trust, crls=[released],
        at=t0 + dt.timedelta(minutes=3),
    )  # fmt: skip
    assert result.path[0] == s.cert
    result = validate_certificate(
        s.cert, purpose="signature", trust=trust, crls=[released], at=during,
        at_signing_time=True,
    )  # fmt: skip
    assert result.path[0] == s.cert


def test_release_time_is_the_crl_time(setup: Setup) -> None:
    """An explicit ``now`` (a clock in tests) is used for the CRL and the history alike."""
    s = setup
    t1 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=1)
    s.ca.revoke(s.cert.serial_number, "certificateHold", now=t1)
    crl = s.ca.release(s.cert.serial_number, now=t1 + dt.timedelta(hours=2))
    assert crl.last_update_utc == t1 + dt.timedelta(hours=2)
    assert [e.time for e in s.ca.history()] == [t1, t1 + dt.timedelta(hours=2)]
