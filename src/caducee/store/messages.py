"""The local message store: one SQLite file (WAL, mode 0600) holding mail exactly as it travelled.

Only wire bytes are kept — encrypted mail stays encrypted on disk; reading decrypts again. Next to
them: the outer headers, and the security verdict reached when the message was opened (encrypted?
signature valid/invalid/unsigned and why, who signed, when checked, or the decryption error).

Received messages are keyed by (account, mailbox, uidvalidity, uid) UNIQUE: a fetch interrupted
by a crash and started again finds what it already has and neither duplicates nor loses anything.
The wire bytes are committed first (status ``pending``), the verdict in a second transaction; a
pending row is simply opened again on the next fetch. The wire bytes live in their own table
(``wires``) so that recording a verdict or a receipt does not rewrite the whole message.

A message moved (or copied) on the server from one fetched folder to another arrives again
under a new key with the same bytes. Its row is still recorded, so that each folder's resume
position advances, but as a copy of the first one (``copy_of``, found by the SHA-256 of the
wire bytes): copies are not listed, counted, opened or kept twice.

Sent messages carry one row per recipient with its delivery state (sent, then processed or
displayed as signed MDNs arrive). The outbox (messages a server refused for now) is a table too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import pathlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from caducee.errors import CaduceeError, UsageError
from caducee.sqlitetx import immediate

__all__ = [
    "Arrival",
    "MessageStore",
    "NoSuchMessageError",
    "OutboxItem",
    "RecipientState",
    "StoredMessage",
    "StoreError",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    account TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    outer_from TEXT, outer_to TEXT, outer_subject TEXT, outer_date TEXT, message_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    encrypted INTEGER,
    signature TEXT,
    reason TEXT,
    signer_email TEXT, signer_subject TEXT, signer_issuer TEXT,
    signing_time TEXT,
    verified_at TEXT,
    error TEXT,
    is_mdn INTEGER NOT NULL DEFAULT 0,
    mdn_requested TEXT,
    mdn_sent TEXT,
    mdn_due TEXT,
    sha256 TEXT,
    copy_of INTEGER REFERENCES messages (id),
    UNIQUE (account, mailbox, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE TABLE IF NOT EXISTS wires (
    message INTEGER PRIMARY KEY REFERENCES messages (id),
    wire BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS recipients (
    message INTEGER NOT NULL REFERENCES messages (id),
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (message, address)
);
CREATE TABLE IF NOT EXISTS peer_capabilities (
    address TEXT PRIMARY KEY,
    capabilities BLOB NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    message INTEGER REFERENCES messages (id),
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    wire BLOB NOT NULL,
    queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT
);
"""

#: A message with its wire bytes (kept in their own table: a verdict or receipt state updated
#: in ``messages`` then does not rewrite a row holding the whole message).
_SELECT = "SELECT m.* FROM messages m"  # the wire bytes are read apart (see StoredMessage)

#: Delivery states in the order they progress; a later MDN never moves a recipient backwards.
STATES = ("queued", "sent", "processed", "displayed")
#: A server refused the message for good (bad address...): it will not be retried.
REJECTED = "rejected"


class StoreError(CaduceeError):
    """The message store cannot be opened or written."""

    exit_code = 9


class NoSuchMessageError(StoreError):
    """The message number given is not in the local message store."""


@dataclasses.dataclass(frozen=True)
class RecipientState:
    address: str
    state: str
    updated_at: str


@dataclasses.dataclass(frozen=True)
class StoredMessage:
    """One row; ``wire`` is the message as it travelled (encrypted when it was): read from
    the store when first asked for in a listing (:meth:`MessageStore.messages` does not hold
    every message's bytes), at once by :meth:`MessageStore.get`."""

    id: int
    direction: str
    account: str
    mailbox: str
    uid: str
    stored_at: str
    wire_source: Callable[[], bytes] = dataclasses.field(repr=False, compare=False)
    outer_from: str | None
    outer_to: str | None
    outer_subject: str | None
    outer_date: str | None
    message_id: str | None
    status: str  # pending, opened, failed
    encrypted: bool | None
    signature: str | None  # valid, invalid, untrusted (intact, signer unchecked), unsigned
    reason: str | None
    signer_email: str | None
    signer_subject: str | None
    signer_issuer: str | None
    signing_time: str | None
    verified_at: str | None
    error: str | None
    is_mdn: bool
    mdn_requested: str | None
    mdn_sent: str | None
    recipients: tuple[RecipientState, ...] = ()
    mdn_due: str | None = None  # a receipt held back, sent at the next fetch

    @property
    def wire(self) -> bytes:
        return self.wire_source()

    def __repr__(self) -> str:  # never the wire bytes
        return f"<StoredMessage {self.id} {self.direction} {self.status} {self.signature}>"


@dataclasses.dataclass(frozen=True)
class OutboxItem:
    id: int
    message: int | None
    sender: str
    recipients: tuple[str, ...]
    wire: bytes
    queued_at: str
    attempts: int
    last_error: str | None
    next_attempt_at: str | None = None  # ISO 8601 UTC; None: at the next round

    def __repr__(self) -> str:
        return f"<OutboxItem {self.id} for message {self.message}, {self.attempts} attempt(s)>"


@dataclasses.dataclass(frozen=True)
class Arrival:
    """What storing one received message did: ``id`` of the new row to open (None when it was
    stored before, or is a copy), ``copy_of`` the message it repeats byte for byte."""

    id: int | None
    copy_of: int | None = None


def _sha256(wire: bytes) -> str:
    return hashlib.sha256(wire).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _secure_file(path: pathlib.Path) -> None:
    """Create the database file (and WAL companions) 0600 before SQLite touches them."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if name == path or name.exists():
            fd = os.open(name, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            os.chmod(name, 0o600)


_PAGE_SIZE = 16384  # new stores only; an existing store keeps its own


class MessageStore:
    """The SQLite message store; ``with MessageStore(path) as store:`` closes it.

    It may be used from any thread, one transaction at a time (a lock); a closed store
    raises :class:`StoreError`. Several stores (processes, sessions) may share one file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        old_umask = os.umask(0o077)  # WAL and SHM files SQLite creates later are 0600 too
        try:
            _secure_file(self.path)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            # Before WAL (it fixes the page size): a new store gets 16 KiB pages, which take a
            # received message's wire bytes (~150 KB) in a third less CPU than the default 4 KiB.
            self._db.execute(f"PRAGMA page_size={_PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # explicit: some builds default lower
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)
            self._upgrade()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the message store {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(
                f"cannot create the message store {self.path}: {exc.strerror}"
            ) from None
        finally:
            os.umask(old_umask)

    def __repr__(self) -> str:
        return f"<MessageStore {self.path}>"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the message store {self.path} is closed")
        return self._conn

    def _upgrade(self) -> None:
        """Bring a store written by an earlier version to this schema."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "next_attempt_at" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN next_attempt_at TEXT")
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(messages)")}
        if "wire" in columns:  # the wire bytes move out of the row every verdict rewrites
            with self.transaction() as db:
                db.execute(
                    "INSERT OR IGNORE INTO wires (message, wire) SELECT id, wire FROM messages"
                )
                db.execute("ALTER TABLE messages DROP COLUMN wire")
        if "copy_of" not in columns:  # received copies are recognised by their bytes' hash
            self._db.create_function("caducee_sha256", 1, _sha256, deterministic=True)
            with self.transaction() as db:
                db.execute("ALTER TABLE messages ADD COLUMN sha256 TEXT")
                db.execute(
                    "ALTER TABLE messages ADD COLUMN copy_of INTEGER REFERENCES messages (id)"
                )
                db.execute(
                    "UPDATE messages SET sha256 = (SELECT caducee_sha256(w.wire) FROM wires w"
                    " WHERE w.message = messages.id) WHERE direction = 'in'"
                )
        if "mdn_due" not in columns:  # receipts held back until a directory answers again
            self._db.execute("ALTER TABLE messages ADD COLUMN mdn_due TEXT")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS messages_sha256 ON messages (sha256) WHERE direction = 'in'"
        )

    def close(self) -> None:
        """Close the store (again: nothing happens)."""
        if self._conn is not None:
            with self._lock:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, shared with the audit log (same file, same transactions)."""
        return self._db

    @contextlib.contextmanager
    def transaction(self, *, recoverable: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

        Every commit is synced to disk, except ``recoverable`` ones: what they write can be
        read again from the mail server (a received message, its verdict), so a power cut may
        lose them (WAL keeps the file consistent) and the next fetch brings them back; they are
        then made durable by the next synced commit. Sent mail, the outbox and the audit log are
        never written that way."""
        with self._lock:
            if recoverable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                with immediate(self._db) as db:
                    yield db
            finally:
                if recoverable:
                    self._db.execute("PRAGMA synchronous=FULL")

    # -- received mail -----------------------------------------------------------------------------

    def last_uid(self, account: str, mailbox: str | None = None) -> str | None:
        """The UID most recently stored for this account (and mailbox), to fetch what follows."""
        position = self.last_position(account, mailbox)
        return position[0] if position else None

    def last_position(self, account: str, mailbox: str | None = None) -> tuple[str, int] | None:
        """(UID, UIDVALIDITY) most recently stored for this account (and mailbox)."""
        sql = "SELECT uid, uidvalidity FROM messages WHERE direction = 'in' AND account = ?"
        args: list[object] = [account]
        if mailbox is not None:
            sql += " AND mailbox = ?"
            args.append(mailbox)
        row = self._db.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return (str(row["uid"]), int(row["uidvalidity"])) if row else None

    def add_received(
        self,
        *,
        account: str,
        mailbox: str,
        uidvalidity: int,
        uid: str,
        wire: bytes,
        outer: dict[str, str | None],
    ) -> int | None:
        """Store the wire bytes (status pending); None when this UID is already stored or the
        message is a copy of one stored before (see :meth:`add_arrival`)."""
        return self.add_arrival(
            account=account,
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            wire=wire,
            outer=outer,
        ).id

    def add_arrival(
        self,
        *,
        account: str,
        mailbox: str,
        uidvalidity: int,
        uid: str,
        wire: bytes,
        outer: dict[str, str | None],
    ) -> Arrival:
        """Store a received message (status pending) and say whether it is new.

        Same key as a stored row: nothing written (a re-fetch after a crash). Same bytes as a
        received message stored under another key (moved between fetched folders): a row
        marked as its copy, without the bytes, so the folder's position still advances."""
        digest = _sha256(wire)
        with self.transaction(recoverable=True) as db:
            first = db.execute(
                "SELECT id FROM messages WHERE direction = 'in' AND sha256 = ?"
                " AND copy_of IS NULL ORDER BY id LIMIT 1",
                (digest,),
            ).fetchone()
            copy_of = int(first["id"]) if first is not None else None
            cur = db.execute(
                "INSERT OR IGNORE INTO messages (direction, account, mailbox, uidvalidity, uid,"
                " stored_at, outer_from, outer_to, outer_subject, outer_date, message_id,"
                " sha256, copy_of, status) VALUES ('in', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    account,
                    mailbox,
                    uidvalidity,
                    uid,
                    _now(),
                    outer.get("from"),
                    outer.get("to"),
                    outer.get("subject"),
                    outer.get("date"),
                    outer.get("message-id"),
                    digest,
                    copy_of,
                    "pending" if copy_of is None else "copy",
                ),
            )
            if cur.rowcount != 1:
                return Arrival(None)
            if copy_of is not None:
                return Arrival(None, copy_of)
            db.execute("INSERT INTO wires (message, wire) VALUES (?, ?)", (cur.lastrowid, wire))
            return Arrival(cur.lastrowid)

    def pending(self) -> list[int]:
        """Received messages stored but not yet opened (e.g. a crash came in between)."""
        rows = self._db.execute(
            "SELECT id FROM messages WHERE direction = 'in' AND status = 'pending'"
            " AND copy_of IS NULL ORDER BY id"
        )
        return [int(r["id"]) for r in rows]

    def record_verdict(
        self,
        message: int,
        *,
        status: str,
        encrypted: bool | None,
        signature: str | None,
        reason: str | None = None,
        signer_email: str | None = None,
        signer_subject: str | None = None,
        signer_issuer: str | None = None,
        signing_time: str | None = None,
        error: str | None = None,
        is_mdn: bool = False,
        mdn_requested: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Record what opening the message found (never its content)."""
        if status not in ("opened", "failed"):
            raise UsageError(f"unknown message status {status!r}")
        if signature not in (None, "valid", "invalid", "untrusted", "unsigned"):
            raise UsageError(f"unknown signature status {signature!r}")
        with self.transaction(recoverable=True) as db:
            db.execute(
                "UPDATE messages SET status = ?, encrypted = ?, signature = ?, reason = ?,"
                " signer_email = ?, signer_subject = ?, signer_issuer = ?, signing_time = ?,"
                " verified_at = ?, error = ?, is_mdn = ?, mdn_requested = ?,"
                " message_id = COALESCE(?, message_id) WHERE id = ?",
                (
                    status,
                    None if encrypted is None else int(encrypted),
                    signature,
                    reason,
                    signer_email,
                    signer_subject,
                    signer_issuer,
                    signing_time,
                    _now(),
                    error,
                    int(is_mdn),
                    mdn_requested,
                    message_id,
                    message,
                ),
            )

    def mark_mdn_sent(self, message: int, disposition: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET mdn_sent = ?, mdn_due = NULL WHERE id = ?",
                (disposition, message),
            )

    def mark_mdn_due(self, message: int, disposition: str) -> None:
        """Remember a receipt that could not be sent yet (a directory did not answer), so that
        it goes out later without the message being read again. A later "displayed" replaces
        a "processed" still due."""
        with self.transaction() as db:
            db.execute("UPDATE messages SET mdn_due = ? WHERE id = ?", (disposition, message))

    def receipts_due(self) -> list[tuple[int, Literal["processed", "displayed"]]]:
        """(message, disposition) of receipts held back, oldest first."""
        rows = self._db.execute(
            "SELECT id, mdn_due FROM messages WHERE mdn_due IN ('processed', 'displayed')"
            " ORDER BY id"
        )
        return [
            (int(r["id"]), "displayed" if r["mdn_due"] == "displayed" else "processed")
            for r in rows
        ]

    # -- sent mail ---------------------------------------------------------------------------------

    def add_sent(
        self,
        *,
        account: str,
        message_id: str,
        wire: bytes,
        outer: dict[str, str | None],
        recipients: Sequence[str],
        state: str,
        encrypted: bool,
        mdn_requested: str | None,
        signer_email: str | None,
        signer_subject: str | None,
        signer_issuer: str | None,
    ) -> int:
        """Keep the sent copy (as sent: encrypted to the sender too) and each recipient's state."""
        if state not in STATES:
            raise UsageError(f"unknown delivery state {state!r}")
        now = _now()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO messages (direction, account, mailbox, uidvalidity, uid, stored_at,"
                " outer_from, outer_to, outer_subject, outer_date, message_id, status,"
                " encrypted, signature, signer_email, signer_subject, signer_issuer, verified_at,"
                " mdn_requested) VALUES ('out', ?, 'Sent', 0, ?, ?, ?, ?, ?, ?, ?, 'opened',"
                " ?, 'valid', ?, ?, ?, ?, ?)",
                (
                    account,
                    message_id,
                    now,
                    outer.get("from"),
                    outer.get("to"),
                    outer.get("subject"),
                    outer.get("date"),
                    message_id,
                    int(encrypted),
                    signer_email,
                    signer_subject,
                    signer_issuer,
                    now,
                    mdn_requested,
                ),
            )
            assert cur.lastrowid is not None
            db.execute("INSERT INTO wires (message, wire) VALUES (?, ?)", (cur.lastrowid, wire))
            for address in dict.fromkeys(a.lower() for a in recipients):
                db.execute(
                    "INSERT INTO recipients (message, address, state, updated_at)"
                    " VALUES (?, ?, ?, ?)",
                    (cur.lastrowid, address, state, now),
                )
            return cur.lastrowid

    def set_recipients_state(self, message: int, state: str) -> None:
        if state not in (*STATES, REJECTED):
            raise UsageError(f"unknown delivery state {state!r}")
        with self.transaction() as db:
            db.execute(
                "UPDATE recipients SET state = ?, updated_at = ? WHERE message = ?",
                (state, _now(), message),
            )

    def apply_disposition(self, original_message_id: str, address: str, state: str) -> int | None:
        """Advance one recipient of a sent message (from an MDN); the sent message's id, or
        None if nothing matched."""
        if state not in STATES:
            return None
        with self.transaction() as db:
            row = db.execute(
                "SELECT r.message, r.state FROM recipients r JOIN messages m ON m.id = r.message"
                " WHERE m.direction = 'out' AND m.message_id = ? AND r.address = ?",
                (original_message_id, address.lower()),
            ).fetchone()
            if row is None:
                return None
            if STATES.index(state) > STATES.index(row["state"]):
                db.execute(
                    "UPDATE recipients SET state = ?, updated_at = ? WHERE message = ?"
                    " AND address = ?",
                    (state, _now(), row["message"], address.lower()),
                )
            return int(row["message"])

    def sent_id(self, message_id: str) -> int:
        """The store id of the message sent with this Message-ID."""
        row = self._db.execute(
            "SELECT id FROM messages WHERE direction = 'out' AND message_id = ?"
            " ORDER BY id DESC LIMIT 1",
            (message_id,),
        ).fetchone()
        if row is None:
            raise NoSuchMessageError(f"no sent message with Message-ID {message_id[:100]}")
        return int(row["id"])

    def recipient_states(self, message: int) -> dict[str, str]:
        """Each recipient of a sent message and its state (see ``STATES``, ``REJECTED``)."""
        rows = self._db.execute(
            "SELECT m.direction, r.address, r.state FROM messages m"
            " LEFT JOIN recipients r ON r.message = m.id WHERE m.id = ? ORDER BY r.address",
            (message,),
        ).fetchall()
        if not rows:
            raise NoSuchMessageError(f"no message {message} in the message store")
        if rows[0]["direction"] != "out":
            raise UsageError(f"message {message} was received, not sent: it has no recipients")
        return {r["address"]: r["state"] for r in rows if r["address"] is not None}

    # -- reading -----------------------------------------------------------------------------------

    def _wire(self, message: int) -> bytes:
        row = self._db.execute("SELECT wire FROM wires WHERE message = ?", (message,)).fetchone()
        if row is None:  # a received copy of another message keeps no bytes
            raise NoSuchMessageError(f"no message {message} in the message store")
        return bytes(row[0])

    def _message(self, row: sqlite3.Row, wire: Callable[[], bytes]) -> StoredMessage:
        recipients = tuple(
            RecipientState(r["address"], r["state"], r["updated_at"])
            for r in self._db.execute(
                "SELECT address, state, updated_at FROM recipients WHERE message = ?"
                " ORDER BY address",
                (row["id"],),
            )
        )
        return StoredMessage(
            id=row["id"],
            direction=row["direction"],
            account=row["account"],
            mailbox=row["mailbox"],
            uid=row["uid"],
            stored_at=row["stored_at"],
            wire_source=wire,
            outer_from=row["outer_from"],
            outer_to=row["outer_to"],
            outer_subject=row["outer_subject"],
            outer_date=row["outer_date"],
            message_id=row["message_id"],
            status=row["status"],
            encrypted=None if row["encrypted"] is None else bool(row["encrypted"]),
            signature=row["signature"],
            reason=row["reason"],
            signer_email=row["signer_email"],
            signer_subject=row["signer_subject"],
            signer_issuer=row["signer_issuer"],
            signing_time=row["signing_time"],
            verified_at=row["verified_at"],
            error=row["error"],
            is_mdn=bool(row["is_mdn"]),
            mdn_requested=row["mdn_requested"],
            mdn_sent=row["mdn_sent"],
            recipients=recipients,
            mdn_due=row["mdn_due"],
        )

    def get(self, message: int) -> StoredMessage:
        row = self._db.execute(_SELECT + " WHERE m.id = ?", (message,)).fetchone()
        if row is None:
            raise NoSuchMessageError(f"no message {message} in the message store")
        data = self._wire(message)
        return self._message(row, lambda: data)

    def messages(
        self, direction: str | None = None, include_mdn: bool = False
    ) -> list[StoredMessage]:
        sql = _SELECT + " WHERE m.copy_of IS NULL"
        args: list[object] = []
        if direction is not None:
            sql += " AND m.direction = ?"
            args.append(direction)
        if not include_mdn:
            sql += " AND m.is_mdn = 0"
        rows = self._db.execute(sql + " ORDER BY m.id", args).fetchall()
        return [self._message(r, functools.partial(self._wire, r["id"])) for r in rows]

    def count(self) -> int:
        """Messages kept (a received copy of a message already kept is not counted)."""
        row = self._db.execute("SELECT COUNT(*) FROM messages WHERE copy_of IS NULL").fetchone()
        return int(row[0])

    # -- what correspondents can decrypt -----------------------------------------------------------

    def set_capabilities(self, address: str, der: bytes) -> None:
        """Remember the SMIMECapabilities a correspondent announced in a valid signature."""
        if self.capabilities(address) == der:
            return  # every message from them says the same: no write, no sync
        with self.transaction(recoverable=True) as db:
            db.execute(
                "INSERT INTO peer_capabilities (address, capabilities, updated_at)"
                " VALUES (?, ?, ?) ON CONFLICT (address) DO UPDATE SET"
                " capabilities = excluded.capabilities, updated_at = excluded.updated_at",
                (address.lower(), der, _now()),
            )

    def capabilities(self, address: str) -> bytes | None:
        row = self._db.execute(
            "SELECT capabilities FROM peer_capabilities WHERE address = ?", (address.lower(),)
        ).fetchone()
        return bytes(row["capabilities"]) if row else None

    # -- outbox ------------------------------------------------------------------------------------

    def queue(
        self, message: int | None, sender: str, recipients: Sequence[str], wire: bytes, error: str
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO outbox (message, sender, recipients, wire, queued_at, attempts,"
                " last_error) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (message, sender, "\n".join(recipients), wire, _now(), error),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def outbox(self) -> list[OutboxItem]:
        return [
            OutboxItem(
                r["id"],
                r["message"],
                r["sender"],
                tuple(r["recipients"].split("\n")),
                bytes(r["wire"]),
                r["queued_at"],
                r["attempts"],
                r["last_error"],
                r["next_attempt_at"],
            )
            for r in self._db.execute("SELECT * FROM outbox ORDER BY id")
        ]

    def outbox_narrow(
        self, item: int, recipients: Sequence[str], error: str, retry_at: str | None = None
    ) -> None:
        """A submission failed: keep waiting only for ``recipients`` (the others were served
        or refused for good), not before ``retry_at`` (ISO 8601 UTC)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET recipients = ?, attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                ("\n".join(recipients), error, retry_at, item),
            )

    def set_recipient_state(self, message: int, address: str, state: str) -> None:
        """One recipient's delivery state (e.g. sent, or rejected by the server)."""
        if state not in (*STATES, REJECTED):
            raise UsageError(f"unknown delivery state {state!r}")
        with self.transaction() as db:
            db.execute(
                "UPDATE recipients SET state = ?, updated_at = ? WHERE message = ? AND address = ?",
                (state, _now(), message, address),
            )

    def outbox_drop(self, item: int) -> None:
        """Give up on an item (the server refused it for good); the sent copy stays."""
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item,))

    def outbox_done(self, item: int) -> None:
        """The server took it: drop it from the outbox and mark its recipients sent."""
        with self.transaction() as db:
            row = db.execute("SELECT message FROM outbox WHERE id = ?", (item,)).fetchone()
            db.execute("DELETE FROM outbox WHERE id = ?", (item,))
            if row is not None and row["message"] is not None:
                db.execute(
                    "UPDATE recipients SET state = 'sent', updated_at = ? WHERE message = ?"
                    " AND state = 'queued'",
                    (_now(), row["message"]),
                )
