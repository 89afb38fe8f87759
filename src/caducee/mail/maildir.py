"""Maildir on local disk: delivery (writer) and a ``MailboxSource``/``SentFolder`` (reader).

Why: the embedded mail service of the demo and local setups keep mail in Maildirs that the
agent reads directly. Maildir delivery is crash-safe by construction (write in ``tmp/``, fsync,
rename into ``new/``) and readers never see half a message.

UIDs: our writer names each file ``<ns>.P<pid>.<host>`` where ``<ns>`` is a nanosecond
counter taken under a lock on the Maildir at the moment of the rename, strictly increasing. So
files appear in ``new/`` in UID order, and "UID greater than the last one I committed" is an
exact resume point (no loss, no duplicate), as with IMAP. Files delivered by other software
(``<secs>.M<usec>P<pid>.<host>``) are ordered by their timestamp; their UID is the name up to
the ``:2,`` info suffix, which does not change when a reader moves the file to ``cur/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import re
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from caducee.errors import ConfigError, TransportError
from caducee.mail.api import MailboxRenumberedError, RemoteMessage

__all__ = ["MaildirError", "MaildirSource", "deliver", "ensure_maildir", "uid_key"]

_LOCK = ".caducee-lock"
_VALIDITY = ".caducee-uidvalidity"
_FLAGS = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}
#: a directory mtime this much older than the clock cannot be shared with a later change, even
#: on filesystems with one- or two-second timestamps
_SETTLED_NS = 3_000_000_000


class _DirState(NamedTuple):
    stamps: tuple[tuple[int, int, int], ...]  # (st_dev, st_ino, st_mtime_ns) of new/, cur/
    settled: bool


class MaildirError(TransportError):
    """A Maildir could not be read or written (permissions, disk full, not a Maildir)."""


def ensure_maildir(path: pathlib.Path) -> pathlib.Path:
    """Create ``path`` with ``tmp/ new/ cur/`` (0700) if needed and return it."""
    try:
        for sub in ("", "tmp", "new", "cur"):
            (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise MaildirError(f"cannot create Maildir {path}: {exc.strerror or exc}") from None
    return path


def _hostname() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname() or "localhost")[:64]


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(maildir: pathlib.Path) -> Iterator[int]:
    fd = os.open(maildir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _next_counter(fd: int) -> int:
    """A nanosecond stamp strictly greater than every one issued before in this Maildir."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 64).strip()
    last = int(raw) if raw.isdigit() else 0
    value = max(time.time_ns(), last + 1)
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, str(value).encode())
    return value


def deliver(maildir: pathlib.Path, data: bytes, *, flags: Sequence[str] = ()) -> str:
    """Write one message into ``maildir`` durably (0600) and return its UID.

    Without flags the message lands in ``new/``; with flags (e.g. ``\\Seen`` for a Sent copy)
    directly in ``cur/`` with the Maildir info suffix.
    """
    ensure_maildir(maildir)
    host = _hostname()
    tmp = maildir / "tmp" / f"{time.time_ns()}.P{os.getpid()}.{host}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        with _locked(maildir) as lock:
            uid = f"{_next_counter(lock):020d}.P{os.getpid()}.{host}"
            if flags:
                letters = "".join(sorted({_FLAGS[f] for f in flags if f in _FLAGS}))
                final = maildir / "cur" / f"{uid}:2,{letters}"
            else:
                final = maildir / "new" / uid
            os.rename(tmp, final)
            _fsync_dir(final.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise MaildirError(f"cannot deliver into {maildir}: {exc.strerror or exc}") from None
    return uid


_FOREIGN = re.compile(r"^(\d+)\.(?:[^.]*?M(\d+))?")


def uid_key(uid: str) -> tuple[int, str]:
    """Sort key of a Maildir UID: delivery time in nanoseconds, then the name."""
    match = _FOREIGN.match(uid)
    if match is None:
        return (0, uid)
    stamp = match.group(1)
    if len(stamp) >= 19:  # our writer: nanoseconds
        return (int(stamp), uid)
    micro = int(match.group(2) or 0) % 1_000_000
    return (int(stamp) * 1_000_000_000 + micro * 1000, uid)


class MaildirSource:
    """Implements ``MailboxSource`` and ``SentFolder`` over one local Maildir."""

    def __init__(
        self, path: pathlib.Path | str, *, mailbox: str = "INBOX", poll_interval: float = 0.2
    ) -> None:
        self.path = pathlib.Path(path)
        self.mailbox = mailbox
        self.poll_interval = poll_interval
        # Sort key of the newest UID handed out or asked to resume after: "new" means above it.
        self._highest: tuple[int, str] | None = None
        # new/ and cur/ as they were when a listing last found nothing above ``_highest``.
        self._quiet_state: _DirState | None = None

    def __repr__(self) -> str:
        return f"MaildirSource({str(self.path)!r}, mailbox={self.mailbox!r})"

    @property
    def uidvalidity(self) -> int:
        """Created once per Maildir; changes only if the Maildir is recreated.

        A missing Maildir is an error (:meth:`check`), as for reading: only a writer
        (:func:`deliver`, :func:`ensure_maildir`) creates one.
        """
        self.check()
        marker = self.path / _VALIDITY
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise MaildirError(f"cannot write {marker}: {exc.strerror or exc}") from None
        else:
            with os.fdopen(fd, "w") as out:
                out.write(str(int(time.time())))
        try:
            return int(marker.read_text().strip() or "1")
        except (OSError, ValueError) as exc:
            raise MaildirError(f"unreadable {marker}: {exc}") from None

    def _listing(self) -> dict[str, pathlib.Path]:
        found: dict[str, pathlib.Path] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(self.path / sub)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise MaildirError(f"cannot list {self.path / sub}: {exc.strerror}") from None
            for name in names:
                if name.startswith("."):
                    continue
                found[name.split(":", 1)[0]] = self.path / sub / name
        return found

    def _read(self, uid: str, path: pathlib.Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            # Moved new/ -> cur/ (or flagged) by another reader since we listed it.
            current = self._listing().get(uid)
            if current is None:
                return None
            try:
                return current.read_bytes()
            except FileNotFoundError:
                return None
        except OSError as exc:
            raise MaildirError(f"cannot read {path}: {exc.strerror or exc}") from None

    def fetch_new(
        self, after_uid: str | None, *, uidvalidity: int | None = None
    ) -> Iterator[RemoteMessage]:
        """Yield messages whose UID sorts after ``after_uid``, oldest first, as raw bytes.

        A missing Maildir is an error (:class:`MaildirError`), never created here: a typo in a
        configured path must not become an empty mailbox that looks renumbered.
        """
        self.check()
        validity = self.uidvalidity
        if uidvalidity is not None and uidvalidity != validity:
            raise MailboxRenumberedError(
                f"Maildir {self.path}: UIDVALIDITY changed from {uidvalidity} to {validity}",
                expected=uidvalidity,
                found=validity,
            )
        after = uid_key(after_uid) if after_uid else None
        if after is not None and (self._highest is None or after > self._highest):
            # The caller already has everything up to ``after_uid`` (a fresh process resuming
            # from its store): it is not "new" for wait_for_new even if nothing follows it.
            self._highest = after
        listing = self._listing()
        keys = sorted((uid_key(uid), uid) for uid in listing)
        for key, uid in keys:
            if after is not None and key <= after:
                continue
            data = self._read(uid, listing[uid])
            if data is None:
                continue
            if self._highest is None or key > self._highest:
                self._highest = key
            yield RemoteMessage(mailbox=self.mailbox, uidvalidity=validity, uid=uid, data=data)

    def check(self) -> None:
        """Raise :class:`MaildirError` unless ``path`` is a Maildir (``new/`` and ``cur/``)."""
        self._dir_state()

    def _dir_state(self) -> _DirState:
        """Identity and modification time of ``new/`` and ``cur/``; whether they can be trusted.

        Any delivery, rename or removal in a directory changes its mtime, but only at the
        filesystem's timestamp granularity: a state is *settled* (usable to skip a listing) when
        both mtimes were already older than :data:`_SETTLED_NS` when it was taken.
        """
        stamps: list[tuple[int, int, int]] = []
        for sub in ("new", "cur"):
            where = self.path / sub
            try:
                st = os.stat(where)
            except FileNotFoundError:
                raise MaildirError(self._missing()) from None
            except OSError as exc:
                raise MaildirError(f"cannot read Maildir {where}: {exc.strerror or exc}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise MaildirError(self._missing())
            stamps.append((st.st_dev, st.st_ino, st.st_mtime_ns))
        now = time.time_ns()
        settled = all(now - mtime > _SETTLED_NS for *_, mtime in stamps)
        return _DirState(tuple(stamps), settled)

    def _missing(self) -> str:
        if not os.path.lexists(self.path):
            why = "it does not exist"
        elif not os.path.isdir(self.path):
            why = "it is not a directory"
        else:
            why = "it has no new/ and cur/ subdirectories"
        return f"no Maildir at {self.path}: {why}"

    def _has_newer(self) -> bool:
        keys = [uid_key(uid) for uid in self._listing()]
        if self._highest is None:
            return bool(keys)
        return any(key > self._highest for key in keys)

    def _anything_new(self) -> bool:
        """Is there a UID above the last one fetched (or resumed after)? Lists the Maildir only
        when ``new/`` or ``cur/`` changed since a listing last said no."""
        state = self._dir_state()  # before listing: a delivery after it changes the state
        if state.settled and state == self._quiet_state:
            return False
        if self._has_newer():
            self._quiet_state = None
            return True
        self._quiet_state = state if state.settled else None
        return False

    def wait_for_new(self, timeout: float) -> bool:
        """Return True as soon as a UID after the last one fetched is in ``new/`` or ``cur/``,
        False after ``timeout`` seconds without one.

        "Last one fetched" is the highest UID :meth:`fetch_new` yielded or was asked to resume
        after, as IMAP's UID search; before any fetch, any message counts. The standard library
        has no inotify, so this polls every ``poll_interval`` seconds, each poll costing two
        ``stat`` calls while the Maildir does not change.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._anything_new():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.poll_interval, left))

    def mark_seen(self, uids: Sequence[str]) -> None:
        """Move messages to ``cur/`` with the S flag (their UID does not change)."""
        self.check()
        listing = self._listing()
        for uid in uids:
            path = listing.get(uid)
            if path is None:
                raise ConfigError(f"no message {uid} in Maildir {self.path}")
            info = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
            letters = "".join(sorted(set(info) | {"S"}))
            try:
                os.rename(path, self.path / "cur" / f"{uid}:2,{letters}")
            except OSError as exc:
                raise MaildirError(f"cannot flag {path}: {exc.strerror or exc}") from None

    def append(self, message: bytes, flags: Sequence[str] = ("\\Seen",)) -> None:
        deliver(self.path, message, flags=flags)
