"""A throw-away OpenLDAP server (slapd) in a temporary directory, for tests, demos and benchmarks.

slapd is started without systemd: a cn=config directory is built offline with ``slapadd -n0``,
the database may be pre-loaded offline with ``slapadd -n1`` (the fast way to load 100,000
entries), then ``slapd`` listens on a loopback port only. Nothing here is for production use.

Given a server certificate and key, slapd also listens on ``ldaps://127.0.0.1:<port>``. Debian's
slapd is linked with GnuTLS (not OpenSSL): only the options both share are used (certificate and
key files, PEM). slapd runs as the calling user, so key files kept 0600 by their owner work.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

from caducee.errors import DirectoryError

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = pathlib.Path("/etc/ldap/schema")
MODULE_DIR = pathlib.Path("/usr/lib/ldap")
SCHEMAS = ("core", "cosine", "inetorgperson")


class SlapdError(DirectoryError):
    """The throw-away slapd could not be configured or started."""


def available() -> bool:
    """True when slapd, slapadd and the needed schemas are installed."""
    return (
        os.access(SLAPD, os.X_OK)
        and os.access(SLAPADD, os.X_OK)
        and all((SCHEMA_DIR / f"{name}.ldif").is_file() for name in SCHEMAS)
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def suffix_for(domain: str) -> str:
    """``op1.test`` -> ``dc=op1,dc=test``."""
    return ",".join(f"dc={part}" for part in domain.split("."))


def _config_ldif(
    suffix: str,
    root_dn: str,
    password: str,
    db_dir: pathlib.Path,
    tls: tuple[pathlib.Path, pathlib.Path] | None = None,
) -> str:
    global_tls = ""
    if tls is not None:  # base64 values: any path is a valid LDIF value
        global_tls = "".join(
            f"\n{attr}:: {base64.b64encode(os.fsencode(path)).decode()}"
            for attr, path in zip(
                ("olcTLSCertificateFile", "olcTLSCertificateKeyFile"), tls, strict=True
            )
        )
    schemas = []
    for name in SCHEMAS:
        schemas.append((SCHEMA_DIR / f"{name}.ldif").read_text().strip())
    return (
        "\n\n".join(
            [
                "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
                f"olcLogLevel: none\nolcSizeLimit: 500{global_tls}",
                "dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n"
                f"olcModulePath: {MODULE_DIR}\nolcModuleLoad: back_mdb",
                "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema",
                *schemas,
                "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n"
                "objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\n"
                "olcAccess: {0}to * by * read",
                "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
                "olcDatabase: {0}config\nolcAccess: {0}to * by * none",
                "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
                "objectClass: olcMdbConfig\nolcDatabase: {1}mdb\n"
                f"olcSuffix: {suffix}\nolcRootDN: {root_dn}\nolcRootPW: {password}\n"
                f"olcDbDirectory: {db_dir}\nolcDbMaxSize: 4294967296\n"
                "olcDbIndex: objectClass eq\nolcDbIndex: mail eq\n"
                "olcDbIndex: cn,sn,givenName eq\nolcDbIndex: o eq\n"
                "olcDbIndex: employeeNumber eq\n"
                "olcAccess: {0}to * by * read",
            ]
        )
        + "\n"
    )


def base_ldif(suffix: str, people_ou: str = "people") -> str:
    """The suffix entry and the ``ou=people`` container, as LDIF."""
    first = suffix.split(",")[0].split("=", 1)[1]
    return (
        f"dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
        f"dc: {first}\no: {first}\n\n"
        f"dn: ou={people_ou},{suffix}\nobjectClass: organizationalUnit\nou: {people_ou}\n\n"
    )


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM slapd when its parent dies.

    A test run killed with SIGKILL runs no finalizer; this way it still leaves no slapd behind.
    libc is loaded here, in the parent: the child between fork and exec only makes one call.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the caller's finalizer still stops it
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return hook


def _readable_tls_files(
    cert: pathlib.Path | str | None, key: pathlib.Path | str | None
) -> tuple[pathlib.Path, pathlib.Path] | None:
    """Absolute paths of the server certificate and key, checked readable by slapd (us)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both tls_cert and tls_key")
    files = (pathlib.Path(cert).absolute(), pathlib.Path(key).absolute())
    for what, path in zip(("certificate", "key"), files, strict=True):
        # slapd runs as the calling user (no -u): what we can read, it can read
        if not path.is_file() or not os.access(path, os.R_OK):
            raise SlapdError(f"TLS {what} file {path} is missing or not readable")
    return files


#: what slapd -d none prints besides errors: banner, start and stop
_NOT_ERRORS = ("@(#)", "slapd starting", "slapd stopped", "slapd shutdown", "connections_destroy")


def _startup_errors(log: pathlib.Path) -> str:
    """slapd's error lines (without timestamp and thread id), for a failed start."""
    messages = []
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split(" ", 2)  # "<timestamp> <thread> message"; continuation lines: tab
        if len(parts) == 3 and not line.startswith("\t") and not parts[2].startswith(_NOT_ERRORS):
            messages.append(parts[2].strip())
    return " | ".join(messages[-3:])[-300:] or "no message (see slapd -d any)"


def _all_stopped(pid: int) -> bool | None:
    """Whether every thread of ``pid`` is stopped; None where /proc cannot tell."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            stat = pathlib.Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue  # the thread ended
        if stat.rsplit(")", 1)[-1].split()[:1] not in (["T"], ["t"]):
            return False
    return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Slapd:
    """One slapd process serving one suffix on ``ldap://127.0.0.1:port/``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``data_ldif`` (a path) is
    loaded offline with slapadd before start, after the suffix and ``ou=people`` entries.

    With ``tls_cert`` and ``tls_key`` (PEM files: the server certificate, optionally followed by
    its intermediate CAs, and its unencrypted private key), slapd also serves
    :attr:`ldaps_url`. The files are used where they are, not copied.
    """

    def __init__(
        self,
        suffix: str = "dc=op1,dc=test",
        *,
        password: str = "secret",  # noqa: S107 - throw-away server on loopback
        workdir: pathlib.Path | None = None,
        tls_cert: pathlib.Path | str | None = None,
        tls_key: pathlib.Path | str | None = None,
    ) -> None:
        self.tls_files = _readable_tls_files(tls_cert, tls_key)
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        self.password = password
        self.people_dn = f"ou=people,{suffix}"
        self._own_dir = workdir is None
        self.workdir = workdir or pathlib.Path(tempfile.mkdtemp(prefix="caducee-slapd-"))
        self.port = 0
        self.ldaps_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """``ldaps://127.0.0.1:<port>``; only for a server given a TLS certificate and key."""
        if self.tls_files is None:
            raise SlapdError("this slapd has no TLS certificate: give tls_cert and tls_key")
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _run(self, cmd: list[str], timeout: float = 600) -> None:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise SlapdError(f"{cmd[0]} failed ({proc.returncode}): {' | '.join(err[-3:])}")

    def configure(self, data_ldif: pathlib.Path | None = None) -> None:
        """Build cn=config and load the base entries (and ``data_ldif``) offline."""
        conf_dir = self.workdir / "slapd.d"
        db_dir = self.workdir / "db"
        conf_dir.mkdir(mode=0o700)
        db_dir.mkdir(mode=0o700)
        config = self.workdir / "config.ldif"
        config.write_text(
            _config_ldif(self.suffix, self.root_dn, self.password, db_dir, self.tls_files)
        )
        self._run([SLAPADD, "-n0", "-F", str(conf_dir), "-l", str(config)])
        base = self.workdir / "base.ldif"
        base.write_text(base_ldif(self.suffix))
        self._run([SLAPADD, "-q", "-n1", "-F", str(conf_dir), "-l", str(base)])
        if data_ldif is not None:
            self._run([SLAPADD, "-q", "-n1", "-F", str(conf_dir), "-l", str(data_ldif)])

    def start(self, data_ldif: pathlib.Path | None = None, timeout: float = 20) -> Slapd:
        if not (self.workdir / "slapd.d").exists():
            self.configure(data_ldif)
        self.port = free_port()
        listeners = [f"{self.url}/"]
        ports = [self.port]
        if self.tls_files is not None:
            self.ldaps_port = free_port()
            listeners.append(f"{self.ldaps_url}/")
            ports.append(self.ldaps_port)
        # "-d none": in the foreground, printing only what slapd logs at any level (its errors,
        # such as an unusable TLS key), to a file: a pipe nobody reads could fill up and block it
        log = self.workdir / "slapd.log"
        with open(log, "wb") as log_file:
            self._proc = subprocess.Popen(
                [
                    SLAPD,
                    "-d",
                    "none",
                    "-h",
                    " ".join(listeners),
                    "-F",
                    str(self.workdir / "slapd.d"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise SlapdError(f"slapd exited at start: {_startup_errors(log)}")
            if all(_accepts(port) for port in ports):
                return self
            time.sleep(0.05)
        self.stop()
        raise SlapdError(
            f"slapd did not answer on port {'/'.join(map(str, ports))} within {timeout:g}s"
        )

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang, as with a dead network path.

        Returns once every slapd thread is stopped: the signal is delivered asynchronously, and
        a request sent in between would still be answered.
        """
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while _all_stopped(self._proc.pid) is False and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (and remove its directory if we created it)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Slapd:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def running(suffix: str = "dc=op1,dc=test") -> Iterator[Slapd]:
    server = Slapd(suffix)
    try:
        yield server.start()
    finally:
        server.remove()
