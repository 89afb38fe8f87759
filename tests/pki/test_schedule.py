"""Scheduled CRLs: reissued once half the current CRL's lifetime has passed."""

from __future__ import annotations

import datetime as dt
import time

from cryptography import x509

from caducee.pki.schedule import CrlScheduler, crl_due, renew_due_crls
from tests.pki.conftest import T0, at  # type: ignore[import-not-found]


def test_crl_renewed_at_half_life_only(two_ops) -> None:  # type: ignore[no-untyped-def]
    ca = two_ops.op_b
    first = ca.crl(now=at(days=1))
    life = first.next_update_utc - first.last_update_utc
    assert not crl_due(ca, first.last_update_utc + life / 2 - dt.timedelta(minutes=1))
    assert crl_due(ca, first.last_update_utc + life / 2)
    assert renew_due_crls([ca], at(days=1, hours=1)) == []
    later = first.last_update_utc + life / 2 + dt.timedelta(hours=1)
    assert renew_due_crls([ca], later) == [ca.config.name]
    current = ca.store.latest_crl()
    assert current is not None and current.last_update_utc == later.replace(microsecond=0)
    number = current.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    ca.crl(now=T0)  # leave the session fixture as other tests expect it


def test_scheduler_thread_renews_and_stops(two_ops) -> None:  # type: ignore[no-untyped-def]
    ca = two_ops.op_b
    ca.crl(now=T0)
    far = T0 + dt.timedelta(days=365)
    scheduler = CrlScheduler([ca], interval=0.05, clock=lambda: far)
    scheduler.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = ca.store.latest_crl()
        if current is not None and current.last_update_utc == far:
            break
        time.sleep(0.05)
    scheduler.stop()
    current = ca.store.latest_crl()
    assert current is not None and current.last_update_utc == far
    ca.crl(now=T0)
