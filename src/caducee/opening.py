"""Opening many messages: decryption and signature checks spread over worker processes.

Opening a 100 KB message costs about 2 ms of CPU, most of it one RSA private-key operation,
during which pyca/cryptography holds the GIL: threads cannot overlap it with fetching, so a
backlog (a Monday morning of lab results) is opened by worker processes while this one talks
IMAP and writes the store.

Only software keys can go to a worker: each worker receives them once, through its start-up
pipe, and nothing is written to disk. Card keys stay in this process (the card is the limit
there anyway), and so does everything when ``workers`` is 0.

Results come back in submission order. A worker that fails on a message, or a pool that breaks,
never loses it: the message is opened again here, which also raises the precise error.
"""

from __future__ import annotations

import collections
import contextlib
import copyreg
import fcntl
import functools
import io
import logging
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from caducee.core.message import OpenedMessage, open_message
from caducee.keys.api import DecryptionKey
from caducee.keys.software import SoftwareKey

__all__ = ["PARALLEL_AFTER", "Opener", "Result", "default_workers"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Result = Callable[[], OpenedMessage]

PARALLEL_AFTER = 100  # messages opened here first: starting workers costs ~0.5 s of CPU
_DEPTH = 2  # messages in hand per worker: one being opened, the next one waiting
_WINDOW = 16  # messages read ahead at most
_START_TIMEOUT = 30.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1 << 20  # the default pipe-max-size
_DEFAULT_PIPE = 1 << 16
_STOP_TIMEOUT = 5.0


# Reports carry certificates; pyca's are not picklable, so they travel as DER (in results
# only: this table is given to the worker's pickler, nothing is registered process-wide).
def _certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _reduce_certificate(
    cert: x509.Certificate,
) -> tuple[Callable[[bytes], x509.Certificate], tuple[bytes]]:
    return _certificate, (cert.public_bytes(Encoding.DER),)


_DISPATCH = {**copyreg.dispatch_table, x509.Certificate: _reduce_certificate}


def _dumps(opened: OpenedMessage | None) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(opened)
    return buffer.getvalue()


def default_workers() -> int:
    """Worker processes worth starting here: one per core beyond the one fetching, from four
    cores. On two, measured: the fetching process and the mail server already keep both
    busy, and handing messages over costs more CPU than a worker saves."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(cores - 1, 4)


# -- in the worker ---------------------------------------------------------------------------


def _serve(
    requests: Connection, results: Connection, keys: list[tuple[bytes, bytes]], certs: list[bytes]
) -> None:
    """A worker: open each message read from ``requests`` and write the pickled result to
    ``results`` (None when it fails: the parent opens it again to say why). An empty message,
    or the parent going away, ends it."""
    own_keys = [SoftwareKey.from_worker(k) for k in keys]
    own_certs = [x509.load_der_x509_certificate(c) for c in certs]
    results.send_bytes(b"ready")
    with contextlib.suppress(EOFError, OSError):
        while data := requests.recv_bytes():
            try:
                opened: OpenedMessage | None = open_message(
                    data, keys=own_keys, extra_certificates=own_certs
                )
            except Exception:
                opened = None
            results.send_bytes(_dumps(opened))


def _widen(conn: Connection) -> int:
    """Grow a pipe's buffer (Linux) so a queued message and a result fit without blocking;
    returns the capacity to rely on."""
    try:
        return fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
    except (OSError, AttributeError):
        return _DEFAULT_PIPE


# -- in this process -------------------------------------------------------------------------


class _Worker:
    def __init__(self, process: BaseProcess, requests: Connection, results: Connection) -> None:
        self.process = process
        self.requests = requests
        self.results = results
        self.capacity = _widen(requests)
        _widen(results)
        self.inflight: collections.deque[_Pending[Any]] = collections.deque()  # sent, unanswered
        self.ready = False  # it said it holds the keys
        self.started_at = time.monotonic()

    def check_ready(self) -> bool:
        """Whether the worker holds its keys now (without waiting); raises if it failed to
        start, or took longer than ``_START_TIMEOUT``."""
        if not self.ready:
            if self.results.poll(0):
                if self.results.recv_bytes() != b"ready":
                    raise EOFError("worker did not start")
                self.ready = True
            elif time.monotonic() - self.started_at > _START_TIMEOUT:
                raise TimeoutError("worker did not start")
        return self.ready

    def can_take(self, size: int) -> bool:
        """A request can be written without blocking: the worker is idle (reading), or it is
        busy but has read everything before and the request fits in the pipe (the worker may
        itself be blocked writing a result: a write that blocked here would deadlock)."""
        busy = len(self.inflight)
        return busy == 0 or (busy < _DEPTH and size + 16 <= self.capacity)


class Opener:
    """Opens messages with ``keys``, in worker processes when they can hold the keys.

    ``workers`` processes are started at the first message past ``start_after`` (opening a
    handful costs less than starting a worker, about 0.3 s), or by :meth:`start`.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        keys: Sequence[DecryptionKey],
        *,
        extra_certificates: Sequence[x509.Certificate] = (),
        workers: int = 0,
        start_after: int = 0,
    ) -> None:
        self._keys = tuple(keys)
        self._certs = tuple(extra_certificates)
        portable = bool(keys) and all(isinstance(k, SoftwareKey) for k in keys)
        self._want = workers if portable else 0
        self._start_after = start_after
        self._workers: list[_Worker] = []
        self._broken = False

    def __repr__(self) -> str:
        return f"<Opener workers={self._want} running={len(self._workers)}>"

    def __enter__(self) -> Opener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> int:
        """Worker processes running now."""
        return len(self._workers)

    @property
    def parallel(self) -> bool:
        """Whether messages go to worker processes (now or once started)."""
        return self._want > 0 and not self._broken

    def open(self, data: bytes) -> OpenedMessage:
        """Open one message here (see :func:`caducee.core.message.open_message`)."""
        return open_message(data, keys=self._keys, extra_certificates=self._certs)

    def start(self, *, wait: bool = True) -> None:
        """Start the workers now and wait until each holds the keys (or, with ``wait=False``,
        let them start while this process goes on opening: a worker takes about 0.3 s to
        start, ~100 messages opened here)."""
        if not self.parallel or self._workers:
            return
        keys = [k.to_worker() for k in self._keys if isinstance(k, SoftwareKey)]
        certs = [c.public_bytes(Encoding.DER) for c in self._certs]
        context = multiprocessing.get_context("spawn")
        try:
            for _ in range(self._want):
                their_requests, my_requests = context.Pipe(duplex=False)
                my_results, their_results = context.Pipe(duplex=False)
                process = context.Process(
                    target=_serve,
                    args=(their_requests, their_results, keys, certs),
                    name="caducee-opener",
                    daemon=True,
                )
                try:
                    process.start()
                finally:
                    their_requests.close()
                    their_results.close()
                self._workers.append(_Worker(process, my_requests, my_results))
            for worker in self._workers if wait else ():
                if worker.results.poll(_START_TIMEOUT):
                    worker.check_ready()
                if not worker.check_ready():
                    raise TimeoutError("worker did not start")
        except Exception as exc:
            log.warning("worker processes unavailable (%s): opening here", type(exc).__name__)
            self._give_up()

    def map(self, items: Iterable[tuple[T, bytes]]) -> Iterator[tuple[T, Result]]:
        """For each (tag, message) in order, yield (tag, result): calling result() returns the
        opened message or raises exactly what :meth:`open` would.

        With workers, ``items`` is read ahead (at most ``_WINDOW`` messages): each goes to a
        worker as soon as one can take it, oldest first. This process gives priority to its own
        work (reading the next message, handing back an opened one); it opens a message itself
        only when it would otherwise wait: the newest one no worker has taken, or the oldest
        when no worker can have it. Without workers each item is yielded before the next is
        read, and opened when the caller asks for the result.
        """
        window: collections.deque[_Pending[T]] = collections.deque()
        source = iter(items)
        count = -1
        exhausted = False
        while True:
            if self._workers:
                self._collect()
                self._feed(window)
            head = window[0] if window else None
            if head is not None and head.result is None and head.worker is None:
                head.result = self._here(head.data)  # no worker has it: quickest here
            if head is not None and head.result is not None:
                yield window.popleft().done()
                continue
            if not exhausted and len(window) < _WINDOW:
                try:
                    tag, data = next(source)
                except StopIteration:
                    exhausted = True
                    continue
                except Exception:
                    # The source failed (the server went away): what was read is answered.
                    yield from self._finish(window)
                    raise
                count += 1
                if not self._workers and self.parallel and count >= self._start_after:
                    self.start(wait=False)
                if not self._workers and not window:
                    yield tag, functools.partial(self.open, data)
                else:
                    window.append(_Pending(tag, data))
                continue
            if head is None:
                return
            if not self._open_newest_here(window):
                self._wait(head)

    def _finish(self, window: collections.deque[_Pending[T]]) -> Iterator[tuple[T, Result]]:
        while window:
            pending = window.popleft()
            self._wait(pending)
            yield pending.tag, pending.result or functools.partial(self.open, pending.data)

    def _feed(self, window: collections.deque[_Pending[T]]) -> None:
        """Hand the oldest messages nobody holds to workers that can take them now."""
        for pending in window:
            if not pending.sent and pending.result is None:
                ready = [w for w in self._workers if w.ready]
                worker = min(ready, key=lambda w: len(w.inflight), default=None)
                if worker is None or not worker.can_take(len(pending.data)):
                    return
                try:
                    worker.requests.send_bytes(pending.data)
                except (OSError, ValueError) as exc:
                    log.warning("worker process failed (%s): opening here", type(exc).__name__)
                    self._give_up()
                    return
                pending.worker, pending.sent = worker, True
                worker.inflight.append(pending)

    def _collect(self) -> None:
        """Read every answer already waiting, without blocking."""
        for worker in list(self._workers):
            try:
                if not worker.check_ready():
                    continue
                while worker.inflight and worker.results.poll(0):
                    self._receive_one(worker)
            except (EOFError, OSError, TimeoutError) as exc:
                log.warning("worker process failed (%s): opening here", type(exc).__name__)
                self._give_up()
                return

    def _wait(self, pending: _Pending[T]) -> None:
        """Block until the worker holding ``pending`` answers it (or fails: then nobody holds
        it, and it is opened here)."""
        while pending.worker is not None and pending.worker in self._workers:
            self._receive_one(pending.worker)
        pending.worker = None

    def _receive_one(self, worker: _Worker) -> None:
        """Read the worker's next answer: it is for the oldest message it holds. A message it
        could not open is left to be opened here, which raises the precise error."""
        try:
            opened = pickle.loads(worker.results.recv_bytes())  # noqa: S301 - our own child, private pipe
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            log.warning("worker process failed (%s): opening here", type(exc).__name__)
            self._give_up()
            return
        pending = worker.inflight.popleft()
        pending.worker = None
        if isinstance(opened, OpenedMessage):
            pending.result = functools.partial(_same, opened)

    def _open_newest_here(self, window: collections.deque[_Pending[T]]) -> bool:
        """Open the newest message no worker was given (the workers take the oldest first);
        False when there is none."""
        for pending in reversed(window):
            if not pending.sent and pending.result is None:
                pending.result = self._here(pending.data)
                return True
        return False

    def _here(self, data: bytes) -> Result:
        try:
            opened = self.open(data)
        except Exception as exc:
            return functools.partial(_raise, exc)
        return functools.partial(_same, opened)

    def _give_up(self) -> None:
        self._broken = True
        self._stop(wait=False)

    def _stop(self, *, wait: bool) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            for pending in worker.inflight:  # nobody holds them now: opened here
                pending.worker = None
            with contextlib.suppress(OSError, ValueError):
                if not worker.inflight:
                    worker.requests.send_bytes(b"")
            worker.requests.close()
            worker.results.close()
        for worker in workers:
            worker.process.join(_STOP_TIMEOUT if wait else 0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(_STOP_TIMEOUT)

    def close(self) -> None:
        self._stop(wait=True)


class _Pending(Generic[T]):
    """A message read from ``items`` and not yet yielded."""

    __slots__ = ("data", "result", "sent", "tag", "worker")

    def __init__(self, tag: T, data: bytes) -> None:
        self.tag = tag
        self.data = data
        self.worker: _Worker | None = None  # the worker holding it, until its answer is read
        self.sent = False  # handed to a worker once: if it fails there, it is opened here
        self.result: Result | None = None

    def done(self) -> tuple[T, Result]:
        assert self.result is not None
        return self.tag, self.result


def _same(opened: OpenedMessage) -> OpenedMessage:
    return opened


def _raise(exc: Exception) -> OpenedMessage:
    raise exc
