"""Two operators queried together: merge, TTL cache, operator down, candidate validation."""

from __future__ import annotations

import pathlib

import pytest
from cryptography import x509

from caducee.directory.api import (
    DirectoryEntry,
    DirectoryUnavailableError,
    ReadOnlyDirectoryError,
    certificate_emails,
)
from caducee.directory.federation import (
    FederatedDirectory,
    load_config,
    load_federation,
    open_directory,
)
from caducee.directory.http import HttpDirectory, start_server
from caducee.directory.ldap import LdapDirectory
from caducee.directory.sqlite import SqliteDirectory
from caducee.errors import ConfigError, TrustError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.slapd
def test_two_slapd_operators_answer_together(ldap_op1, ldap_op2, pki, op2) -> None:
    ldap_op1.publish(pki.alice.encryption.certificate, organisation="Cabinet Martin")
    ldap_op2.publish(op2.erin.encryption.certificate, organisation="CHU Nord")
    ldap_op2.publish(op2.erin.signing.certificate, organisation="CHU Nord")
    with FederatedDirectory([ldap_op1, ldap_op2], timeout=5) as federation:
        erin = federation.lookup(email="erin@op2.test")
        assert [(e.email, e.source) for e in erin.entries] == [("erin@op2.test", "op2")]
        assert erin.entries[0].encryption_certificates == (op2.erin.encryption.certificate,)
        alice = federation.lookup(email="alice@op1.test")
        assert [(e.email, e.source) for e in alice.entries] == [("alice@op1.test", "op1")]
        assert federation.lookup(email="nobody@op1.test").entries == ()
        with pytest.raises(ReadOnlyDirectoryError):
            federation.publish(pki.alice.signing.certificate)


@pytest.mark.slapd
def test_slapd_and_sqlite_operators_with_the_same_person(ldap_op1, sqlite_dir, pki) -> None:
    ldap_op1.publish(pki.alice.signing.certificate)
    sqlite_dir.publish(pki.alice.encryption.certificate)
    with FederatedDirectory([ldap_op1, sqlite_dir]) as federation:
        result = federation.lookup(name="alice")
    assert [e.source for e in result.entries] == ["op1", "sqlite"]  # configuration order
    assert result.entries[0].certificates == (pki.alice.signing.certificate,)
    assert result.entries[1].certificates == (pki.alice.encryption.certificate,)


def test_cache_serves_within_ttl_and_stale_answers_when_an_operator_is_down(
    tmp_path: pathlib.Path, pki, op2
) -> None:
    backend = SqliteDirectory(tmp_path / "op2.sqlite", name="op2-db")
    backend.publish(op2.erin.encryption.certificate)
    server = start_server(backend)
    clock = FakeClock()
    federation = FederatedDirectory(
        [HttpDirectory(server.url, name="op2", timeout=2)],
        ttl=60,
        max_stale=3600,
        timeout=3,
        clock=clock,
    )
    try:
        assert len(federation.lookup(email="erin@op2.test")) == 1
        backend.withdraw(email="erin@op2.test")
        clock.now += 30  # within the TTL: the cached answer, the directory is not asked
        cached = federation.lookup(email="erin@op2.test")
        assert len(cached) == 1 and cached.problems == ()
        clock.now += 60  # expired: asked again, and the withdrawal shows
        assert federation.lookup(email="erin@op2.test").entries == ()
        backend.publish(op2.erin.encryption.certificate)
        clock.now += 61
        assert len(federation.lookup(email="erin@op2.test")) == 1
    finally:
        server.shutdown()
        server.server_close()
    clock.now += 600  # expired and the operator is down: the stale answer, said so
    stale = federation.lookup(email="erin@op2.test")
    assert len(stale) == 1
    assert len(stale.problems) == 1
    assert "op2 unavailable" in stale.problems[0] and "cached 600s ago" in stale.problems[0]
    with pytest.raises(DirectoryUnavailableError, match=r"no entry for email=other@op2\.test: op2"):
        federation.lookup(email="other@op2.test")  # never cached: a clear error
    clock.now += 3600  # too old to be used
    with pytest.raises(DirectoryUnavailableError, match="op2 unavailable"):
        federation.lookup(email="erin@op2.test")
    federation.close()
    backend.close()


@pytest.mark.slapd
def test_a_frozen_operator_gives_cached_results_within_the_timeout(
    slapd_private, sqlite_dir, pki, op2
) -> None:
    admin = LdapDirectory(
        slapd_private.url,
        slapd_private.people_dn,
        timeout=1,
        name="op2",
        bind_dn=slapd_private.root_dn,
        password=slapd_private.password,
    )
    admin.publish(op2.erin.encryption.certificate)
    sqlite_dir.publish(pki.alice.encryption.certificate)
    clock = FakeClock()
    federation = FederatedDirectory([sqlite_dir, admin], ttl=10, timeout=2, clock=clock)
    try:
        assert len(federation.lookup(email="erin@op2.test")) == 1
        slapd_private.pause()
        clock.now += 100
        result = federation.lookup(email="erin@op2.test")
        assert [e.source for e in result.entries] == ["op2"]
        assert any("op2 unavailable" in p and "cached" in p for p in result.problems)
        # the other operator still answers for its own people, with the outage reported
        alice = federation.lookup(email="alice@op1.test")
        assert [e.source for e in alice.entries] == ["sqlite"]
        assert any("op2 unavailable" in p for p in alice.problems)
        with pytest.raises(DirectoryUnavailableError, match="op2"):
            federation.lookup(email="new@op2.test")
    finally:
        slapd_private.resume()
        federation.close()


def test_validator_filters_candidates_and_reports_refusals(sqlite_dir, pki, op2) -> None:
    sqlite_dir.publish(pki.alice.signing.certificate)
    sqlite_dir.publish(pki.alice.encryption.certificate)
    sqlite_dir.publish(op2.erin.encryption.certificate)
    trusted = pki.ca.certificate.subject

    def validator(cert: x509.Certificate, entry: DirectoryEntry) -> bool:
        assert entry.email in certificate_emails(cert)
        if cert.issuer != trusted:
            raise TrustError(f"unknown CA {cert.issuer.rfc4514_string()}")
        return cert != pki.alice.signing.certificate  # e.g. revoked

    with FederatedDirectory([sqlite_dir], validator=validator) as federation:
        alice = federation.lookup(email="alice@op1.test")
        assert alice.entries[0].certificates == (pki.alice.encryption.certificate,)
        assert len(alice.problems) == 1 and "refused by the validator" in alice.problems[0]
        erin = federation.lookup(email="erin@op2.test")
        assert erin.entries == ()
        assert "refused: unknown CA" in erin.problems[0]
        assert "CN=caducee Test Operator 2 CA" in erin.problems[0]
        assert "erin@op2.test has no valid certificate" in erin.problems[1]


def test_federation_from_toml_configuration(tmp_path: pathlib.Path, pki) -> None:
    with SqliteDirectory(tmp_path / "op1.sqlite") as op1:
        op1.publish(pki.alice.signing.certificate)
    (tmp_path / "token").write_text("t0k\n")
    conf = tmp_path / "caducee.toml"
    conf.write_text(
        "[directory]\nttl = 5\ntimeout = 2\n"
        '[[directory.operators]]\nname = "op1"\nurl = "op1.sqlite"\n'
        '[[directory.operators]]\nname = "op2"\nurl = "ldap://127.0.0.1:9/dc=op2,dc=test"\n'
        'bind_dn = "cn=admin,dc=op2,dc=test"\npassword_file = "token"\n'
    )
    federation = load_federation(load_config(conf), base=tmp_path)
    assert [d.name for d in federation.directories] == ["op1", "op2"]
    assert federation.ttl == 5 and federation.timeout == 2
    op2_dir = federation.directories[1]
    assert isinstance(op2_dir, LdapDirectory) and op2_dir.base_dn == "dc=op2,dc=test"
    assert "t0k" not in repr(op2_dir)
    result = federation.lookup(email="alice@op1.test")  # op2 (port 9) is down: reported
    assert [e.source for e in result.entries] == ["op1"]
    assert any(p.startswith("op2 unavailable") for p in result.problems)
    federation.close()


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "operators"),
        ({"operators": []}, "operators"),
        ({"operators": ["x"]}, "not a table"),
        ({"operators": [{"name": "a"}]}, "url"),
        ({"operators": [{"url": "gopher://x"}]}, "scheme"),
        ({"operators": [{"url": "ldap://h:1/"}]}, "base DN"),
        (
            {"operators": [{"url": ":memory:", "name": "a"}, {"url": ":memory:", "name": "a"}]},
            "unique",
        ),
    ],
)
def test_bad_configuration_is_a_config_error(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_federation(config)


def test_open_directory_urls(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "d.sqlite"
    with open_directory(f"sqlite://{path}") as directory:
        assert isinstance(directory, SqliteDirectory)
    assert path.exists()
    assert isinstance(open_directory("http://127.0.0.1:1"), HttpDirectory)


def test_configuration_not_in_utf8_is_a_config_error(tmp_path: pathlib.Path) -> None:
    conf = tmp_path / "latin1.toml"
    conf.write_bytes("# opérateurs\n[directory]\nttl = 5\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(conf)
    (tmp_path / "token").write_bytes(b"\xff\xfe")
    spec = {"url": "ldap://127.0.0.1:9/dc=op2,dc=test", "password_file": "token"}
    with pytest.raises(ConfigError, match="not UTF-8"):
        open_directory(spec, base=tmp_path)
