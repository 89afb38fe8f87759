"""A persistent outbox: nothing the user was told "queued" is ever dropped.

Why a directory of files: each entry is two small files written with the classic durable
pattern (write to a temporary name, fsync, rename, fsync the directory), so a crash at any point
leaves either the old state or the new one. ``<id>.msg`` holds the wire message (already signed
and encrypted: never plaintext) and is never rewritten; ``<id>.json`` holds the envelope and the
delivery state and is replaced atomically. An entry leaves the outbox only once the server has
accepted it for every recipient; a permanent refusal keeps it as ``failed`` for the user to see.
Delivery is at-least-once: a crash between the server's "250" and the removal re-sends it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any, Literal

from caducee.errors import TransportError
from caducee.mail.api import Envelope, Submitter
from caducee.mail.smtp import SmtpRejectedError, SmtpUnavailableError

__all__ = ["DeliveryReport", "Outbox", "OutboxEntry", "OutboxError"]

log = logging.getLogger(__name__)

State = Literal["pending", "failed"]


class OutboxError(TransportError):
    """The outbox directory could not be read or written."""


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    id: str
    envelope: Envelope
    created: dt.datetime
    state: State = "pending"
    attempts: int = 0
    next_try: dt.datetime | None = None
    last_error: str | None = None
    delivered_to: tuple[str, ...] = ()
    failed_recipients: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender": self.envelope.sender,
            "recipients": list(self.envelope.recipients),
            "created": self.created.isoformat(),
            "state": self.state,
            "attempts": self.attempts,
            "next_try": self.next_try.isoformat() if self.next_try else None,
            "last_error": self.last_error,
            "delivered_to": list(self.delivered_to),
            "failed_recipients": self.failed_recipients,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboxEntry:
        return cls(
            id=str(data["id"]),
            envelope=Envelope(str(data["sender"]), tuple(data["recipients"])),
            created=dt.datetime.fromisoformat(data["created"]),
            state=data["state"],
            attempts=int(data["attempts"]),
            next_try=dt.datetime.fromisoformat(data["next_try"]) if data["next_try"] else None,
            last_error=data.get("last_error"),
            delivered_to=tuple(data.get("delivered_to", ())),
            failed_recipients=dict(data.get("failed_recipients", {})),
        )


@dataclasses.dataclass
class DeliveryReport:
    sent: list[str] = dataclasses.field(default_factory=list)
    deferred: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Outbox:
    """Queued outgoing messages under ``directory`` (created 0700; files 0600)."""

    def __init__(
        self,
        directory: pathlib.Path | str,
        *,
        backoff_base: dt.timedelta = dt.timedelta(minutes=1),
        backoff_max: dt.timedelta = dt.timedelta(hours=6),
    ) -> None:
        self.directory = pathlib.Path(directory)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.chmod(0o700)
        except OSError as exc:
            raise OutboxError(
                f"cannot create outbox {self.directory}: {exc.strerror or exc}"
            ) from None

    def __repr__(self) -> str:
        return f"Outbox({str(self.directory)!r})"

    # --- files ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, name: str, data: bytes) -> None:
        final = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _save(self, entry: OutboxEntry) -> None:
        self._write(f"{entry.id}.json", json.dumps(entry.to_json(), sort_keys=True).encode())
        self._sync_dir()

    # --- public API -------------------------------------------------------------------------

    def put(self, envelope: Envelope, message: bytes, now: dt.datetime | None = None) -> str:
        """Queue ``message``; it is on disk (fsynced) when this returns its id."""
        if not envelope.recipients:
            raise OutboxError("cannot queue a message without recipients")
        now = now or _utcnow()
        entry_id = f"{time.time_ns():020d}-{os.urandom(4).hex()}"
        entry = OutboxEntry(id=entry_id, envelope=envelope, created=now, next_try=now)
        try:
            with self._lock():
                self._write(f"{entry_id}.msg", message)
                self._save(entry)
        except OSError as exc:
            raise OutboxError(f"cannot queue in {self.directory}: {exc.strerror or exc}") from None
        return entry_id

    def entries(self) -> list[OutboxEntry]:
        found = []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            raise OutboxError(f"cannot list {self.directory}: {exc.strerror or exc}") from None
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                entry = self._load(name[: -len(".json")])
                if entry is not None:  # removed by another process since the listing
                    found.append(entry)
        return found

    def _load(self, entry_id: str) -> OutboxEntry | None:
        path = self.directory / f"{entry_id}.json"
        try:
            return OutboxEntry.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutboxError(f"corrupt outbox entry {path}: {exc}") from None

    def get(self, entry_id: str) -> OutboxEntry:
        entry = self._load(entry_id)
        if entry is None:
            raise OutboxError(f"no entry {entry_id} in outbox {self.directory}")
        return entry

    def message(self, entry_id: str) -> bytes:
        try:
            return (self.directory / f"{entry_id}.msg").read_bytes()
        except OSError as exc:
            raise OutboxError(f"cannot read outbox message {entry_id}: {exc.strerror}") from None

    def pending(self) -> list[OutboxEntry]:
        return [e for e in self.entries() if e.state == "pending"]

    def failed(self) -> list[OutboxEntry]:
        return [e for e in self.entries() if e.state == "failed"]

    def retry(self, entry_id: str, now: dt.datetime | None = None) -> None:
        """Put a failed entry back in the queue (after the user fixed the cause)."""
        with self._lock():
            entry = self.get(entry_id)
            self._save(dataclasses.replace(entry, state="pending", next_try=now or _utcnow()))

    def remove(self, entry_id: str) -> None:
        with self._lock():
            self._remove(entry_id)

    def _remove(self, entry_id: str) -> None:
        for suffix in (".json", ".msg"):  # json first: without it the entry does not exist
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{entry_id}{suffix}").unlink()
        self._sync_dir()

    def _backoff(self, attempts: int) -> dt.timedelta:
        delay: dt.timedelta = self.backoff_base * (2 ** max(0, attempts - 1))
        return min(delay, self.backoff_max)

    def deliver(self, submitter: Submitter, now: dt.datetime | None = None) -> DeliveryReport:
        """Try every due pending entry once; return what was sent, deferred and failed.

        When the server is unreachable the round stops at the first such error (the other
        entries stay due, untouched) instead of waiting one timeout per message.
        """
        now = now or _utcnow()
        report = DeliveryReport()
        with self._lock():
            for entry in self.pending():
                if entry.next_try is not None and entry.next_try > now:
                    continue
                try:
                    submitter.submit(entry.envelope, self.message(entry.id))
                except SmtpRejectedError as exc:
                    self._rejected(entry, exc, now, report)
                except TransportError as exc:
                    retryable = getattr(exc, "retryable", True)
                    self._defer_or_fail(entry, str(exc), now, report, retryable=retryable)
                    if isinstance(exc, SmtpUnavailableError):
                        break
                else:
                    self._remove(entry.id)
                    report.sent.append(entry.id)
        return report

    def _defer_or_fail(
        self,
        entry: OutboxEntry,
        error: str,
        now: dt.datetime,
        report: DeliveryReport,
        *,
        retryable: bool,
        **changes: Any,
    ) -> None:
        attempts = entry.attempts + 1
        if retryable:
            updated = dataclasses.replace(
                entry,
                attempts=attempts,
                next_try=now + self._backoff(attempts),
                last_error=error,
                **changes,
            )
            report.deferred.append(entry.id)
        else:
            updated = dataclasses.replace(
                entry, state="failed", attempts=attempts, last_error=error, **changes
            )
            report.failed.append(entry.id)
        report.errors[entry.id] = error
        self._save(updated)
        log.warning("outbox %s: %s", entry.id, error)

    def _rejected(
        self, entry: OutboxEntry, exc: SmtpRejectedError, now: dt.datetime, report: DeliveryReport
    ) -> None:
        if not exc.refused:  # the message itself (sender, content) was refused
            self._defer_or_fail(entry, str(exc), now, report, retryable=exc.retryable)
            return
        temporary = [r for r, (code, _) in exc.refused.items() if 400 <= code < 500]
        permanent = {
            r: f"{code} {text}" for r, (code, text) in exc.refused.items() if not 400 <= code < 500
        }
        delivered = entry.delivered_to + exc.accepted
        failed = {**entry.failed_recipients, **permanent}
        if temporary:
            # Retry only those who have not got it yet: no duplicate for the others.
            self._defer_or_fail(
                entry,
                str(exc),
                now,
                report,
                retryable=True,
                envelope=Envelope(entry.envelope.sender, tuple(temporary)),
                delivered_to=delivered,
                failed_recipients=failed,
            )
        else:
            self._defer_or_fail(
                entry,
                str(exc),
                now,
                report,
                retryable=False,
                envelope=Envelope(entry.envelope.sender, tuple(permanent)),
                delivered_to=delivered,
                failed_recipients=failed,
            )
