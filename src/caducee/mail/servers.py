"""Real mail servers on loopback ports, for tests, benchmarks and developers.

Why real ones: the transport code must be proven against what operators actually run. This
module starts a private Dovecot (IMAP + LMTP, passwd-file users, Maildir) without systemd, and an
SMTP receiver (aiosmtpd) that hands every accepted message to Dovecot over LMTP — the same path
as Postfix -> LMTP -> Dovecot at an operator.

Nothing here is meant for production: passwords are stored in clear in a temporary passwd-file
and the TLS certificate is self-signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import logging
import os
import pathlib
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caducee.errors import TransportError
from caducee.mail.imap import ImapMailbox
from caducee.mail.smtp import SmtpSubmitter

__all__ = [
    "DovecotServer",
    "LmtpRelay",
    "MailNetwork",
    "Operator",
    "TlsFiles",
    "client_context",
    "dovecot_available",
    "free_port",
    "make_tls_files",
    "wait_for_port",
]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once ``host:port`` accepts connections; raise TransportError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TransportError(f"{host}:{port} did not start listening: {exc}") from None
            time.sleep(0.05)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A self-signed server certificate (also its own trust anchor) and its key, as PEM files."""

    cert: pathlib.Path
    key: pathlib.Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def make_tls_files(directory: pathlib.Path, hostname: str = "localhost") -> TlsFiles:
    """Write a self-signed P-256 certificate valid for ``hostname``, 127.0.0.1 and ::1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls-cert.pem", directory / "tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return TlsFiles(cert_path, key_path)


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    """A client context that trusts exactly this self-signed server certificate."""
    return ssl.create_default_context(cafile=str(tls.cert))


def dovecot_available() -> str | None:
    """Why Dovecot cannot be used here, or None when it can."""
    for tool in ("dovecot", "doveadm"):
        if shutil.which(tool) is None and not pathlib.Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install dovecot-imapd dovecot-lmtpd)"
    if not pathlib.Path("/usr/lib/dovecot/lmtp").exists():
        return "Dovecot's LMTP server is not installed (apt-get install dovecot-lmtpd)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


_CONF = """\
base_dir = {run}
state_dir = {state}
log_path = {log}
instance_name = {instance}
protocols = imap lmtp
# No stats service here: processes would wait 5 s for its handshake when stopping.
stats_writer_socket_path =
listen = 127.0.0.1
{tls}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {uid}
last_valid_uid = 0
first_valid_gid = {gid}
{users_section}
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"""


class DovecotServer:
    """A private Dovecot: IMAP (STARTTLS and implicit TLS when given a certificate) and LMTP.

    ``users`` maps e-mail addresses to passwords. Mail is stored as Maildir under a private
    temporary directory owned by the mail uid (the current user, or ``mail`` when running as
    root, since Dovecot refuses uid 0 for mail). Use as a context manager or call
    :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        users: dict[str, str],
        *,
        tls: TlsFiles | None = None,
        name: str = "caducee",
        timeout: float = 15.0,
    ) -> None:
        reason = dovecot_available()
        if reason is not None:
            raise TransportError(f"cannot start Dovecot: {reason}")
        self.users = dict(users)
        self.tls = tls
        self.timeout = timeout
        self.host = "127.0.0.1"
        # Short private path: Dovecot's unix sockets must fit in sun_path (108 bytes).
        self.root = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-dovecot-"))
        self.root.chmod(0o711)  # the mail uid must traverse it
        self.conf = self.root / "dovecot.conf"
        self.log = self.root / "dovecot.log"
        self.mail_root = self.root / "mail"
        self.imap_port = free_port()
        self.imaps_port = free_port() if tls else 0
        self.lmtp_port = free_port()
        self._instance = f"{name}-{self.root.name}"
        self._running = False
        if os.getuid() == 0:
            try:
                entry = pwd.getpwnam("mail")
            except KeyError:
                entry = pwd.getpwnam("nobody")
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()

    # --- layout -----------------------------------------------------------------------------

    def home(self, address: str) -> pathlib.Path:
        local, _, domain = address.partition("@")
        return self.mail_root / domain / local

    def maildir(self, address: str) -> pathlib.Path:
        """The user's INBOX Maildir, as Dovecot stores it."""
        return self.home(address) / "Maildir"

    def _write_config(self) -> None:
        for sub in ("run", "state"):
            (self.root / sub).mkdir(mode=0o755, exist_ok=True)
        lines = []
        for address, password in self.users.items():
            if ":" in address or ":" in password or "\n" in address + password:
                raise ValueError("user names and passwords may not contain ':' or newlines")
            home = self.home(address)
            home.mkdir(parents=True, exist_ok=True)
            lines.append(f"{address}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::")
        passwd = self.root / "passwd"
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        if os.getuid() == 0:  # the auth process runs as Dovecot's internal user
            internal = pwd.getpwnam("dovecot")
            os.chown(passwd, internal.pw_uid, internal.pw_gid)
        for path in [self.mail_root, *self.mail_root.rglob("*")]:
            os.chown(path, self.uid, self.gid)
        self.mail_root.chmod(0o700)
        if self.tls:
            tls = f"ssl = yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}"
        else:
            tls = "ssl = no"
        if os.getuid() == 0:
            users_section = ""
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            users_section = f"default_internal_user = {me}\ndefault_login_user = {me}"
        self.conf.write_text(
            _CONF.format(
                run=self.root / "run",
                state=self.root / "state",
                log=self.log,
                instance=self._instance,
                tls=tls,
                uid=self.uid,
                gid=self.gid,
                users_section=users_section,
                passwd=passwd,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
                lmtp_port=self.lmtp_port,
            )
        )

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> DovecotServer:
        self._write_config()
        self._running = True  # from here on, stop() sweeps whatever was started
        try:
            # The master daemonizes and its children keep inherited pipes open: send its
            # output to a file, never to a pipe we would wait on.
            with tempfile.TemporaryFile() as errors:
                proc = subprocess.run(
                    [_tool("dovecot"), "-c", str(self.conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=errors,
                    stderr=errors,
                    timeout=self.timeout,
                )
                errors.seek(0)
                output = errors.read().decode(errors="replace").strip()
            if proc.returncode != 0:
                raise TransportError(f"dovecot did not start: {output[-300:]}")
            wait_for_port(self.host, self.imap_port, self.timeout)
            wait_for_port(self.host, self.lmtp_port, self.timeout)
        except (TransportError, OSError, subprocess.TimeoutExpired) as exc:
            self.stop(cleanup=False)
            if isinstance(exc, TransportError):
                raise
            raise TransportError(f"dovecot did not start: {exc}") from None
        return self

    def _master_pid(self) -> int | None:
        try:
            return int((self.root / "run" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop the server and wait for it to exit; remove its files unless ``cleanup`` is False.

        Dovecot's master lets idle imap-login/lmtp children linger for seconds after SIGTERM;
        a test server has nothing to flush (LMTP fsyncs each delivery before answering), so
        after a short grace period the whole process tree is killed.
        """
        if self._running:
            pid = self._master_pid()
            # Our processes, found by this instance's unique config path and process title even
            # if the pid file is missing or stale.
            family = _processes_mentioning(str(self.conf), f"dovecot-{self._instance}/")
            if pid is not None:
                family = list(dict.fromkeys([pid, *_children(pid), *family]))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 0.3
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if family:
                for member in family:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(member, signal.SIGKILL)
                deadline = time.monotonic() + self.timeout
                while any(_alive(m) for m in family) and time.monotonic() < deadline:
                    time.sleep(0.02)
                # A zombie master may still answer kill(0): do not let a restart mistake it
                # for a running Dovecot.
                with contextlib.suppress(FileNotFoundError):
                    (self.root / "run" / "master.pid").unlink()
            self._running = False
        if cleanup:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same ports and mail (for "server came back" tests)."""
        self.stop(cleanup=False)
        self.start()

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _processes_mentioning(*needles: str) -> list[int]:
    """Processes whose command line contains one of ``needles`` (Linux /proc)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (Linux)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] not in ("Z", "X")


# --- SMTP receiver delivering over LMTP ---------------------------------------------------------


class _RelayHandler:
    """aiosmtpd handler: refuse unknown recipients at RCPT; deliver local copies over LMTP,
    forward the others over SMTP to the server that serves their domain."""

    def __init__(
        self,
        lmtp_host: str,
        lmtp_port: int,
        accept: Callable[[str], bool],
        relay_to: dict[str, tuple[str, int]],
        timeout: float,
    ) -> None:
        self.lmtp_host = lmtp_host
        self.lmtp_port = lmtp_port
        self.accept = accept
        self.relay_to = relay_to
        self.timeout = timeout
        self.delivered = 0
        self.forwarded = 0

    def _route(self, address: str) -> tuple[str, int] | None:
        return self.relay_to.get(address.rpartition("@")[2].lower())

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # As a submission server does (Postfix's reject_sender_login_mismatch): a user sends
        # as the address it logged in with.
        login = session.auth_data if session.authenticated else None
        if isinstance(login, str) and address.lower() != login.lower():
            return "553 5.7.1 sender address not owned by the authenticated user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accept(address) and self._route(address) is None:
            return "550 5.1.1 unknown recipient"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, self._deliver, envelope.mail_from or "", list(envelope.rcpt_tos), data
        )

    def _deliver(self, sender: str, recipients: list[str], data: bytes) -> str:
        worst = "250 OK delivered"
        remote: dict[tuple[str, int], list[str]] = {}
        for rcpt in recipients:
            route = None if self.accept(rcpt) else self._route(rcpt)
            if route is not None:
                remote.setdefault(route, []).append(rcpt)
                continue
            # One LMTP transaction per recipient: LMTP answers DATA once per recipient, which
            # smtplib does not read, so a single-recipient transaction keeps the dialogue in step.
            try:
                with smtplib.LMTP(self.lmtp_host, self.lmtp_port, timeout=self.timeout) as lmtp:
                    lmtp.sendmail(sender, [rcpt], data)
                self.delivered += 1
            except (smtplib.SMTPException, OSError) as exc:
                worst = _worse(worst, exc)
        for (host, port), rcpts in remote.items():
            try:
                with smtplib.SMTP(host, port, timeout=self.timeout) as smtp:
                    smtp.sendmail(sender, rcpts, data)
                self.forwarded += len(rcpts)
            except (smtplib.SMTPException, OSError) as exc:
                worst = _worse(worst, exc)
        return worst


def _worse(current: str, exc: BaseException) -> str:
    """The SMTP reply for a delivery failure: permanent wins over temporary over success."""
    code = 451
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code = min(c for c, _ in exc.recipients.values())
    elif isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
    if code >= 500:
        return "554 5.3.0 delivery failed"
    return current if current.startswith("5") else "451 4.3.0 delivery deferred"


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    """aiosmtpd itself sets its deprecated ``Session.login_data`` on every successful AUTH and
    logs a warning each time: noise about its own code, hidden here."""
    return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_not_login_data_notice)


class _AuthChecker:
    def __init__(self, credentials: dict[str, str]) -> None:
        self._credentials = credentials

    def __repr__(self) -> str:
        return "<_AuthChecker>"  # never show the passwords

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = login in self._credentials and self._credentials[login] == password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class _ImplicitTlsSmtp(SMTP):
    """aiosmtpd's SMTP that counts an implicit-TLS connection as encrypted for AUTH.

    aiosmtpd only counts a STARTTLS upgrade: on an SMTPS listener it would never advertise
    AUTH, so security "tls" with a password could not be tested. The check is relaxed per
    connection, and only once the transport really is TLS.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if transport.get_extra_info("ssl_object") is not None:
            self._auth_require_tls = False


class _ImplicitTlsController(Controller):
    def factory(self) -> SMTP:
        return _ImplicitTlsSmtp(self.handler, **self.SMTP_kwargs)


class LmtpRelay:
    """An SMTP server on a loopback port that delivers every accepted message over LMTP.

    ``domains``/``recipients`` decide which RCPT TO are accepted (unknown ones get 550 at RCPT,
    as a real MTA with recipient maps does). ``tls`` enables STARTTLS (``implicit_tls`` turns
    the listener into SMTPS instead); ``credentials`` (login -> password) require AUTH, over TLS
    (STARTTLS or implicit).
    ``relay_to`` maps other domains to the ``(host, port)`` of the SMTP server serving them, as
    an operator's MTA forwards to another operator's MX.
    """

    def __init__(
        self,
        lmtp_host: str,
        lmtp_port: int,
        *,
        recipients: Iterable[str] | None = None,
        domains: Iterable[str] | None = None,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        require_starttls: bool = False,
        credentials: dict[str, str] | None = None,
        relay_to: dict[str, tuple[str, int]] | None = None,
        port: int | None = None,
        timeout: float = 15.0,
    ) -> None:
        known = {r.lower() for r in recipients} if recipients is not None else None
        doms = {d.lower() for d in domains} if domains is not None else None

        def accept(address: str) -> bool:
            address = address.lower()
            if known is not None and address in known:
                return True
            return doms is not None and address.rpartition("@")[2] in doms

        self.host = "127.0.0.1"
        self.port = port or free_port()
        routes = {d.lower(): hp for d, hp in (relay_to or {}).items()}
        self.handler = _RelayHandler(lmtp_host, lmtp_port, accept, routes, timeout)
        kwargs: dict[str, Any] = {"server_hostname": "localhost", "ready_timeout": timeout}
        if tls is not None and implicit_tls:
            kwargs["ssl_context"] = tls.server_context()
        elif tls is not None:
            kwargs["tls_context"] = tls.server_context()
            kwargs["require_starttls"] = require_starttls
        if credentials is not None:
            if tls is None:
                raise ValueError("AUTH needs TLS: give the relay a certificate")
            kwargs["authenticator"] = _AuthChecker(dict(credentials))
            kwargs["auth_required"] = True
        self._kwargs = kwargs
        self._implicit_tls = tls is not None and implicit_tls
        self._controller: Controller | None = None

    @property
    def delivered(self) -> int:
        """How many recipient copies reached the mail store."""
        return self.handler.delivered

    def start(self) -> LmtpRelay:
        if self._controller is None:
            kind = _ImplicitTlsController if self._implicit_tls else Controller
            self._controller = kind(
                self.handler, hostname=self.host, port=self.port, **self._kwargs
            )
            self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> LmtpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- two (or more) operators, ready to exchange mail --------------------------------------------


@dataclasses.dataclass
class Operator:
    """One operator's mail servers: Dovecot, an MX (local delivery) and a submission server."""

    domain: str
    users: dict[str, str]
    dovecot: DovecotServer
    mx: LmtpRelay
    submission: LmtpRelay


class MailNetwork:
    """Several operators' real mail servers on loopback, wired together by domain.

    ``operators`` maps a domain to its users (address -> password). Each operator gets a
    Dovecot (IMAP with STARTTLS and implicit TLS when ``tls`` is given), an MX that delivers its
    domain over LMTP, and a submission server (STARTTLS + AUTH with the users' passwords when
    ``tls`` is given, plain otherwise) that relays other operators' domains to their MX.
    :meth:`submitter` and :meth:`mailbox` build the transport clients for a user.
    """

    def __init__(
        self, operators: dict[str, dict[str, str]], *, tls: TlsFiles | None = None
    ) -> None:
        self.tls = tls
        self._spec = {d.lower(): dict(u) for d, u in operators.items()}
        self.operators: dict[str, Operator] = {}

    def start(self) -> MailNetwork:
        try:
            mxs: dict[str, LmtpRelay] = {}
            dovecots: dict[str, DovecotServer] = {}
            for domain, users in self._spec.items():
                dovecots[domain] = DovecotServer(users, tls=self.tls, name=domain.split(".")[0])
                dovecots[domain].start()
                mxs[domain] = LmtpRelay(
                    "127.0.0.1", dovecots[domain].lmtp_port, domains=[domain], tls=self.tls
                ).start()
                self.operators[domain] = Operator(
                    domain, users, dovecots[domain], mxs[domain], mxs[domain]
                )
            for domain, users in self._spec.items():
                routes = {d: (mx.host, mx.port) for d, mx in mxs.items() if d != domain}
                submission = LmtpRelay(
                    "127.0.0.1",
                    dovecots[domain].lmtp_port,
                    domains=[domain],
                    tls=self.tls,
                    credentials=users if self.tls else None,
                    relay_to=routes,
                ).start()
                self.operators[domain].submission = submission
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for op in self.operators.values():
            if op.submission is not op.mx:
                op.submission.stop()
            op.mx.stop()
            op.dovecot.stop()
        self.operators.clear()

    def __enter__(self) -> MailNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def operator(self, address_or_domain: str) -> Operator:
        return self.operators[address_or_domain.rpartition("@")[2].lower()]

    def password(self, address: str) -> str:
        return self.operator(address).users[address]

    def ssl_context(self) -> ssl.SSLContext | None:
        return client_context(self.tls) if self.tls else None

    def submitter(self, address: str, *, timeout: float = 15) -> SmtpSubmitter:
        """The user's submission client (STARTTLS + AUTH when the network has TLS)."""
        op = self.operator(address)
        if self.tls is None:
            return SmtpSubmitter(
                op.submission.host, op.submission.port, security="none", timeout=timeout
            )
        return SmtpSubmitter(
            op.submission.host,
            op.submission.port,
            security="starttls",
            username=address,
            password=self.password(address),
            timeout=timeout,
            ssl_context=self.ssl_context(),
        )

    def mailbox(self, address: str, mailbox: str = "INBOX", *, timeout: float = 15) -> ImapMailbox:
        """The user's IMAP mailbox client (STARTTLS when the network has TLS)."""
        op = self.operator(address)
        return ImapMailbox(
            op.dovecot.host,
            op.dovecot.imap_port,
            username=address,
            password=self.password(address),
            mailbox=mailbox,
            security="starttls" if self.tls else "none",
            timeout=timeout,
            ssl_context=self.ssl_context(),
            create_missing=mailbox != "INBOX",
        )
