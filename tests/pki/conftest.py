"""A two-operator PKI declared as data, with time frozen at T0.

- national health root (P-384) -> operator A CA (P-256, subordinate)
- operator B root (RSA-2048), independent, trusted explicitly by operator A's installations
- Alice (operator A, RSA keys) and Bob (operator B, P-256 keys), each with a signature and an
  encryption certificate

All CRL and AIA URLs point at one loopback HTTP server started for the session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import subprocess
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caducee.pki import CAConfig, CertificateAuthority, ProfessionalIdentity, TrustStore
from caducee.pki.ca import generate_ca_key
from caducee.pki.http import PKIServer, make_server, routes_for, serve_in_thread

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
PASS = b"correct horse battery staple"


def run(cmd: list[str], data: bytes | None = None, check: bool = True) -> bytes:
    """Run an external peer; stdout+stderr returned, failure shown in the assertion."""
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return proc.stdout + proc.stderr


def at(hours: float = 0, days: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours, days=days)


@dataclasses.dataclass
class Professional:
    identity: ProfessionalIdentity
    sig_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    enc_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    sig: x509.Certificate
    enc: x509.Certificate


@dataclasses.dataclass
class TwoOperators:
    base: pathlib.Path
    server: PKIServer
    root: CertificateAuthority
    op_a: CertificateAuthority
    op_b: CertificateAuthority
    alice: Professional
    bob: Professional

    def crls(self, when: dt.datetime) -> list[x509.CertificateRevocationList]:
        """Fresh CRLs of the three CAs issued at ``when``."""
        return [ca.crl(now=when) for ca in (self.root, self.op_a, self.op_b)]

    def trust_a(self) -> TrustStore:
        """Operator A's installations: the national root, plus operator B's root explicitly."""
        return TrustStore([self.root.certificate, self.op_b.certificate], [self.op_a.certificate])

    def trust_b(self) -> TrustStore:
        """Operator B's installations: its own root, plus the national root."""
        return TrustStore([self.op_b.certificate, self.root.certificate], [self.op_a.certificate])


def _config(server: PKIServer, slug: str, name: str) -> CAConfig:
    return CAConfig(
        name=name, crl_url=f"{server.url}/{slug}.crl", aia_url=f"{server.url}/{slug}.crt"
    )


def professional(
    ca: CertificateAuthority, identity: ProfessionalIdentity, kind: str, *, days: int | None = None,
    when: dt.datetime = T0,
) -> Professional:  # fmt: skip
    def key() -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        if kind == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    sig_key, enc_key = key(), key()
    return Professional(
        identity,
        sig_key,
        enc_key,
        ca.issue(sig_key.public_key(), identity, "signature", now=when, days=days),
        ca.issue(enc_key.public_key(), identity, "encryption", now=when, days=days),
    )


ALICE = ProfessionalIdentity(
    "Alice", "Martin", "alice.martin@op-a.test", "10003456789", "Médecin généraliste",
    "Cabinet des Tilleuls", "FR",
)  # fmt: skip
BOB = ProfessionalIdentity(
    "Bob", "Petit", "bob.petit@op-b.test", "10009876543", "Cardiologue",
    "CH Régional", "FR",
)  # fmt: skip


@pytest.fixture(scope="session")
def two_ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoOperators]:
    base = tmp_path_factory.mktemp("pki")
    server = make_server([], "127.0.0.1", 0)
    serve_in_thread(server)
    root = CertificateAuthority.init_root(
        base / "root", _config(server, "root", "Autorité de santé Racine"),
        organisation="Autorité nationale de santé", country="FR",
        key=generate_ca_key("p384"), passphrase=PASS, now=T0,
    )  # fmt: skip
    op_a = CertificateAuthority.init_subordinate(
        base / "op-a", _config(server, "op-a", "Operator A Health CA"), root,
        organisation="Operator A", key=generate_ca_key("p256"), passphrase=PASS, now=T0,
    )  # fmt: skip
    op_b = CertificateAuthority.init_root(
        base / "op-b", _config(server, "op-b", "Operator B Root CA"),
        organisation="Operator B", key=generate_ca_key("rsa2048"), passphrase=PASS, now=T0,
    )  # fmt: skip
    for ca in (root, op_a, op_b):
        ca.crl(now=T0)
    server.routes = routes_for([base / "root", base / "op-a", base / "op-b"])
    pki = TwoOperators(
        base, server, root, op_a, op_b,
        alice=professional(op_a, ALICE, "rsa"), bob=professional(op_b, BOB, "ec"),
    )  # fmt: skip
    yield pki
    server.shutdown()
    server.server_close()
