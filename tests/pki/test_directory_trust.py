"""Across two operators: find a colleague in the federated directories, validate, encrypt, reply.

Operator A's directory holds Alice, operator B's holds Bob. Each side finds the other through the
federation, and a certificate found is used only after path validation (revocation included).
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.directory.api import DirectoryEntry
from caducee.directory.federation import FederatedDirectory
from caducee.directory.sqlite import SqliteDirectory
from caducee.keys.software import SoftwareKey
from caducee.pki import TrustStore
from caducee.pki.validate import validate_certificate
from tests.pki.conftest import TwoOperators, at  # type: ignore[import-not-found]


def _directories(
    two_ops: TwoOperators, base: pathlib.Path
) -> tuple[SqliteDirectory, SqliteDirectory]:
    a = SqliteDirectory(base / "op-a.sqlite", name="operator-a")
    b = SqliteDirectory(base / "op-b.sqlite", name="operator-b")
    for directory, pro in ((a, two_ops.alice), (b, two_ops.bob)):
        for cert in (pro.sig, pro.enc):
            directory.publish(cert, professional_id=pro.identity.professional_id)
    return a, b


def _federation(dirs, trust: TrustStore, crls, when: dt.datetime) -> FederatedDirectory:  # type: ignore[no-untyped-def]
    def validator(cert: x509.Certificate, entry: DirectoryEntry) -> None:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        purpose = "signature" if ku.digital_signature else "encryption"
        validate_certificate(cert, purpose=purpose, trust=trust, crls=crls, at=when,
                             email=entry.email)  # fmt: skip

    return FederatedDirectory(list(dirs), validator=validator)


def test_each_side_finds_validates_and_encrypts_to_the_other(two_ops, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = _directories(two_ops, tmp_path)
    when = at(2)
    crls = two_ops.crls(at(1))
    for trust, reader, writer_to in (
        (two_ops.trust_a(), two_ops.bob, two_ops.bob.identity.email),
        (two_ops.trust_b(), two_ops.alice, two_ops.alice.identity.email),
    ):
        federation = _federation((a, b), trust, crls, when)
        result = federation.lookup(email=writer_to)
        assert result.problems == ()
        certs = [c for e in result.entries for c in e.encryption_certificates]
        assert certs == [reader.enc]
        der = encrypt_data(b"ECG normal", [Recipient(certs[0])], random=os.urandom)
        key = SoftwareKey(reader.enc_key, reader.enc)
        assert decrypt_data(der, [key]).content == b"ECG normal"
    a.close()
    b.close()


def test_revoked_certificate_is_found_but_never_used(two_ops, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = _directories(two_ops, tmp_path)
    # A second encryption certificate for Bob, on a card he then loses: revoked by operator B.
    key = ec.generate_private_key(ec.SECP256R1())
    lost = two_ops.op_b.issue(key.public_key(), two_ops.bob.identity, "encryption", now=at(0))
    b.publish(lost)
    before = two_ops.crls(at(1))
    two_ops.op_b.revoke(lost.serial_number, "keyCompromise", now=at(3))
    after = two_ops.crls(at(4))

    result = _federation((a, b), two_ops.trust_a(), after, at(5)).lookup(
        email=two_ops.bob.identity.email
    )
    usable = [c for e in result.entries for c in e.encryption_certificates]
    assert lost not in usable and two_ops.bob.enc in usable
    assert any("revoked" in p.lower() for p in result.problems)

    result = _federation((a, b), two_ops.trust_a(), before, at(2)).lookup(
        email=two_ops.bob.identity.email
    )
    assert lost in [c for e in result.entries for c in e.encryption_certificates]
    a.close()
    b.close()


def test_certificate_from_an_untrusted_operator_is_refused(two_ops, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = _directories(two_ops, tmp_path)
    only_national = TrustStore([two_ops.root.certificate], [two_ops.op_a.certificate])
    federation = _federation((a, b), only_national, two_ops.crls(at(1)), at(2))
    result = federation.lookup(email=two_ops.bob.identity.email)
    assert [c for e in result.entries for c in e.encryption_certificates] == []
    assert result.problems
    a.close()
    b.close()
