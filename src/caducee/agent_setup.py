"""Building a ready :class:`~caducee.agent.Agent` from the configuration file.

Opens the identity (the card, asking for the PIN once, or software key files), the trust store
and CRL sources, the directories and address book, the SMTP submitter and the mailboxes, and the
message store. Everything opened is closed by :meth:`AgentSession.close`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from caducee.agent import Agent, AgentPolicy, Identity
from caducee.agent_trust import DirectoryFinder, PkiValidator, StaticFinder
from caducee.certfiles import load_certificate, load_certificates
from caducee.config import Config, MailServer, SourceConfig
from caducee.errors import CaduceeError, ConfigError, KeyStoreError
from caducee.keys.api import DecryptionKey, SigningKey
from caducee.mail.api import MailboxSource
from caducee.opening import default_workers
from caducee.store.messages import MessageStore

if TYPE_CHECKING:
    from caducee.keys.pkcs11 import CardSession
    from caducee.keys.software import PrivateKey

__all__ = ["AgentSession", "mail_ssl_context", "open_agent"]

PinCallback = Callable[[str], str]


def issuer_chain(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The CA certificates among ``candidates`` that lead up from ``cert`` (issuer first,
    roots left out: the correspondent has the root it trusts), each checked as the issuer."""
    chain: list[x509.Certificate] = []
    current = cert
    while len(chain) < len(candidates):
        issuer = next((c for c in candidates if c not in chain and _issued(c, current)), None)
        if issuer is None or issuer.subject == issuer.issuer:
            break
        chain.append(issuer)
        current = issuer
    return tuple(chain)


def _issued(ca: x509.Certificate, cert: x509.Certificate) -> bool:
    if ca.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _read(path: Any, what: str) -> bytes:
    try:
        return bytes(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def mail_ssl_context(server: MailServer) -> ssl.SSLContext:
    """The TLS client context for a mail server: the system's trust plus ``ca_file``.

    Why added, not replacing: an operator's private CA must not make every public server
    untrusted (as ``SSL_CERT_FILE`` does). ``ca_file`` is read like every certificate file
    (PEM with one or more certificates, DER or PKCS#7).
    """
    from cryptography.hazmat.primitives.serialization import Encoding

    context = ssl.create_default_context()
    if server.ca_file is None:
        return context
    what = f"CA file (ca_file) {server.ca_file}"
    try:
        certs = load_certificates(_read(server.ca_file, "CA file (ca_file)"), what)
    except ConfigError:
        raise
    except CaduceeError as exc:
        raise ConfigError(str(exc)) from None
    try:
        context.load_verify_locations(cadata=b"".join(c.public_bytes(Encoding.DER) for c in certs))
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{what}: OpenSSL cannot use these certificates") from None
    return context


def _software_identity(config: Config) -> Identity:
    from caducee.keys.software import SoftwareKey, load_private_key

    ident = config.identity
    password = None
    if ident.key_password_file is not None:
        password = _read(ident.key_password_file, "key password file").strip()

    def key(path: Any, what: str) -> PrivateKey:
        try:
            return load_private_key(_read(path, what), password)
        except KeyStoreError as exc:  # which of the two files
            raise KeyStoreError(f"{what} {path}: {exc}") from None

    assert ident.decryption_key is not None and ident.decryption_cert is not None
    decryption = SoftwareKey(
        key(ident.decryption_key, "decryption key"),
        load_certificate(_read(ident.decryption_cert, "certificate"), str(ident.decryption_cert)),
    )
    signing: SigningKey | None = None
    if ident.signing_key is not None and ident.signing_cert is not None:
        signing = SoftwareKey(
            key(ident.signing_key, "signing key"),
            load_certificate(_read(ident.signing_cert, "certificate"), str(ident.signing_cert)),
        )
    return Identity(ident.email, signing, [decryption], ident.name)


def _keystore_keys(config: Config, card: CardSession) -> list[DecryptionKey]:
    """Keystore mode: the encryption key(s) sealed in the keystore file(s), opened by the card
    (one card operation each); the current one first, it is the one we encrypt to ourselves."""
    from caducee.keys.keystore import open_keystore_with_card

    ident = config.identity
    assert ident.keystore is not None
    return [open_keystore_with_card(p, card) for p in (ident.keystore, *ident.keystore_history)]


class AgentSession(contextlib.AbstractContextManager["AgentSession"]):
    """An agent and everything it opened (card session, store, IMAP connections)."""

    def __init__(self, agent: Agent, closers: list[Callable[[], object]]) -> None:
        self.agent = agent
        self._closers = closers

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _source(spec: SourceConfig) -> MailboxSource:
    if spec.maildir is not None:
        from caducee.mail.maildir import MaildirSource

        return MaildirSource(spec.maildir)
    assert spec.server is not None
    from caducee.mail.imap import ImapMailbox

    server = spec.server
    if server.username is None:
        raise ConfigError(f"IMAP account {spec.name}: 'username' and 'password_file' are needed")
    return ImapMailbox(
        server.host,
        server.port,
        username=server.username,
        password=server.password() or "",
        mailbox=spec.mailbox,
        security=server.security,  # type: ignore[arg-type]
        timeout=server.timeout,
        ssl_context=mail_ssl_context(server),
        prefetch=True,  # the next batch downloads while this one is judged and stored
    )


def open_agent(
    config: Config,
    *,
    pin_callback: PinCallback | None = None,
    need_keys: bool = True,
) -> AgentSession:
    """The agent for ``config``. With ``need_keys=False`` (inbox listing) no card is opened."""
    closers: list[Callable[[], object]] = []
    try:
        return _open(config, pin_callback, need_keys, closers)
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()
        raise


def _open(
    config: Config,
    pin_callback: PinCallback | None,
    need_keys: bool,
    closers: list[Callable[[], object]],
) -> AgentSession:
    store = MessageStore(config.store_path)
    closers.append(store.close)
    if not need_keys:
        identity = Identity(config.identity.email, None, [], config.identity.name)
    elif config.identity.card is not None:
        from caducee.keys.open import open_card

        card = open_card(config.identity.card, pin_callback=pin_callback)
        closers.append(card.close)
        decryption: list[DecryptionKey] = []
        if config.identity.encryption_key == "keystore":
            decryption += _keystore_keys(config, card)
        decryption += card.decryption_keys()  # on-card keys (all of them in card mode)
        signing: SigningKey | None
        try:
            signing = card.signing_key()
        except CaduceeError:  # no valid signature key (expired, revoked): reading still works
            signing = None
        identity = Identity(config.identity.email, signing, decryption, config.identity.name)
    else:
        identity = _software_identity(config)

    from caducee.pki import ChainedCrlSource, CrlCache, HttpCrlFetcher, TrustStore

    trust = TrustStore()
    for path in config.trust.anchors:
        for cert in load_certificates(_read(path, "trust anchor"), str(path)):
            trust.add_anchor(cert)
    intermediates: list[x509.Certificate] = []
    for path in config.trust.intermediates:
        intermediates += load_certificates(_read(path, "intermediate"), str(path))
    cache = CrlCache.from_files(*config.trust.crls)
    crls: Any = ChainedCrlSource(cache, HttpCrlFetcher()) if config.trust.fetch_crls else cache
    validator = PkiValidator(trust, crls, intermediates)
    if identity.signing_key is not None:
        chain = issuer_chain(identity.signing_key.certificate, intermediates)
        identity = dataclasses.replace(identity, chain=chain)

    book = StaticFinder()
    for path in config.address_book:
        for cert in load_certificates(_read(path, "address book"), str(path)):
            book.add(cert)
    directory = None
    if config.directory.get("operators"):
        from caducee.directory.federation import load_federation

        base = config.path.parent if config.path else None
        directory = load_federation(config.directory, base=base)
        closers.append(directory.close)
    finder = DirectoryFinder(directory, book)

    submitter = None
    if config.smtp is not None:
        from caducee.mail.smtp import SmtpSubmitter

        smtp = config.smtp
        submitter = SmtpSubmitter(
            smtp.host,
            smtp.port,
            security=smtp.security,  # type: ignore[arg-type]
            username=smtp.username,
            password=smtp.password(),
            timeout=smtp.timeout,
            ssl_context=mail_ssl_context(smtp),
        )
    sources: dict[str, MailboxSource] = {}
    for spec in config.sources:
        source = _source(spec)
        sources[spec.name] = source
        close = getattr(source, "close", None)
        if callable(close):
            closers.append(close)
    policy = AgentPolicy(
        allow_plaintext=config.policy.allow_plaintext,
        preferred_cipher=config.policy.preferred_cipher,
        minimum_cipher=config.policy.minimum_cipher,
        mdn_on_fetch=config.policy.mdn_on_fetch,
        request_mdn=config.policy.request_mdn,
        fetch_workers=(
            default_workers()
            if config.policy.fetch_workers is None
            else config.policy.fetch_workers
        ),
    )
    agent = Agent(
        identity=identity,
        finder=finder,
        validator=validator,
        submitter=submitter,
        sources=sources,
        store=store,
        account=config.identity.email,
        policy=policy,
    )
    return AgentSession(agent, closers)
