"""One SQLite write transaction, shared by the message store and the directory's database.

Why BEGIN IMMEDIATE: the write lock is taken at the start, so two processes writing the same
file (``caducee agent`` and a ``caducee send``) wait for each other (busy timeout) instead of
failing halfway with "database is locked" when a read transaction tries to become a write one.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = ["immediate"]


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
