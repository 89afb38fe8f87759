"""The embedded directory (the default): one SQLite file, safe to share between threads.

Two tables: ``entries`` (one row per e-mail, the professional attributes) and ``certificates``
(DER, keyed by SHA-256 fingerprint). Text columns compare case-insensitively, as LDAP does.
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
    ) -> None:
        self.path = str(path)
        self.name = name or f"sqlite:{self.path}"
        self.max_results = max_results
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                parent = pathlib.Path(self.path).parent
                parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise DirectoryUnavailableError(f"cannot open directory {self.path}: {exc}") from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with immediate(self._db) as db:
                    yield db
            except sqlite3.Error as exc:
                raise DirectoryError(f"directory {self.path}: {exc}") from None

    def search(self, query: Query) -> LookupResult:
        clauses, args = [], []
        if query.email is not None:
            clauses.append("email = ?")
            args.append(query.email)
        if query.name is not None:
            clauses.append("(common_name = ? OR surname = ? OR given_name = ?)")
            args += [query.name] * 3
        if query.professional_id is not None:
            clauses.append("professional_id = ?")
            args.append(query.professional_id)
        if query.organisation is not None:
            clauses.append("organisation = ?")
            args.append(query.organisation)
        sql = (
            f"SELECT {', '.join(_FIELDS)} FROM entries WHERE {' AND '.join(clauses)} "  # noqa: S608
            f"ORDER BY email LIMIT {self.max_results + 1}"
        )
        problems: list[str] = []
        entries = []
        try:
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
                if len(rows) > self.max_results:
                    problems.append(
                        f"{self.name}: more than {self.max_results} entries match; "
                        "refine the lookup"
                    )
                    rows = rows[: self.max_results]
                certs: dict[str, list[bytes]] = {row[0]: [] for row in rows}
                for email in certs:
                    for (blob,) in self._db.execute(
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
        db.execute(
            f"INSERT INTO entries ({', '.join(_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT(email) DO UPDATE SET common_name = excluded.common_name, "
            "surname = excluded.surname, given_name = excluded.given_name, "
            "profession = excluded.profession, organisation = excluded.organisation, "
            "professional_id = excluded.professional_id",
            tuple(getattr(entry, f) for f in _FIELDS),
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
            (n,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
