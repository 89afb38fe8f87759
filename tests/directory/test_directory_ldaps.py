"""The LDAP directory over TLS, against a real slapd serving ldaps:// (and StartTLS).

The test PKI is an operator-like CA issuing the server certificate; every refusal is checked for
a one-line caducee error that names the cause, never an ldap3 traceback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import pathlib
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caducee.directory import slapd
from caducee.directory.api import DirectoryUnavailableError
from caducee.directory.federation import load_config, load_federation, open_directory
from caducee.directory.ldap import DirectoryTlsError, LdapDirectory, ldap3
from caducee.errors import ConfigError, DirectoryError
from tests.conftest import pem_key

from .conftest import wipe

pytestmark = pytest.mark.slapd

# --- test PKI: a CA, a server certificate for 127.0.0.1, one for another name, another CA -----


@dataclasses.dataclass(frozen=True)
class TlsPki:
    ca_file: pathlib.Path  # the operator's CA: the ca_file to trust
    other_ca_file: pathlib.Path  # a CA that did not issue the server certificates
    cert: pathlib.Path  # server certificate for 127.0.0.1 and localhost, issued by ca_file
    key: pathlib.Path
    wrong_name_cert: pathlib.Path  # issued by ca_file, but for ldap.elsewhere.test only
    wrong_name_key: pathlib.Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _server(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], names: list[x509.GeneralName]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("caducee test directory"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_cert(path: pathlib.Path, cert: x509.Certificate) -> pathlib.Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> pathlib.Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem_key(key))
    return path


@pytest.fixture(scope="module")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    out = tmp_path_factory.mktemp("ldaps-pki")
    ca = _ca("caducee Test Directory CA")
    other_ca, _ = _ca("caducee Other CA")
    loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    good, good_key = _server(ca, loopback)
    wrong, wrong_key = _server(ca, [x509.DNSName("ldap.elsewhere.test")])
    return TlsPki(
        ca_file=_write_cert(out / "ca.pem", ca[0]),
        other_ca_file=_write_cert(out / "other-ca.pem", other_ca),
        cert=_write_cert(out / "server.pem", good),
        key=_write_key(out / "server.key", good_key),
        wrong_name_cert=_write_cert(out / "wrong-name.pem", wrong),
        wrong_name_key=_write_key(out / "wrong-name.key", wrong_key),
    )


def _start(
    request: pytest.FixtureRequest, suffix: str, cert: pathlib.Path | None, key: pathlib.Path | None
) -> slapd.Slapd:
    if not slapd.available():
        pytest.skip("slapd (with core/cosine/inetorgperson schemas) is not installed")
    server = slapd.Slapd(suffix, tls_cert=cert, tls_key=key)
    request.addfinalizer(server.remove)
    return server.start()


@pytest.fixture(scope="module")
def ldaps_server(request: pytest.FixtureRequest, tls_pki: TlsPki) -> slapd.Slapd:
    return _start(request, "dc=tls,dc=test", tls_pki.cert, tls_pki.key)


@pytest.fixture(scope="module")
def wrong_name_server(request: pytest.FixtureRequest, tls_pki: TlsPki) -> slapd.Slapd:
    return _start(request, "dc=tls,dc=test", tls_pki.wrong_name_cert, tls_pki.wrong_name_key)


@pytest.fixture(scope="module")
def plain_server(request: pytest.FixtureRequest) -> slapd.Slapd:
    """A slapd without any TLS configured (refuses StartTLS)."""
    return _start(request, "dc=plain,dc=test", None, None)


@pytest.fixture
def ldaps_admin(ldaps_server: slapd.Slapd, tls_pki: TlsPki) -> Iterator[LdapDirectory]:
    """Write access over ldaps://, trusting the test CA; the server is emptied afterwards."""
    directory = LdapDirectory(
        ldaps_server.ldaps_url,
        ldaps_server.people_dn,
        bind_dn=ldaps_server.root_dn,
        password=ldaps_server.password,
        name="op-tls",
        timeout=5,
        ca_file=str(tls_pki.ca_file),
    )
    yield directory
    directory.close()
    wipe(ldaps_server)


def _reader(
    url: str, base_dn: str, ca_file: pathlib.Path | None, *, starttls: bool = False
) -> LdapDirectory:
    """An anonymous reader named "op-tls" with a 3 s timeout."""
    ca = str(ca_file) if ca_file else None
    return LdapDirectory(url, base_dn, name="op-tls", timeout=3, ca_file=ca, starttls=starttls)


def _refusal(directory: LdapDirectory) -> DirectoryTlsError:
    """The TLS error of a lookup: asked twice, because after a failed connection ldap3 says only
    "invalid server address" for that address; both must name the real cause."""
    try:
        errors = []
        for _ in range(2):
            with pytest.raises(DirectoryTlsError) as caught:
                directory.lookup(email="alice@op1.test")
            errors.append(caught.value)
    finally:
        directory.close()
    first, second = errors
    assert str(first) == str(second)
    _assert_one_clear_line(str(first))
    return first


def _assert_one_clear_line(text: str) -> None:
    assert "\n" not in text
    assert text.startswith("op-tls: ")
    for noise in ("invalid server address", "LDAPSocket", "Traceback", "_ssl.c", "(('"):
        assert noise not in text


# --- the server side: slapd with TLS -----------------------------------------------------------


def test_slapd_serves_ldaps_with_a_key_file_kept_0600(ldaps_server, tls_pki) -> None:
    assert ldaps_server.ldaps_url == f"ldaps://127.0.0.1:{ldaps_server.ldaps_port}"
    assert ldaps_server.ldaps_port != ldaps_server.port
    assert (tls_pki.key.stat().st_mode & 0o777) == 0o600
    # the plain URL still works as before
    conn = ldap3.Connection(ldap3.Server(ldaps_server.url), auto_bind=True)
    assert conn.search(ldaps_server.suffix, "(objectClass=dcObject)", attributes=[])
    conn.unbind()


def test_slapd_tls_options_are_checked() -> None:
    if not slapd.available():
        pytest.skip("slapd (with core/cosine/inetorgperson schemas) is not installed")
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        slapd.Slapd(tls_cert="/nonexistent/cert.pem")
    with pytest.raises(slapd.SlapdError, match=r"TLS key file .*missing.key is missing"):
        slapd.Slapd(tls_cert=__file__, tls_key="/nonexistent/missing.key")
    server = slapd.Slapd()
    try:
        with pytest.raises(slapd.SlapdError, match="no TLS certificate"):
            _ = server.ldaps_url
    finally:
        server.remove()


def test_slapd_reports_an_unusable_tls_key_at_start(tls_pki) -> None:
    if not slapd.available():
        pytest.skip("slapd (with core/cosine/inetorgperson schemas) is not installed")
    server = slapd.Slapd("dc=bad,dc=test", tls_cert=tls_pki.key, tls_key=tls_pki.cert)  # swapped
    try:
        with pytest.raises(slapd.SlapdError, match=r"slapd exited at start: TLS: could not use"):
            server.start()
    finally:
        server.remove()


# --- the client side: publish and look up over ldaps:// -----------------------------------------


def test_publish_and_lookup_over_ldaps(ldaps_admin, ldaps_server, tls_pki, pki) -> None:
    alice = pki.alice
    ldaps_admin.publish(alice.signing.certificate)
    ldaps_admin.publish(alice.encryption.certificate, professional_id="10001234567")
    reader = _reader(ldaps_server.ldaps_url, ldaps_server.people_dn, tls_pki.ca_file)
    try:
        (entry,) = reader.lookup(email="alice@op1.test").entries
    finally:
        reader.close()
    assert set(entry.certificates) == {alice.signing.certificate, alice.encryption.certificate}
    assert entry.professional_id == "10001234567"
    # the entry really is in this slapd (read back over plain LDAP, without caducee)
    conn = ldap3.Connection(ldap3.Server(ldaps_server.url), auto_bind=True)
    conn.search(ldaps_server.people_dn, "(mail=alice@op1.test)", attributes=["employeeNumber"])
    assert [e.entry_dn for e in conn.entries] == [f"mail=alice@op1.test,{ldaps_server.people_dn}"]
    conn.unbind()


def test_the_ldaps_port_speaks_only_tls(ldaps_server) -> None:
    """ldap:// to the ldaps port: the server hangs up; the error hints at ldaps://."""
    url = f"ldap://127.0.0.1:{ldaps_server.ldaps_port}"
    directory = LdapDirectory(url, ldaps_server.people_dn, name="op-tls", timeout=3)
    try:
        with pytest.raises(DirectoryUnavailableError, match="use ldaps://") as caught:
            directory.lookup(email="alice@op1.test")
    finally:
        directory.close()
    _assert_one_clear_line(str(caught.value))


# --- refusals ------------------------------------------------------------------------------------


def test_server_certificate_from_another_ca_is_not_trusted(ldaps_server, tls_pki) -> None:
    directory = _reader(ldaps_server.ldaps_url, ldaps_server.people_dn, tls_pki.other_ca_file)
    error = _refusal(directory)
    assert "server certificate not trusted" in str(error)
    assert "check ca_file" in str(error)
    assert error.needs_fixing


def test_without_ca_file_only_the_system_cas_are_trusted(ldaps_server) -> None:
    directory = _reader(ldaps_server.ldaps_url, ldaps_server.people_dn, None)
    assert "server certificate not trusted" in str(_refusal(directory))


def test_server_certificate_for_another_host_is_refused(wrong_name_server, tls_pki) -> None:
    """Same CA, same chain as the good server: only the name differs."""
    directory = _reader(wrong_name_server.ldaps_url, wrong_name_server.people_dn, tls_pki.ca_file)
    error = _refusal(directory)
    assert "server certificate is not valid for '127.0.0.1'" in str(error)


@pytest.mark.timeout(60)  # the server hangs up at once; never the 300 s default
def test_ldaps_to_a_plain_ldap_port_fails_clearly(ldaps_server, tls_pki) -> None:
    url = f"ldaps://127.0.0.1:{ldaps_server.port}"
    directory = _reader(url, ldaps_server.people_dn, tls_pki.ca_file)
    error = _refusal(directory)
    assert "does not speak TLS on this port" in str(error)


@pytest.mark.timeout(60)
def test_a_frozen_ldaps_server_gives_no_answer_not_a_tls_error(request, tls_pki) -> None:
    server = _start(request, "dc=frozen,dc=test", tls_pki.cert, tls_pki.key)
    directory = _reader(server.ldaps_url, server.people_dn, tls_pki.ca_file)
    server.pause()
    try:
        with pytest.raises(
            DirectoryUnavailableError, match=r"no answer \(silent for 3s\)"
        ) as caught:
            directory.lookup(email="alice@op1.test")
    finally:
        server.resume()
        directory.close()
    assert not isinstance(caught.value, DirectoryTlsError)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read it (No such file or directory)"),
        (b"not a certificate\n", "no readable certificate (PEM, DER or PKCS#7 expected)"),
    ],
)
def test_unusable_ca_file_is_reported_when_the_directory_is_made(tmp_path, content, why) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_bytes(content)
    with pytest.raises(DirectoryError) as caught:
        LdapDirectory("ldaps://127.0.0.1:1", "dc=x", name="op-tls", ca_file=str(ca_file))
    assert str(caught.value) == f"op-tls: CA file (ca_file) {ca_file}: {why}"


# --- StartTLS ----------------------------------------------------------------------------------


def test_starttls_on_the_plain_port(ldaps_admin, ldaps_server, tls_pki, pki) -> None:
    ldaps_admin.publish(pki.alice.encryption.certificate)
    reader = _reader(ldaps_server.url, ldaps_server.people_dn, tls_pki.ca_file, starttls=True)
    try:
        (entry,) = reader.lookup(email="alice@op1.test").entries
    finally:
        reader.close()
    assert entry.certificates == (pki.alice.encryption.certificate,)


def test_starttls_checks_the_certificate(ldaps_server, tls_pki) -> None:
    directory = _reader(
        ldaps_server.url, ldaps_server.people_dn, tls_pki.other_ca_file, starttls=True
    )
    assert "server certificate not trusted" in str(_refusal(directory))


def test_starttls_refused_by_a_server_without_tls(plain_server, tls_pki) -> None:
    directory = _reader(plain_server.url, plain_server.people_dn, tls_pki.ca_file, starttls=True)
    assert "the server refused StartTLS" in str(_refusal(directory))


def test_starttls_with_ldaps_is_refused(tls_pki) -> None:
    with pytest.raises(DirectoryError, match="starttls is for ldap:// URLs"):
        LdapDirectory("ldaps://127.0.0.1:1", "dc=x", starttls=True)


# --- through federation's configuration tables -------------------------------------------------


def _write_config(path: pathlib.Path, url: str, ca_file: pathlib.Path) -> pathlib.Path:
    path.write_text(
        "[directory]\ntimeout = 5\n\n[[directory.operators]]\n"
        f'name = "op-tls"\nurl = "{url}"\nca_file = "{ca_file}"\n',
        encoding="utf-8",
    )
    return path


def test_federation_config_with_ldaps_and_ca_file(
    ldaps_admin, ldaps_server, tls_pki, pki, tmp_path
) -> None:
    ldaps_admin.publish(pki.alice.encryption.certificate)
    url = f"{ldaps_server.ldaps_url}/{ldaps_server.people_dn}"
    config = _write_config(tmp_path / "caducee.toml", url, tls_pki.ca_file)
    with load_federation(load_config(config), base=tmp_path) as federation:
        result = federation.lookup(email="alice@op1.test")
    assert [(e.email, e.source) for e in result.entries] == [("alice@op1.test", "op-tls")]
    assert result.entries[0].certificates == (pki.alice.encryption.certificate,)
    assert result.problems == ()


def test_federation_config_with_the_wrong_ca_file(ldaps_server, tls_pki, tmp_path) -> None:
    url = f"{ldaps_server.ldaps_url}/{ldaps_server.people_dn}"
    config = _write_config(tmp_path / "caducee.toml", url, tls_pki.other_ca_file)
    with (
        load_federation(load_config(config), base=tmp_path) as federation,
        pytest.raises(DirectoryUnavailableError) as caught,
    ):
        federation.lookup(email="alice@op1.test")
    text = str(caught.value)
    assert "op-tls unavailable (op-tls: TLS: server certificate not trusted" in text
    assert "\n" not in text


def test_open_directory_table_with_ldaps_and_ca_file(ldaps_server, tls_pki) -> None:
    table = {
        "name": "op-tls",
        "url": f"{ldaps_server.ldaps_url}/{ldaps_server.people_dn}",
        "ca_file": str(tls_pki.ca_file),
    }
    directory = open_directory(table)
    try:
        assert isinstance(directory, LdapDirectory)
        assert directory.lookup(email="nobody@op1.test").entries == ()
    finally:
        directory.close()
    directory = open_directory(table | {"ca_file": str(tls_pki.other_ca_file)})
    assert isinstance(directory, LdapDirectory)
    assert "server certificate not trusted" in str(_refusal(directory))


def test_federation_config_starttls_with_a_ca_file_relative_to_the_config(
    ldaps_admin, ldaps_server, tls_pki, pki, tmp_path
) -> None:
    ldaps_admin.publish(pki.alice.encryption.certificate)
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "op-ca.pem").write_bytes(tls_pki.ca_file.read_bytes())
    (folder / "caducee.toml").write_text(
        "[[directory.operators]]\n"
        f'name = "op-tls"\nurl = "{ldaps_server.url}/{ldaps_server.people_dn}"\n'
        'starttls = true\nca_file = "op-ca.pem"\n',
        encoding="utf-8",
    )
    with load_federation(load_config(folder / "caducee.toml"), base=folder) as federation:
        result = federation.lookup(email="alice@op1.test")
    assert [e.email for e in result.entries] == ["alice@op1.test"] and result.problems == ()


def test_federation_config_starttls_must_be_a_boolean(tmp_path) -> None:
    config = tmp_path / "caducee.toml"
    config.write_text(
        '[[directory.operators]]\nurl = "ldap://127.0.0.1:1/dc=x"\nstarttls = "yes"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="'starttls' must be true or false"):
        load_federation(load_config(config), base=tmp_path)
