"""LDAP specifics against a real slapd: bad data injected directly, dead and frozen servers."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from caducee.directory.api import (
    DirectoryAccessError,
    DirectoryUnavailableError,
    ReadOnlyDirectoryError,
    der,
)
from caducee.directory.ldap import LdapDirectory, ldap3, smime_bundle

pytestmark = pytest.mark.slapd


def raw_add(server, rdn: str, attrs: dict) -> None:  # type: ignore[no-untyped-def]
    conn = ldap3.Connection(
        ldap3.Server(server.url), server.root_dn, server.password, auto_bind=True
    )
    classes = ["inetOrgPerson"]
    assert conn.add(f"{rdn},{server.people_dn}", classes, attrs), conn.result
    conn.unbind()


def person(email: str, cn: str, **extra: object) -> dict:
    return {"mail": email, "cn": cn, "sn": cn.split()[-1], **extra}


def test_entries_are_inetorgperson_with_both_certificate_attributes(
    ldap_op1, slapd_op1, pki
) -> None:
    ldap_op1.publish(
        pki.alice.signing.certificate, professional_id="10001234567", profession="Sage-femme"
    )
    conn = ldap3.Connection(ldap3.Server(slapd_op1.url), auto_bind=True)  # anonymous reader
    conn.search(
        slapd_op1.people_dn,
        "(mail=alice@op1.test)",
        attributes=[
            "objectClass",
            "employeeNumber",
            "title",
            "userCertificate;binary",
            "userSMIMECertificate",
        ],
    )
    (item,) = conn.response
    raw = item["raw_attributes"]
    assert b"inetOrgPerson" in raw["objectClass"]
    assert raw["employeeNumber"] == [b"10001234567"]
    assert raw["title"] == [b"Sage-femme"]
    assert raw["userCertificate;binary"] == [der(pki.alice.signing.certificate)]
    assert raw["userSMIMECertificate"] == [smime_bundle([pki.alice.signing.certificate])]
    conn.unbind()


def test_entries_published_by_other_tools_are_read(ldap_op1, slapd_op1, pki) -> None:
    """A bare DER certificate in userSMIMECertificate, certificates in userCertificate only."""
    raw_add(
        slapd_op1,
        "cn=Bob",
        person(
            "bob@op2.test",
            "Bob Other",
            userSMIMECertificate=[der(pki.bob.encryption.certificate)],
            **{"userCertificate;binary": [der(pki.bob.signing.certificate)]},
        ),
    )
    (entry,) = ldap_op1.lookup(email="bob@op2.test").entries
    assert set(entry.certificates) == {pki.bob.signing.certificate, pki.bob.encryption.certificate}


def test_malformed_certificates_and_entries_are_skipped_and_reported(
    ldap_op1, slapd_op1, pki
) -> None:
    alice_sig = der(pki.alice.signing.certificate)
    # garbage next to a good certificate: the good one is kept, the garbage reported
    raw_add(
        slapd_op1,
        "mail=alice@op1.test",
        person(
            "alice@op1.test",
            "Alice Martin",
            userSMIMECertificate=[b"\x30\x82\x01\x00garbage", alice_sig[:200]],
            **{"userCertificate;binary": [alice_sig]},
        ),
    )
    # only garbage: the entry is skipped
    raw_add(
        slapd_op1,
        "mail=zoe@op1.test",
        person("zoe@op1.test", "Zoe Martin", userSMIMECertificate=[b"not a certificate"]),
    )
    # a certificate of somebody else: refused for this entry
    raw_add(
        slapd_op1,
        "mail=mallory@op1.test",
        person(
            "mallory@op1.test",
            "Mallory Martin",
            **{"userCertificate;binary": [der(pki.bob.encryption.certificate)]},
        ),
    )
    # a professional identifier that is not 11 digits, and an entry without mail
    raw_add(
        slapd_op1,
        "mail=yann@op1.test",
        person(
            "yann@op1.test",
            "Yann Martin",
            employeeNumber="RPPS-42",
            **{"userCertificate;binary": [der(pki.carol.signing.certificate)]},
        ),
    )
    raw_add(slapd_op1, "cn=Nomail Martin", {"cn": "Nomail Martin", "sn": "Martin"})

    result = ldap_op1.lookup(name="Martin")
    assert [e.email for e in result.entries] == ["alice@op1.test"]
    assert result.entries[0].certificates == (pki.alice.signing.certificate,)
    text = "\n".join(result.problems)
    assert text.count("unreadable certificate") == 3  # two for alice, one for zoe
    assert "zoe@op1.test has no usable certificate" in text
    assert "bound to bob@op2.test, not mallory@op1.test" in text
    assert "11 digits" in text and "RPPS-42" in text
    assert "has no mail attribute" in text
    assert all("\n" not in p for p in result.problems)


def test_anonymous_clients_cannot_publish(slapd_op1, pki) -> None:
    reader = LdapDirectory(slapd_op1.url, slapd_op1.people_dn, timeout=3)
    with reader, pytest.raises(ReadOnlyDirectoryError, match="refused"):
        reader.publish(pki.alice.signing.certificate)
    with (
        LdapDirectory(
            slapd_op1.url,
            slapd_op1.people_dn,
            bind_dn=slapd_op1.root_dn,
            password="wrong",
            timeout=3,
        ) as wrong,
        pytest.raises(DirectoryAccessError, match="bind refused"),
    ):
        wrong.lookup(email="alice@op1.test")


def test_a_stopped_server_gives_a_clear_error(slapd_private) -> None:
    with LdapDirectory(
        slapd_private.url, slapd_private.people_dn, timeout=2, name="op9"
    ) as directory:
        assert directory.lookup(email="a@op9.test").entries == ()
        slapd_private.stop()
        with pytest.raises(DirectoryUnavailableError, match=r"^op9: .*unreachable"):
            directory.lookup(email="a@op9.test")


def test_a_frozen_server_gives_an_error_within_the_timeout_not_a_hang(slapd_private) -> None:
    with LdapDirectory(
        slapd_private.url, slapd_private.people_dn, timeout=1, name="op9"
    ) as directory:
        assert directory.lookup(email="a@op9.test").entries == ()
        slapd_private.pause()  # accepts TCP, never answers
        try:
            with pytest.raises(DirectoryUnavailableError, match="silent for 1s"):
                directory.lookup(email="a@op9.test")
            fresh = LdapDirectory(slapd_private.url, slapd_private.people_dn, timeout=1)
            with fresh, pytest.raises(DirectoryUnavailableError, match="silent for 1s"):
                fresh.lookup(email="a@op9.test")  # the bind itself hangs: same limit
        finally:
            slapd_private.resume()
        assert directory.lookup(email="a@op9.test").entries == ()  # and it recovers


def test_unreachable_port_is_a_clear_error() -> None:
    from caducee.directory.slapd import free_port

    directory = LdapDirectory(f"ldap://127.0.0.1:{free_port()}", "dc=x", timeout=1)
    with directory, pytest.raises(DirectoryUnavailableError, match="unreachable"):
        directory.lookup(email="a@b.test")


def test_pem_is_not_accepted_as_certificate_bytes(ldap_op1, slapd_op1, pki) -> None:
    pem = pki.dave.signing.certificate.public_bytes(serialization.Encoding.PEM)
    raw_add(
        slapd_op1, "mail=dave@op2.test", person("dave@op2.test", "Dave", userSMIMECertificate=[pem])
    )
    result = ldap_op1.lookup(email="dave@op2.test")
    assert result.entries == ()
    assert any("unreadable certificate" in p for p in result.problems)


def test_offline_ldif_import_with_slapadd(tmp_path, pki) -> None:  # type: ignore[no-untyped-def]
    """What an operator (and the benchmark) does to load many entries: LDIF + slapadd."""
    from caducee.directory import slapd
    from caducee.directory.api import entry_from_certificate
    from caducee.directory.ldap import ldif_record

    entry = entry_from_certificate(
        pki.alice.signing.certificate,
        extra_certificates=[pki.alice.encryption.certificate],
        profession="Médecin: généraliste",  # non-ASCII: base64 in the LDIF
        professional_id="10001234567",
    )
    server = slapd.Slapd("dc=bulk,dc=test", workdir=tmp_path)
    ldif = tmp_path / "people.ldif"
    ldif.write_text(ldif_record(entry, server.people_dn))
    server.configure(ldif)
    with server, LdapDirectory(server.url, server.people_dn, timeout=3) as directory:
        (found,) = directory.lookup(professional_id="10001234567").entries
        assert found.profession == "Médecin: généraliste"
        assert set(found.certificates) == set(entry.certificates)


def test_a_server_that_does_not_speak_ldap_is_a_clear_error() -> None:
    """Something else answers on the configured port (seen: a proxy's reply) with bytes that
    are BER but no LDAP operation: ldap3's decoder fails with a KeyError; the user must be
    told what is at that address."""
    import contextlib
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(bytes.fromhex("30050201017400"))  # message 1, [APPLICATION 20]
                conn.settimeout(3)
                with contextlib.suppress(OSError):
                    conn.recv(4096)  # keep it open, as a web server waiting for more would

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        directory = LdapDirectory(f"ldap://127.0.0.1:{port}", "dc=x", timeout=2, name="op9")
        with directory, pytest.raises(DirectoryUnavailableError, match=r"^op9: .*not LDAP"):
            directory.lookup(email="a@b.test")
    finally:
        listener.close()
        thread.join(5)
