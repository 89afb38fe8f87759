"""Whether a port that sent no greeting speaks implicit TLS.

A client configured for STARTTLS (or no TLS) that connects to an implicit-TLS port (465, 993)
waits for a greeting that never comes: the server waits for a TLS handshake. That looks like a
hung server, so it would be retried on a timer; one TLS handshake on a fresh connection tells
the two apart, and the error can then name the setting to change.

The probe sends a TLS ClientHello and nothing else (no credential, no command), and trusts no
answer: it only learns that the peer speaks TLS.
"""

from __future__ import annotations

import socket
import ssl

__all__ = ["PROBE_TIMEOUT", "speaks_tls"]

PROBE_TIMEOUT = 5.0


def speaks_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``host:port`` completes (or answers) a TLS handshake within ``timeout``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe: whatever the certificate, it is TLS
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host or None),
        ):
            return True
    except ssl.SSLError as exc:
        # A TLS alert (a protocol version, a missing SNI...) is TLS spoken; a reply that is not
        # a TLS record (a plaintext greeting read as one) is not.
        return exc.reason not in _NOT_TLS
    except OSError:  # refused, reset, timed out, closed before answering
        return False


#: OpenSSL reasons when the peer's bytes are not TLS at all
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
     "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_EOF_WHILE_READING", None}
)  # fmt: skip
