"""Local storage: the SQLite message store (wire bytes and security verdicts) and the audit log."""

from caducee.store.audit import AuditEntry, AuditLog
from caducee.store.messages import (
    MessageStore,
    OutboxItem,
    RecipientState,
    StoredMessage,
    StoreError,
)

__all__ = [
    "AuditEntry",
    "AuditLog",
    "MessageStore",
    "OutboxItem",
    "RecipientState",
    "StoreError",
    "StoredMessage",
]
