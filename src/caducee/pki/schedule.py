"""CRLs on a schedule: each CA issues a fresh CRL well before the current one expires.

A relying party refuses a certificate when the issuer's CRL is past its nextUpdate, so a CA that
forgets to publish stops every message of its subscribers. The rule here: reissue once half of the
current CRL's lifetime has passed (or when there is none), which leaves the other half as a margin
for a server that was down. A revocation publishes a CRL at once anyway (``ca.revoke``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence

from caducee.errors import CaduceeError
from caducee.pki.ca import CertificateAuthority

log = logging.getLogger(__name__)


def crl_due(ca: CertificateAuthority, now: dt.datetime) -> bool:
    current = ca.store.latest_crl()
    if current is None or current.next_update_utc is None:
        return True
    half = (current.next_update_utc - current.last_update_utc) / 2
    return now >= current.last_update_utc + half


def renew_due_crls(cas: Sequence[CertificateAuthority], now: dt.datetime) -> list[str]:
    """Issue a CRL for every CA that needs one; the names of those renewed."""
    renewed = []
    for ca in cas:
        if crl_due(ca, now):
            ca.crl(now=now)
            renewed.append(ca.config.name)
    return renewed


class CrlScheduler:
    """A background thread calling :func:`renew_due_crls` every ``interval`` seconds."""

    def __init__(
        self,
        cas: Sequence[CertificateAuthority],
        *,
        interval: float = 60.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.cas = list(cas)
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for name in renew_due_crls(self.cas, self.clock()):
                    log.info("issued a scheduled CRL for %s", name)
            except CaduceeError as exc:  # keep serving the current CRL; try again next round
                log.error("scheduled CRL failed: %s", exc)
            self._stop.wait(self.interval)
