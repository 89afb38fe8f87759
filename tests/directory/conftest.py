"""Directory fixtures: real slapd servers on loopback ports, a second operator's PKI, backends.

slapd is started once per session per operator (cn=config built offline with slapadd), stopped by
a finalizer, and asked by the kernel to die with the test process if that is killed.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import pytest

from caducee import devpki
from caducee.directory import slapd
from caducee.directory.api import Directory
from caducee.directory.http import HttpDirectory, start_server
from caducee.directory.ldap import LdapDirectory, ldap3
from caducee.directory.sqlite import SqliteDirectory

OP2_CA_NAME = "caducee Test Operator 2 CA"


def _start(request: pytest.FixtureRequest, suffix: str) -> slapd.Slapd:
    if not slapd.available():
        pytest.skip("slapd (with core/cosine/inetorgperson schemas) is not installed")
    server = slapd.Slapd(suffix)
    request.addfinalizer(server.remove)
    return server.start()


@pytest.fixture(scope="session")
def slapd_op1(request: pytest.FixtureRequest) -> slapd.Slapd:
    return _start(request, "dc=op1,dc=test")


@pytest.fixture(scope="session")
def slapd_op2(request: pytest.FixtureRequest) -> slapd.Slapd:
    return _start(request, "dc=op2,dc=test")


@pytest.fixture
def slapd_private(request: pytest.FixtureRequest) -> slapd.Slapd:
    """A slapd of its own, for tests that stop or freeze it."""
    return _start(request, "dc=down,dc=test")


def wipe(server: slapd.Slapd) -> None:
    conn = ldap3.Connection(
        ldap3.Server(server.url), server.root_dn, server.password, auto_bind=True
    )
    conn.search(server.people_dn, "(objectClass=*)", search_scope=ldap3.LEVEL, attributes=[])
    for dn in [e.entry_dn for e in conn.entries]:
        conn.delete(dn)
    conn.unbind()


def ldap_admin(server: slapd.Slapd, name: str, timeout: float = 3.0) -> LdapDirectory:
    return LdapDirectory(
        server.url,
        server.people_dn,
        bind_dn=server.root_dn,
        password=server.password,
        name=name,
        timeout=timeout,
    )


@pytest.fixture
def ldap_op1(slapd_op1: slapd.Slapd) -> Iterator[LdapDirectory]:
    directory = ldap_admin(slapd_op1, "op1")
    yield directory
    directory.close()
    wipe(slapd_op1)


@pytest.fixture
def ldap_op2(slapd_op2: slapd.Slapd) -> Iterator[LdapDirectory]:
    directory = ldap_admin(slapd_op2, "op2")
    yield directory
    directory.close()
    wipe(slapd_op2)


@pytest.fixture
def sqlite_dir(tmp_path: pathlib.Path) -> Iterator[SqliteDirectory]:
    directory = SqliteDirectory(tmp_path / "directory.sqlite", name="sqlite")
    yield directory
    directory.close()


@pytest.fixture
def http_dir(tmp_path: pathlib.Path) -> Iterator[HttpDirectory]:
    backend = SqliteDirectory(tmp_path / "served.sqlite", name="served")
    server = start_server(backend, token="operator-token")
    yield HttpDirectory(server.url, token="operator-token", name="http", timeout=5)
    server.shutdown()
    server.server_close()
    backend.close()


@pytest.fixture(params=["sqlite", pytest.param("ldap", marks=pytest.mark.slapd), "http"])
def backend(request: pytest.FixtureRequest) -> Directory:
    """Each backend in turn, empty, with write access."""
    name = {"sqlite": "sqlite_dir", "ldap": "ldap_op1", "http": "http_dir"}[request.param]
    directory: Directory = request.getfixturevalue(name)
    return directory


@dataclasses.dataclass(frozen=True)
class Operator2:
    ca: devpki.TestCA
    erin: devpki.TestIdentity  # cardiologist on operator 2


@pytest.fixture(scope="session")
def op2() -> Operator2:
    ca = devpki.make_ca(OP2_CA_NAME)
    return Operator2(ca=ca, erin=devpki.make_identity(ca, "erin@op2.test", name="Dr Erin"))
