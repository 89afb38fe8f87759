"""Two operators (independent CAs with CRLs), three professionals, and in-test mail transport.

The transport doubles implement ``caducee.mail.api`` with lists in memory: :class:`PostOffice`
is a submitter that delivers each accepted message to the recipients' :class:`ListMailbox`.
They stand in for the transport seam only; the cryptography, PKI and store are the real ones.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caducee.agent import Agent, AgentPolicy, Identity
from caducee.agent_trust import PkiValidator, StaticFinder
from caducee.errors import TransportError
from caducee.keys.software import SoftwareKey
from caducee.mail.api import Envelope, RemoteMessage
from caducee.pki import CAConfig, CertificateAuthority, CrlCache, ProfessionalIdentity, TrustStore
from caducee.pki.ca import generate_ca_key
from caducee.store import MessageStore

PASS = b"agent tests passphrase"
#: everything is issued an hour ago so "now" is comfortably inside every validity window
EPOCH = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class Person:
    email: str
    signing: SoftwareKey
    encryption: SoftwareKey
    ca: CertificateAuthority
    private_keys: tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, ...]  # (sig, enc)


@dataclasses.dataclass(frozen=True)
class Operators:
    op1: CertificateAuthority
    op2: CertificateAuthority
    martin: Person  # op1, RSA
    cardio: Person  # op2, P-256
    petit: Person  # op1, RSA
    outsider_ca: CertificateAuthority  # nobody trusts it
    mallory: Person  # issued by the outsider CA

    def validator(self) -> PkiValidator:
        trust = TrustStore([self.op1.certificate, self.op2.certificate])
        crls = CrlCache([ca.crl(now=EPOCH) for ca in (self.op1, self.op2)])
        return PkiValidator(trust, crls)

    def address_book(self) -> StaticFinder:
        return StaticFinder(
            p.encryption.certificate for p in (self.martin, self.cardio, self.petit, self.mallory)
        )


def _person(
    ca: CertificateAuthority, given: str, surname: str, email: str, pid: str, kind: str
) -> Person:
    def key() -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        if kind == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    ident = ProfessionalIdentity(given, surname, email, pid, organisation=ca.config.name)
    sig, enc = key(), key()
    return Person(
        email,
        SoftwareKey(sig, ca.issue(sig.public_key(), ident, "signature", now=EPOCH)),
        SoftwareKey(enc, ca.issue(enc.public_key(), ident, "encryption", now=EPOCH)),
        ca,
        (sig, enc),
    )


def _root(base: pathlib.Path, slug: str, name: str, kind: str) -> CertificateAuthority:
    config = CAConfig(name=name, crl_url=f"http://127.0.0.1:9/{slug}.crl")
    return CertificateAuthority.init_root(
        base / slug, config, key=generate_ca_key(kind), passphrase=PASS, now=EPOCH
    )


@pytest.fixture(scope="session")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Operators:
    base = tmp_path_factory.mktemp("agent-pki")
    op1 = _root(base, "op1", "Operator One Health CA", "p256")
    op2 = _root(base, "op2", "Operator Two Health CA", "rsa2048")
    outsider = _root(base, "outsider", "Untrusted CA", "p256")
    return Operators(
        op1,
        op2,
        _person(op1, "Alice", "Martin", "martin@op1.test", "10003456789", "rsa"),
        _person(op2, "Bob", "Coeur", "cardio@op2.test", "10009876543", "ec"),
        _person(op1, "Marc", "Petit", "petit@op1.test", "10001112223", "rsa"),
        outsider,
        _person(outsider, "Mal", "Lory", "mallory@op2.test", "10004445556", "rsa"),
    )


class ListMailbox:
    """A mailbox in memory: UIDs are increasing integers (as strings), like IMAP."""

    def __init__(self, name: str = "INBOX", uidvalidity: int = 1) -> None:
        self.name = name
        self.uidvalidity = uidvalidity
        self.messages: list[RemoteMessage] = []
        #: raise after yielding this many messages (to simulate a crash mid-fetch)
        self.crash_after: int | None = None

    def deliver(self, data: bytes) -> None:
        uid = str(len(self.messages) + 1)
        self.messages.append(RemoteMessage(self.name, self.uidvalidity, uid, data))

    def fetch_new(
        self, after_uid: str | None, *, uidvalidity: int | None = None
    ) -> Iterator[RemoteMessage]:
        start = int(after_uid) if after_uid else 0
        for count, message in enumerate(m for m in self.messages if int(m.uid) > start):
            if self.crash_after is not None and count >= self.crash_after:
                raise RuntimeError("simulated crash")
            yield message

    def wait_for_new(self, timeout: float) -> bool:
        return False


class PostOffice:
    """A submitter delivering to in-memory mailboxes; ``down`` makes it refuse like a dead
    server would."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, ListMailbox] = {}
        self.down = False
        self.submitted: list[tuple[Envelope, bytes]] = []

    def mailbox(self, address: str) -> ListMailbox:
        return self.mailboxes.setdefault(address.lower(), ListMailbox())

    def submit(self, envelope: Envelope, message: bytes) -> None:
        if self.down:
            raise TransportError("SMTP server 127.0.0.1:1 refused the connection")
        self.submitted.append((envelope, message))
        for rcpt in envelope.recipients:
            self.mailbox(rcpt).deliver(message)


AgentFactory = Callable[..., Agent]


@pytest.fixture
def post() -> PostOffice:
    return PostOffice()


@pytest.fixture
def make_agent(ops: Operators, post: PostOffice, tmp_path: pathlib.Path) -> Iterator[AgentFactory]:
    stores: list[MessageStore] = []

    def make(person: Person, **kwargs: object) -> Agent:
        store = MessageStore(tmp_path / person.email / "messages.sqlite")
        stores.append(store)
        options: dict[str, object] = {
            "identity": Identity(person.email, person.signing, [person.encryption]),
            "finder": ops.address_book(),
            "validator": ops.validator(),
            "submitter": post,
            "sources": {"imap": post.mailbox(person.email)},
            "store": store,
            "policy": AgentPolicy(),
        }
        options.update(kwargs)
        return Agent(**options)  # type: ignore[arg-type]

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def softhsm(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SoftHSM2 token directory (``SOFTHSM2_CONF``), no ``CADUCEE_PIN``; returns
    the module path (the test is skipped when SoftHSM2 is not installed)."""
    import os

    from caducee.keys.pkcs11 import SOFTHSM2_MODULE

    if not os.path.exists(SOFTHSM2_MODULE):
        pytest.skip(f"SoftHSM2 is not installed ({SOFTHSM2_MODULE} missing)")
    tokens = tmp_path / "hsm" / "tokens"
    tokens.mkdir(parents=True, mode=0o700)
    conf = tmp_path / "hsm" / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.delenv("CADUCEE_PIN", raising=False)
    return SOFTHSM2_MODULE


def card_user_config(
    base: pathlib.Path, ops: Operators, identity: dict[str, object]
) -> pathlib.Path:
    """A configuration file for a card user of operator 1 writing to Dr Cardio: both
    operators' CAs as anchors with their CRLs, Dr Cardio's certificate in the address book."""
    from cryptography.hazmat.primitives import serialization

    from caducee.config import dump_toml

    def pem(obj: object) -> bytes:
        return obj.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]

    files = {
        "anchors.pem": pem(ops.op1.certificate) + pem(ops.op2.certificate),
        "op1.crl": pem(ops.op1.crl(now=EPOCH)),
        "op2.crl": pem(ops.op2.crl(now=EPOCH)),
        "book.pem": pem(ops.cardio.encryption.certificate),
    }
    for name, data in files.items():
        (base / name).write_bytes(data)
    config = base / "config.toml"
    config.write_text(
        dump_toml(
            {
                "data_dir": str(base / "data"),
                "address_book": ["book.pem"],
                "identity": identity,
                "trust": {
                    "anchors": ["anchors.pem"],
                    "crls": ["op1.crl", "op2.crl"],
                    "fetch_crls": False,
                },
            }
        )
    )
    return config
