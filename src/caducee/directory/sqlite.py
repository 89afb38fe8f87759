"""The embedded directory (the default): one SQLite file, safe to share between threads.

Two tables: ``entries`` (one row per e-mail, the professional attributes) and ``certificates``
(DER, keyed by SHA-256 fingerprint). Names and organisations compare case-insensitively, as
LDAP does, for every script: SQLite's NOCASE folds ASCII only, so each entry also stores the
folded form (:func:`caducee.directory.api.fold`) of those columns, and lookups compare that.

Opening never creates a folder; a lookup never creates anything (``create=False``): a missing
file is reported as "no directory database at ...".
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator

from cryptography import x509

from caducee.directory.api import (
    Directory,
    DirectoryEntry,
    DirectoryUnavailableError,
    LookupResult,
    Query,
    _CertPredicate,
    build_entry,
    decode_all,
    der,
    fingerprint,
    fold,
)
from caducee.errors import DirectoryError
from caducee.sqlitetx import immediate

__all__ = ["SqliteDirectory"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    email TEXT PRIMARY KEY,
    common_name TEXT NOT NULL COLLATE NOCASE,
    surname TEXT NOT NULL COLLATE NOCASE,
    given_name TEXT NOT NULL COLLATE NOCASE,
    profession TEXT NOT NULL,
    organisation TEXT NOT NULL COLLATE NOCASE,
    professional_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_cn ON entries(common_name);
CREATE INDEX IF NOT EXISTS entries_sn ON entries(surname);
CREATE INDEX IF NOT EXISTS entries_gn ON entries(given_name);
CREATE INDEX IF NOT EXISTS entries_o ON entries(organisation);
CREATE INDEX IF NOT EXISTS entries_pid ON entries(professional_id);
CREATE TABLE IF NOT EXISTS certificates (
    fingerprint TEXT PRIMARY KEY,
    email TEXT NOT NULL REFERENCES entries(email) ON DELETE CASCADE,
    serial TEXT NOT NULL,
    der BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_email ON certificates(email);
CREATE INDEX IF NOT EXISTS certificates_serial ON certificates(serial);
"""

#: folded copies of the columns looked up "in any case" (added to older files on opening)
_KEYS = {
    "common_name": "common_name_key",
    "surname": "surname_key",
    "given_name": "given_name_key",
    "organisation": "organisation_key",
}

_FIELDS = (
    "email",
    "common_name",
    "surname",
    "given_name",
    "profession",
    "organisation",
    "professional_id",
)


class SqliteDirectory(Directory):
    """A directory in one SQLite file (``":memory:"`` for a throw-away one)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        max_results: int = 100,
        timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        """``create``: whether a missing file may be created (never its folder)."""
        self.path = str(path)
        self.name = name or f"sqlite:{self.path}"
        self.max_results = max_results
        self._lock = threading.RLock()
        self._create = create
        self._db: sqlite3.Connection | None = None
        self._timeout = timeout
        if self.path == ":memory:" or create or pathlib.Path(self.path).exists():
            self._open()
        # else: opened at the first use, so that a federation listing a database not yet
        # created reports that operator as unavailable instead of failing to start

    def _missing(self) -> str | None:
        """Why the file cannot be opened without creating something, or None."""
        file = pathlib.Path(self.path)
        if file.exists():
            return None
        if not self._create:
            return f"no directory database at {self.path}"
        if not file.parent.is_dir():
            return (
                f"no directory database at {self.path} (folder {file.parent} does not exist; "
                "create it first)"
            )
        return None

    def _open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if self.path == ":memory:":
            target, uri = ":memory:", False
        else:
            why = self._missing()
            if why is not None:
                raise DirectoryUnavailableError(why)
            mode = "rwc" if self._create else "rw"
            target, uri = f"{pathlib.Path(self.path).absolute().as_uri()}?mode={mode}", True
        db = None
        try:
            db = sqlite3.connect(
                target,
                timeout=self._timeout,
                check_same_thread=False,
                isolation_level=None,
                uri=uri,
            )
            db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
            self._add_keys(db)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise DirectoryUnavailableError(f"cannot open directory {self.path}: {exc}") from None
        self._db = db
        return db

    @staticmethod
    def _add_keys(db: sqlite3.Connection) -> None:
        """Add the folded columns to a file written by an older caducee, and fill those of
        rows written by other tools. A file with nothing to fill is not written to."""
        present = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
        missing = [k for k in _KEYS.values() if k not in present]
        if missing:
            with immediate(db):
                for key in missing:
                    db.execute(f"ALTER TABLE entries ADD COLUMN {key} TEXT")
                    db.execute(f"CREATE INDEX IF NOT EXISTS entries_{key} ON entries({key})")
        unfilled = " OR ".join(f"{k} IS NULL" for k in _KEYS.values())
        select = f"SELECT email, {', '.join(_KEYS)} FROM entries WHERE {unfilled}"  # noqa: S608
        if db.execute(select + " LIMIT 1").fetchone() is None:
            return
        with immediate(db):
            rows = db.execute(select).fetchall()
            db.executemany(
                f"UPDATE entries SET {', '.join(f'{k} = ?' for k in _KEYS.values())} "  # noqa: S608
                "WHERE email = ?",
                [(*(fold(str(v)) for v in values), email) for email, *values in rows],
            )

    def ensure_open(self) -> None:
        """Open now; raises DirectoryUnavailableError ("no directory database at ...")."""
        with self._lock:
            self._open()

    @property
    def _conn(self) -> sqlite3.Connection:
        with self._lock:
            return self._open()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with immediate(self._conn) as db:
                    yield db
            except sqlite3.Error as exc:
                raise DirectoryError(f"directory {self.path}: {exc}") from None

    def search(self, query: Query) -> LookupResult:
        clauses, args = [], []
        if query.email is not None:
            clauses.append("email = ?")
            args.append(query.email)
        if query.name is not None:
            clauses.append("(common_name_key = ? OR surname_key = ? OR given_name_key = ?)")
            args += [fold(query.name)] * 3
        if query.professional_id is not None:
            clauses.append("professional_id = ?")
            args.append(query.professional_id)
        if query.organisation is not None:
            clauses.append("organisation_key = ?")
            args.append(fold(query.organisation))
        sql = (
            f"SELECT {', '.join(_FIELDS)} FROM entries WHERE {' AND '.join(clauses)} "  # noqa: S608
            f"ORDER BY email LIMIT {self.max_results + 1}"
        )
        problems: list[str] = []
        entries = []
        try:
            with self._lock:
                conn = self._conn
                rows = conn.execute(sql, args).fetchall()
                if len(rows) > self.max_results:
                    problems.append(
                        f"{self.name}: more than {self.max_results} entries match; "
                        "refine the lookup"
                    )
                    rows = rows[: self.max_results]
                certs: dict[str, list[bytes]] = {row[0]: [] for row in rows}
                for email in certs:
                    for (blob,) in conn.execute(
                        "SELECT der FROM certificates WHERE email = ? ORDER BY rowid", (email,)
                    ):
                        certs[email].append(bytes(blob))
        except sqlite3.Error as exc:
            raise DirectoryError(f"directory {self.path}: lookup failed: {exc}") from None
        for row in rows:
            fields = {k: str(v) for k, v in zip(_FIELDS, row, strict=True)}
            where = f"{self.name} entry {fields['email']}"
            decoded = decode_all(certs[fields["email"]], where, problems)
            entry = build_entry(fields, decoded, where, problems, self.name)
            if entry is not None:
                entries.append(entry)
        return LookupResult(tuple(entries), tuple(problems))

    def _publish(self, entry: DirectoryEntry) -> DirectoryEntry:
        with self._tx() as db:
            self._store(db, entry)
        stored = self.search(Query(email=entry.email)).entries
        return stored[0] if stored else entry

    @staticmethod
    def _store(db: sqlite3.Connection, entry: DirectoryEntry) -> None:
        columns = (*_FIELDS, *_KEYS.values())
        values = (
            *(getattr(entry, f) for f in _FIELDS),
            *(fold(getattr(entry, f)) for f in _KEYS),
        )
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "email")
        db.execute(
            f"INSERT INTO entries ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT(email) DO UPDATE SET {updates}",
            values,
        )
        db.executemany(
            "INSERT OR IGNORE INTO certificates (fingerprint, email, serial, der) "
            "VALUES (?, ?, ?, ?)",
            [
                (fingerprint(c), entry.email, f"{c.serial_number:x}", der(c))
                for c in entry.certificates
            ],
        )

    def _withdraw_email(self, email: str) -> int:
        with self._tx() as db:
            (count,) = db.execute(
                "SELECT count(*) FROM certificates WHERE email = ?", (email,)
            ).fetchone()
            db.execute("DELETE FROM entries WHERE email = ?", (email,))
        return int(count)

    def _withdraw_certificates(
        self,
        predicate: _CertPredicate,
        certificate: x509.Certificate | None,
        serial: int | None,
    ) -> int:
        with self._tx() as db:
            if certificate is not None:
                rows = db.execute(
                    "SELECT fingerprint, email FROM certificates WHERE fingerprint = ?",
                    (fingerprint(certificate),),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT fingerprint, email FROM certificates WHERE serial = ?", (f"{serial:x}",)
                ).fetchall()
            for fp, _ in rows:
                db.execute("DELETE FROM certificates WHERE fingerprint = ?", (fp,))
            for email in {email for _, email in rows}:
                db.execute(
                    "DELETE FROM entries WHERE email = ? AND NOT EXISTS "
                    "(SELECT 1 FROM certificates WHERE certificates.email = entries.email)",
                    (email,),
                )
        return len(rows)

    def bulk_load(self, entries: Iterable[DirectoryEntry]) -> int:
        """Import many entries in one transaction (operator migrations, benchmarks).

        Each entry is checked as :meth:`publish` would; returns the number imported.
        """
        count = 0
        with self._tx() as db:
            for entry in entries:
                entry.check_certificates()
                self._store(db, entry)
                count += 1
        return count

    def count(self) -> int:
        """Number of entries (for operators and benchmarks)."""
        with self._lock:
            (n,) = self._conn.execute("SELECT count(*) FROM entries").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
