"""SMTP delivery to each recipient's operator: the demo's stand-in for mail routing (MX).

Why: each embedded mail service only accepts its own operator's domain and does not relay, as an
operator's inbound server would not for strangers. In production the sender's submission server
relays across operators; here the submitter hands each recipient's copy over real SMTP, on
loopback, to the service of the recipient's domain. It records the last envelope and message,
so the demo can show exactly what crossed the network.
"""

from __future__ import annotations

from collections.abc import Mapping

from caducee.mail.api import Envelope
from caducee.mail.embedded import EmbeddedMailService
from caducee.mail.smtp import SmtpRejectedError, SmtpSubmitter

__all__ = ["OperatorRelay"]


class OperatorRelay:
    """Implements :class:`caducee.mail.api.Submitter` over the operators' SMTP services."""

    def __init__(self, services: Mapping[str, EmbeddedMailService]) -> None:
        self._submitters = {
            domain.lower(): SmtpSubmitter(service.host, service.port, security="none", timeout=10)
            for domain, service in services.items()
        }
        self.last: tuple[Envelope, bytes] | None = None

    def __repr__(self) -> str:
        return f"OperatorRelay({sorted(self._submitters)})"

    def submit(self, envelope: Envelope, message: bytes) -> None:
        by_domain: dict[str, list[str]] = {}
        unknown: dict[str, tuple[int, str]] = {}
        for rcpt in envelope.recipients:
            domain = rcpt.rpartition("@")[2].lower()
            if domain in self._submitters:
                by_domain.setdefault(domain, []).append(rcpt)
            else:
                unknown[rcpt] = (550, "5.1.2 no operator serves this domain")
        if unknown:
            raise SmtpRejectedError(
                "no mail service for " + ", ".join(sorted(unknown)),
                refused=unknown,
                retryable=False,
            )
        for domain, recipients in by_domain.items():
            self._submitters[domain].submit(Envelope(envelope.sender, tuple(recipients)), message)
        self.last = (envelope, message)
