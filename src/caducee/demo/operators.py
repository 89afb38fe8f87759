"""The demo's two operators under one national health root, each with a directory and mail.

Why a national root: installations then trust one anchor and still see, for every signer, which
operator's CA checked the identity (the CA just below the root). Each operator CA publishes what
it issues to its own public directory (:class:`~caducee.pki.publish.DirectoryPublisher`) and writes
its CRLs to its CA directory, from where the agents' validator reads them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import secrets
from collections.abc import Sequence

from caducee.agent_trust import DirectoryFinder, PkiValidator
from caducee.directory.federation import FederatedDirectory
from caducee.directory.sqlite import SqliteDirectory
from caducee.mail.embedded import EmbeddedMailService
from caducee.pki import CAConfig, CertificateAuthority, CrlCache, TrustStore, generate_ca_key
from caducee.pki.publish import DirectoryPublisher

__all__ = ["Federation", "Operator", "build_federation"]

CRL_FILE = "crl.pem"  # written by the CA next to its certificate (caducee.pki.store)


@dataclasses.dataclass
class Operator:
    """One operator: its CA (issuing and revoking), its public directory, its mail service."""

    slug: str  # "op1"
    domain: str  # "op1.test"
    ca: CertificateAuthority
    directory: SqliteDirectory
    mail: EmbeddedMailService

    @property
    def ca_name(self) -> str:
        return self.ca.config.name


@dataclasses.dataclass
class Federation:
    """The national root and the operators: what every installation trusts and asks."""

    root: CertificateAuthority
    operators: tuple[Operator, ...]
    directory: FederatedDirectory

    def operator(self, slug: str) -> Operator:
        return next(op for op in self.operators if op.slug == slug)

    def publish_crls(self) -> list[pathlib.Path]:
        """Every CA issues a fresh CRL (written to its directory); the files are returned."""
        files = []
        for ca in (self.root, *(op.ca for op in self.operators)):
            ca.crl()
            files.append(ca.store.path / CRL_FILE)
        return files

    def validator(self) -> PkiValidator:
        """Path to the national root, revocation by the CRLs the CAs wrote (no network)."""
        trust = TrustStore([self.root.certificate])
        crls = CrlCache.from_files(*(ca.store.path / CRL_FILE for ca in self._cas()))
        return PkiValidator(trust, crls, [op.ca.certificate for op in self.operators])

    def finder(self) -> DirectoryFinder:
        return DirectoryFinder(self.directory)

    def _cas(self) -> Sequence[CertificateAuthority]:
        return (self.root, *(op.ca for op in self.operators))

    def start_mail(self) -> None:
        for op in self.operators:
            op.mail.start()

    def close(self) -> None:
        for op in self.operators:
            op.mail.stop()
        self.directory.close()  # closes the operators' directories too


def _crl_url(slug: str) -> str:
    # Never fetched in the demo (the CRLs are read from the CA directories), but every
    # certificate must name where its CRL lives.
    return f"http://crl.{slug}.test/{slug}.crl"


def build_federation(base: pathlib.Path, slugs: Sequence[tuple[str, str]]) -> Federation:
    """A national root and one subordinate CA, directory and mail service per ``(slug, name)``.

    CA keys are P-256 (fast to make), stored encrypted under a random passphrase that lives only
    in memory for the length of the demo.
    """
    passphrase = secrets.token_bytes(24)
    root = CertificateAuthority.init_root(
        base / "national-root",
        CAConfig(name="Demo National Health Root", crl_url=_crl_url("root")),
        key=generate_ca_key("p256"),
        passphrase=passphrase,
    )
    operators = []
    for slug, name in slugs:
        ca = CertificateAuthority.init_subordinate(
            base / slug / "ca",
            CAConfig(name=name, crl_url=_crl_url(slug)),
            root,
            key=generate_ca_key("p256"),
            passphrase=passphrase,
        )
        directory = SqliteDirectory(base / slug / "directory.sqlite", name=slug)
        ca.listeners.append(DirectoryPublisher(directory))
        domain = f"{slug}.test"
        mail = EmbeddedMailService(base / slug / "mail", [domain])
        operators.append(Operator(slug, domain, ca, directory, mail))
    federation = FederatedDirectory([op.directory for op in operators], ttl=0)
    return Federation(root, tuple(operators), federation)
