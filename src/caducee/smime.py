"""High-level Python API for S/MIME messages: the core, bound to the real clock and randomness.

>>> from caducee import smime
>>> wire = smime.protect(message, signer=my_signing_key, recipients=[Recipient(bob_cert)])
>>> opened = smime.open_message(wire, keys=[my_decryption_key])
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence

from cryptography import x509

from caducee.core.cms.envelope import Recipient
from caducee.core.message import Layer, OpenedMessage, ProtectOptions, open_message
from caducee.core.message import protect as _protect
from caducee.keys.api import DecryptionKey, SigningKey

__all__ = ["Layer", "OpenedMessage", "ProtectOptions", "Recipient", "open_message", "protect"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def protect(
    message: bytes,
    *,
    signer: SigningKey | None = None,
    recipients: Sequence[Recipient] = (),
    options: ProtectOptions = ProtectOptions(),  # noqa: B008 - immutable
    signing_time: dt.datetime | None = None,
) -> bytes:
    """Sign and/or encrypt a whole RFC 5322 message (see :func:`caducee.core.message.protect`)."""
    return _protect(
        message,
        signer=signer,
        recipients=recipients,
        signing_time=signing_time or now(),
        random=os.urandom,
        options=options,
    )


def open(
    message: bytes,
    *,
    keys: Sequence[DecryptionKey] = (),
    extra_certificates: Sequence[x509.Certificate] = (),
) -> OpenedMessage:
    return open_message(message, keys=keys, extra_certificates=extra_certificates)
