"""Opening many messages with worker processes: the same results as opening here, in order,
card keys kept here, and nothing lost when a worker or the source fails."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator

import pytest

from caducee import smime
from caducee.core.message import OpenedMessage
from caducee.errors import CaduceeError, TransportError
from caducee.keys.api import DecryptionKey
from caducee.opening import Opener, Result
from tests.conftest import TestPKI as PKI

pytestmark = pytest.mark.timeout(180)


def _message(pki: PKI, text: bytes, *, to: str = "bob") -> bytes:
    recipient = getattr(pki, to).encryption.certificate
    return smime.protect(
        b"From: alice@op1.test\r\nTo: bob@op2.test\r\nSubject: result\r\n\r\n" + text,
        signer=pki.alice.signing,
        recipients=[smime.Recipient(recipient)],
    )


@pytest.fixture(scope="module")
def mailbox(pki: PKI) -> list[bytes]:
    """What a mailbox holds: good mail, signed-only, garbage, mail for someone else, and
    messages larger than a pipe's buffer."""
    return [
        _message(pki, b"potassium 4.1\r\n"),
        smime.protect(b"From: alice@op1.test\r\nSubject: clear\r\n\r\nsigned only\r\n",
                      signer=pki.alice.signing),
        b"From: mallory@op9.test\r\nContent-Type: application/pkcs7-mime;"
        b" smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIB!!!\r\n",
        _message(pki, b"not for bob\r\n", to="carol"),
        _message(pki, os.urandom(1_500_000).hex().encode()),
        _message(pki, os.urandom(1_500_000).hex().encode()),
        *[_message(pki, b"result %d\r\n" % i) for i in range(12)],
    ]  # fmt: skip


def _outcome(result: Result) -> tuple[object, ...]:
    try:
        opened = result()
    except CaduceeError as exc:
        return ("error", type(exc), str(exc))
    return _summary(opened)


def _summary(opened: OpenedMessage) -> tuple[object, ...]:
    signers = [
        (s.certificate, s.valid, s.signing_time)
        for layer in opened.layers
        if layer.signed is not None
        for s in layer.signed.signers
    ]
    return ("opened", opened.entity, [layer.describe() for layer in opened.layers], signers,
            opened.headers.get("subject"))  # fmt: skip


def _expected(pki: PKI, mailbox: list[bytes]) -> list[tuple[object, ...]]:
    here = Opener([pki.bob.encryption])
    return [_outcome(lambda m=m: here.open(m)) for m in mailbox]


def _children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "caducee-opener"]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_what_opening_here_gives(pki: PKI, mailbox: list[bytes], workers: int):
    expected = _expected(pki, mailbox)
    with Opener([pki.bob.encryption], workers=workers) as opener:
        opener.start()
        assert opener.running == workers
        got = [(tag, _outcome(result)) for tag, result in opener.map(enumerate(mailbox))]
        assert opener.running == workers  # no failure made it give up
    assert [tag for tag, _ in got] == list(range(len(mailbox)))
    assert [outcome for _, outcome in got] == expected
    assert expected[0][0] == "opened" and expected[2][0] == "error"
    assert not _children()  # closed: no worker left behind


def test_a_few_messages_do_not_start_workers(pki: PKI, mailbox: list[bytes]):
    with Opener([pki.bob.encryption], workers=1, start_after=4) as opener:
        few = [_outcome(r) for _, r in opener.map(enumerate(mailbox[:4]))]
        assert opener.running == 0
        many = [_outcome(r) for _, r in opener.map(enumerate(mailbox[:6]))]
        assert opener.running == 1
    assert few + many == _expected(pki, mailbox[:4]) + _expected(pki, mailbox[:6])


class CardLikeKey:
    """A key that cannot leave this process (what a card's key is)."""

    def __init__(self, key: DecryptionKey) -> None:
        self._key = key
        self.certificate = key.certificate
        self.key_transports = key.key_transports
        self.decrypt_key = key.decrypt_key
        self.ecdh = key.ecdh


def test_card_keys_stay_in_this_process(pki: PKI, mailbox: list[bytes]):
    with Opener([CardLikeKey(pki.bob.encryption)], workers=2) as opener:
        assert not opener.parallel
        got = [_outcome(r) for _, r in opener.map(enumerate(mailbox[:5]))]
        assert opener.running == 0 and not _children()
    assert got == _expected(pki, mailbox[:5])


def test_a_killed_worker_loses_nothing(pki: PKI, mailbox: list[bytes]):
    with Opener([pki.bob.encryption], workers=1) as opener:
        opener.start()
        (child,) = _children()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        got = [_outcome(r) for _, r in opener.map(enumerate(mailbox))]
        assert not opener.parallel and opener.running == 0
    assert got == _expected(pki, mailbox)


def test_a_failing_source_still_answers_what_was_read(pki: PKI, mailbox: list[bytes]):
    def source() -> Iterator[tuple[int, bytes]]:
        yield from enumerate(mailbox[:7])
        raise TransportError("IMAP server went away")

    seen = []
    with Opener([pki.bob.encryption], workers=1) as opener:
        opener.start()
        with pytest.raises(TransportError, match="went away"):
            for tag, result in opener.map(source()):
                seen.append((tag, _outcome(result)))
    assert seen == list(enumerate(_expected(pki, mailbox[:7])))


def test_workers_that_cannot_start_leave_the_opening_here(
    pki: PKI, mailbox: list[bytes], monkeypatch: pytest.MonkeyPatch
):
    """The second worker fails to start (no more processes allowed): the first is stopped and
    every message is opened here."""
    real_start = multiprocessing.process.BaseProcess.start
    started: list[multiprocessing.process.BaseProcess] = []

    def start_once(process: multiprocessing.process.BaseProcess) -> None:
        if started:
            raise OSError(11, "Resource temporarily unavailable")
        started.append(process)
        real_start(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_once)
    with Opener([pki.bob.encryption], workers=2) as opener:
        opener.start()
        assert not opener.parallel and opener.running == 0
        got = [_outcome(r) for _, r in opener.map(enumerate(mailbox[:5]))]
    assert got == _expected(pki, mailbox[:5])
    started[0].join(10)
    assert not started[0].is_alive() and not _children()


def test_workers_started_by_map_join_in_when_ready(pki: PKI, mailbox: list[bytes]):
    """map() does not wait for the workers to start: messages are opened here meanwhile, and
    the answers are the same whoever opened each one, in order."""
    backlog = mailbox * 4
    with Opener([pki.bob.encryption], workers=1, start_after=0) as opener:
        got = [(tag, _outcome(r)) for tag, r in opener.map(enumerate(backlog))]
        assert opener.running == 1
    assert [tag for tag, _ in got] == list(range(len(backlog)))
    assert [outcome for _, outcome in got] == _expected(pki, mailbox) * 4
