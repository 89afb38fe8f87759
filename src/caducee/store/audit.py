"""Append-only audit log: who opened, exported or sent which stored message, and when.

Kept in the message store's SQLite file. Triggers refuse UPDATE and DELETE, so the log can only
grow through this API. Entries name the event, the message id and a short detail (an account,
a count) — never message content, subjects, PINs or keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3

from caducee.errors import UsageError

__all__ = ["EVENTS", "AuditEntry", "AuditLog"]

EVENTS = ("read", "exported", "sent", "queued", "mdn-sent", "fetched")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    message INTEGER,
    actor TEXT,
    detail TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    event: str
    message: int | None
    actor: str | None
    detail: str | None


class AuditLog:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.executescript(_SCHEMA)

    def record(
        self,
        event: str,
        message: int | None = None,
        *,
        actor: str | None = None,
        detail: str | None = None,
    ) -> None:
        if event not in EVENTS:
            raise UsageError(f"unknown audit event {event!r}")
        self._db.execute(
            "INSERT INTO audit (at, event, message, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (
                dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                event,
                message,
                actor,
                (detail or "")[:200] or None,
            ),
        )

    def entries(self, message: int | None = None) -> list[AuditEntry]:
        sql = "SELECT * FROM audit"
        args: tuple[object, ...] = ()
        if message is not None:
            sql += " WHERE message = ?"
            args = (message,)
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5])
            for r in self._db.execute(sql + " ORDER BY id", args)
        ]
