"""A CA's on-disk state: one directory per CA.

::

    ca.json        configuration (name, CRL and AIA URLs, validity policy)
    ca.pem         the CA certificate
    chain.pem      the certificates above it (empty for a root)
    ca.key.pem     the CA private key, encrypted PKCS#8, mode 0600 (absent for a token key)
    index.sqlite   issued certificates and their status; the CRL number
    crl.der/.pem   the latest CRL (what ``caducee ca serve`` publishes)

SQLite rather than a JSON file: an operator issues tens of thousands of certificates, revocation
must be atomic with the CRL number, and lookups by serial or e-mail want an index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pathlib
import sqlite3
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee.certfiles import load_certificates
from caducee.errors import ConfigError, KeyStoreError, UsageError
from caducee.keys.software import load_private_key
from caducee.pki.names import UB_COMMON_NAME, check_http_url, check_text
from caducee.pki.profiles import ValidityPolicy
from caducee.pki.signer import CAPrivateKey
from caducee.serials import format_serial

CONFIG = "ca.json"
CERT = "ca.pem"
CHAIN = "chain.pem"
KEY = "ca.key.pem"
INDEX = "index.sqlite"
CRL_DER = "crl.der"
CRL_PEM = "crl.pem"
PENDING = "pending.json"  # configuration of a CA waiting for its certificate (see ca request)
PENDING_CSR = "pending-csr.pem"


@dataclasses.dataclass(frozen=True)
class CAConfig:
    name: str
    crl_url: str
    aia_url: str | None = None
    ocsp_url: str | None = None
    validity: ValidityPolicy = dataclasses.field(default_factory=ValidityPolicy)
    key_on_token: bool = False
    #: directory of the parent CA when it runs on this machine (``ca init --parent``): its CRL
    #: tells this CA whether it has itself been revoked
    parent_dir: str | None = None

    def __post_init__(self) -> None:
        check_text("CA name", self.name, UB_COMMON_NAME)
        check_http_url("CRL URL", self.crl_url)
        if self.aia_url is not None:
            check_http_url("AIA URL", self.aia_url)
        if self.ocsp_url is not None:
            check_http_url("OCSP URL", self.ocsp_url)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> CAConfig:
        try:
            data = json.loads(text)
            data["validity"] = ValidityPolicy(**data.get("validity", {}))
            return cls(**data)
        except (ValueError, TypeError, AttributeError, UsageError) as exc:
            raise ConfigError(f"{where}: invalid CA configuration ({exc})") from None


@dataclasses.dataclass(frozen=True)
class IssuedRecord:
    serial: int
    subject: str
    email: str | None
    professional_id: str | None
    purpose: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str  # "valid" or "revoked"
    revocation_time: dt.datetime | None
    reason: str | None

    @property
    def serial_hex(self) -> str:
        return format_serial(self.serial)


@dataclasses.dataclass(frozen=True)
class IndexEvent:
    """One change of a certificate's status, kept in the index's ``history`` table (the CA's
    audit trail of revocations and hold releases: what, when, and who ran it if known)."""

    serial: int
    time: dt.datetime
    action: str  # "revoked" or "released"
    reason: str | None  # the revocation reason; for a release, the reason it was under (hold)
    actor: str | None


def key_id(public_key: object) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: how the index finds every certificate of one key."""
    spki = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY,          -- uppercase hex
    subject TEXT NOT NULL,
    email TEXT,
    professional_id TEXT,
    purpose TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'valid',
    revocation_time TEXT,
    reason TEXT,
    der BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certs_email ON certs(email);
CREATE INDEX IF NOT EXISTS certs_status ON certs(status);
CREATE TABLE IF NOT EXISTS keys (key_id TEXT NOT NULL, serial TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS keys_key_id ON keys(key_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_HISTORY = """
CREATE TABLE IF NOT EXISTS history (
    serial TEXT NOT NULL, time TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, actor TEXT
);
CREATE INDEX IF NOT EXISTS history_serial ON history(serial);
"""


def _upgrade(db: sqlite3.Connection) -> None:
    """Index files made before the ``keys`` table: add it, filled from the stored certificates;
    before the ``history`` table: add it, empty (earlier changes were not recorded)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "certs" in tables and "history" not in tables:
        for statement in _HISTORY.split(";"):
            if statement.strip():
                db.execute(statement)
    if "certs" not in tables or "keys" in tables:
        return
    db.execute("CREATE TABLE keys (key_id TEXT NOT NULL, serial TEXT NOT NULL)")
    db.execute("CREATE INDEX keys_key_id ON keys(key_id)")
    for serial, der in db.execute("SELECT serial, der FROM certs").fetchall():
        cert = x509.load_der_x509_certificate(bytes(der))
        db.execute("INSERT INTO keys VALUES (?, ?)", (key_id(cert.public_key()), serial))


def release_refusal(
    serial: int, status: str, reason: str | None, since: dt.datetime | None
) -> str | None:
    """Why a certificate in this state cannot be released from hold (None: it can)."""
    shown = format_serial(serial)
    if status != "revoked":
        return f"serial {shown} is not on hold (it is {status}): nothing to release"
    if reason != "certificateHold":
        when = f" on {since:%Y-%m-%d %H:%M} UTC" if since is not None else ""
        return (
            f"serial {shown} was revoked ({reason}){when}: only a certificateHold can be "
            "released, any other revocation is final"
        )
    return None


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def write_private(path: pathlib.Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class CAStore:
    """Files and index of one CA directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)

    # -- creation ----------------------------------------------------------------------------------

    def check_free(self, *, pending_ok: bool = False) -> None:
        """Refuse before anything is signed or written if a CA (or a request) is already here,
        or if the directory cannot be created."""
        if (self.path / CONFIG).exists():
            raise UsageError(f"{self.path}: a CA already exists here")
        if not pending_ok and (self.path / PENDING).exists():
            raise UsageError(
                f"{self.path}: a CA request is pending here (finish it with 'caducee ca adopt')"
            )
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path}: exists and is not a directory")
        parent = next((p for p in self.path.absolute().parents if p.exists()), None)
        if not self.path.exists() and (parent is None or not os.access(parent, os.W_OK)):
            raise UsageError(f"{self.path}: cannot create the CA directory here")

    def create(
        self,
        config: CAConfig,
        certificate: x509.Certificate,
        chain: list[x509.Certificate],
        key: CAPrivateKey | None,
        passphrase: bytes | None,
    ) -> None:
        if (self.path / CONFIG).exists():
            raise UsageError(f"{self.path}: a CA already exists here")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if key is not None and (self.path / KEY).exists():
            raise UsageError(f"{self.path}: a CA key file already exists here")
        if key is not None:
            if not passphrase:
                raise UsageError("a passphrase is required to protect the CA key")
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(passphrase),
            )
            write_private(self.path / KEY, pem)
        (self.path / CERT).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (self.path / CHAIN).write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        )
        with self._db() as db:
            db.executescript(_SCHEMA + _HISTORY)
        (self.path / CONFIG).write_text(config.to_json())
        (self.path / PENDING).unlink(missing_ok=True)
        (self.path / PENDING_CSR).unlink(missing_ok=True)

    def create_pending(
        self, config: CAConfig, key: CAPrivateKey, passphrase: bytes, csr_pem: bytes
    ) -> None:
        """First half of a CA certified elsewhere: its key (encrypted) and request, no cert."""
        if (self.path / CONFIG).exists() or (self.path / PENDING).exists():
            raise UsageError(f"{self.path}: a CA (or a pending request) already exists here")
        if not passphrase:
            raise UsageError("a passphrase is required to protect the CA key")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        write_private(self.path / KEY, pem)
        (self.path / PENDING_CSR).write_bytes(csr_pem)
        (self.path / PENDING).write_text(config.to_json())

    def pending(self) -> tuple[CAConfig, bytes] | None:
        """The pending configuration and request, if ``create_pending`` ran and no cert yet."""
        if not (self.path / PENDING).is_file():
            return None
        config = CAConfig.from_json((self.path / PENDING).read_text(), str(self.path / PENDING))
        return config, (self.path / PENDING_CSR).read_bytes()

    # -- reading -----------------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def _require(self) -> None:
        if self.exists():
            return
        if (self.path / PENDING).is_file():
            raise ConfigError(
                f"{self.path}: no CA here yet, only a request waiting for its certificate; "
                f"install it with 'caducee ca adopt --ca {self.path} --cert FILE'"
            )
        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: no such CA directory (run 'caducee ca init' first)")
        raise ConfigError(f"{self.path}: no CA here (run 'caducee ca init' first)")

    def config(self) -> CAConfig:
        self._require()
        return CAConfig.from_json((self.path / CONFIG).read_text(), str(self.path / CONFIG))

    def certificate(self) -> x509.Certificate:
        self._require()
        return load_certificates((self.path / CERT).read_bytes(), str(self.path / CERT))[0]

    def chain(self) -> list[x509.Certificate]:
        data = (self.path / CHAIN).read_bytes() if (self.path / CHAIN).exists() else b""
        return load_certificates(data, str(self.path / CHAIN)) if data.strip() else []

    def load_key(self, passphrase: bytes | None) -> CAPrivateKey:
        self._require()
        path = self.path / KEY
        if not path.exists():
            raise KeyStoreError(f"{path}: no CA key file (is the key on a token?)")
        if passphrase is None:
            raise KeyStoreError("the CA key passphrase is needed for this operation")
        try:
            return load_private_key(path.read_bytes(), passphrase)
        except KeyStoreError:
            raise KeyStoreError(f"{path}: cannot decrypt the CA key (wrong passphrase?)") from None

    # -- index -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path / INDEX, timeout=10)
        try:
            with db:  # one transaction
                _upgrade(db)
                yield db
        finally:
            db.close()

    def record(
        self, cert: x509.Certificate, purpose: str, email: str | None, pid: str | None
    ) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO certs (serial, subject, email, professional_id, purpose, not_before,"
                " not_after, der) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    format(cert.serial_number, "X"),
                    cert.subject.rfc4514_string(),
                    email.lower() if email else None,
                    pid,
                    purpose,
                    cert.not_valid_before_utc.isoformat(),
                    cert.not_valid_after_utc.isoformat(),
                    cert.public_bytes(serialization.Encoding.DER),
                ),
            )
            db.execute(
                "INSERT INTO keys (key_id, serial) VALUES (?, ?)",
                (key_id(cert.public_key()), format(cert.serial_number, "X")),
            )

    def records_for_key(self, public_key: object) -> list[IssuedRecord]:
        """Every certificate this CA issued for ``public_key`` (any purpose, any status)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT serial FROM keys WHERE key_id = ?", (key_id(public_key),)
            ).fetchall()
        return [r for row in rows for r in self.records(serial=int(row[0], 16))]

    def records_for_email(self, email: str) -> list[IssuedRecord]:
        """Every certificate this CA issued for ``email`` (compared in lower case)."""
        return self.records(email=email.lower())

    def mark_revoked(
        self, serial: int, when: dt.datetime, reason: str, *, actor: str | None = None
    ) -> IssuedRecord:
        key = format(serial, "X")
        with self._db() as db:
            row = db.execute(
                "SELECT status, reason, revocation_time FROM certs WHERE serial = ?", (key,)
            ).fetchone()
            if row is None:
                raise UsageError(
                    f"serial {format_serial(serial)}: no certificate with this serial "
                    f"in {self.path}"
                )
            if row[0] == "revoked" and row[1] != "certificateHold":  # a hold may become final
                raise UsageError(f"serial {format_serial(serial)} is already revoked")
            if row[0] == "revoked" and reason == "certificateHold":  # keep the first hold date
                raise UsageError(
                    f"serial {format_serial(serial)} is already on hold since "
                    f"{_ts(row[2]):%Y-%m-%d %H:%M} UTC"
                )
            db.execute(
                "UPDATE certs SET status='revoked', revocation_time=?, reason=? WHERE serial=?",
                (when.isoformat(), reason, key),
            )
            db.execute(
                "INSERT INTO history (serial, time, action, reason, actor) VALUES (?,?,?,?,?)",
                (key, when.isoformat(), "revoked", reason, actor),
            )
        return self.get(serial)

    def mark_released(
        self, serial: int, when: dt.datetime, *, actor: str | None = None
    ) -> IssuedRecord:
        """Take a certificate off hold: valid again, the release kept in ``history``.

        Only ``certificateHold`` is temporary (RFC 5280 5.3.1); any other reason is final.
        """
        key = format(serial, "X")
        shown = format_serial(serial)
        with self._db() as db:
            row = db.execute(
                "SELECT status, reason, revocation_time FROM certs WHERE serial = ?", (key,)
            ).fetchone()
            if row is None:
                raise UsageError(f"serial {shown}: no certificate with this serial in {self.path}")
            refusal = release_refusal(serial, row[0], row[1], _ts(row[2]))
            if refusal is not None:
                raise UsageError(refusal)
            db.execute(
                "UPDATE certs SET status='valid', revocation_time=NULL, reason=NULL WHERE serial=?",
                (key,),
            )
            db.execute(
                "INSERT INTO history (serial, time, action, reason, actor) VALUES (?,?,?,?,?)",
                (key, when.isoformat(), "released", row[1], actor),
            )
        return self.get(serial)

    def history(self, serial: int | None = None) -> list[IndexEvent]:
        """Recorded status changes (revocations, releases), oldest first; one serial or all."""
        self._require()
        with self._db() as db:
            rows = db.execute(
                "SELECT serial, time, action, reason, actor FROM history"
                " WHERE (?1 IS NULL OR serial = ?1) ORDER BY rowid",
                (None if serial is None else format(serial, "X"),),
            ).fetchall()
        return [
            IndexEvent(int(r[0], 16), dt.datetime.fromisoformat(r[1]), r[2], r[3], r[4])
            for r in rows
        ]

    def get(self, serial: int) -> IssuedRecord:
        records = self.records(serial=serial)
        if not records:
            raise UsageError(
                f"serial {format_serial(serial)}: no certificate with this serial in {self.path}"
            )
        return records[0]

    def certificate_der(self, serial: int) -> bytes:
        with self._db() as db:
            row = db.execute(
                "SELECT der FROM certs WHERE serial=?", (format(serial, "X"),)
            ).fetchone()
        if row is None:
            raise UsageError(
                f"serial {format_serial(serial)}: no certificate with this serial in {self.path}"
            )
        return bytes(row[0])

    def records(
        self, *, status: str | None = None, serial: int | None = None, email: str | None = None
    ) -> list[IssuedRecord]:
        """Issued certificates, oldest first, optionally only one status or one serial."""
        self._require()
        with self._db() as db:
            rows = db.execute(
                "SELECT serial, subject, email, professional_id, purpose, not_before, not_after,"
                " status, revocation_time, reason FROM certs"
                " WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR serial = ?2)"
                " AND (?3 IS NULL OR email = ?3) ORDER BY not_before",
                (status, None if serial is None else format(serial, "X"), email),
            ).fetchall()
        return [
            IssuedRecord(
                serial=int(r[0], 16),
                subject=r[1],
                email=r[2],
                professional_id=r[3],
                purpose=r[4],
                not_before=dt.datetime.fromisoformat(r[5]),
                not_after=dt.datetime.fromisoformat(r[6]),
                status=r[7],
                revocation_time=_ts(r[8]),
                reason=r[9],
            )
            for r in rows
        ]

    def next_crl_number(self) -> int:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key='crl_number'").fetchone()
            number = int(row[0]) + 1 if row else 1
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('crl_number', ?)", (str(number),)
            )
        return number

    def save_crl(self, crl: x509.CertificateRevocationList) -> None:
        _write_atomic(self.path / CRL_DER, crl.public_bytes(serialization.Encoding.DER))
        _write_atomic(self.path / CRL_PEM, crl.public_bytes(serialization.Encoding.PEM))

    def latest_crl(self) -> x509.CertificateRevocationList | None:
        path = self.path / CRL_DER
        return x509.load_der_x509_crl(path.read_bytes()) if path.exists() else None
