"""A wall-clock deadline for one HTTP exchange: connect, sending, the response headers and the body.

A per-read socket timeout alone never fires while a server trickles one byte at a time, so one
`Watchdog` thread (over a heap of deadlines, started on first use: a timer thread per exchange would
cost more than a fast server's whole answer) stops each `Exchange` whose deadline has passed by
shutting its socket down, which at once ends any blocked read or write. The owner may stop an
exchange too (cancellation). The socket is learnt from the connection itself: `hooked_adapter()`
(net/hooks.py) gives a requests adapter whose urllib3 connections report to the exchange running on
their thread (`set_current`), with the phase they are in. This module imports no HTTP library: a
client that imports requests lazily (the export target) stays lazy."""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any


def shutdown_socket(sock: Any) -> None:
    """Shut `sock` down from another thread: its blocked reads and writes end at once."""
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for an SSLSocket (whose own shutdown() would drop its
        # TLS state under the thread reading from it). A socket already closed has no descriptor
        # any more (never another socket's).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError, TypeError):
        pass


class Exchange:
    """One HTTP exchange in flight: its deadline, the connection and socket it runs on, the phase it
    is in, and its fate once stopped from another thread ("expired" by the watchdog, or whatever
    the owner says, e.g. "cancelled"). `cancel`: the owner's token of the work it serves."""

    __slots__ = ("seconds", "expires_at", "cancel", "fate", "stopped_in", "done", "_lock", "_conn", "_sock",
                 "_phase")

    def __init__(self, seconds: float, cancel: Any = None):
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.cancel = cancel
        self.fate: str | None = None
        self.stopped_in: str | None = None  # the phase it was in when stopped
        self.done = False
        self._lock = threading.Lock()
        self._conn: Any = None
        # The socket itself is kept too: http.client drops it from the connection when the answer
        # says "Connection: close", while the response body is still read from it.
        self._sock: Any = None
        self._phase = "connecting"

    def attach(self, conn: Any, phase: str) -> bool:
        """Called on the exchange's thread as its connection moves on to `phase`. False once the
        exchange was stopped (its socket is then shut: nothing more is sent or read)."""
        sock = getattr(conn, "sock", None)
        with self._lock:
            if self.done:
                return True
            self._conn, self._phase = conn, phase
            if sock is not None:
                self._sock = sock
            stopped = self.fate is not None
        if stopped:  # stopped while no socket was known (e.g. during connect)
            shutdown_socket(sock)
        return not stopped

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase

    @property
    def phase(self) -> str:
        """What the exchange is doing now (connecting, sending the request, ...)."""
        with self._lock:
            return self._phase

    def stop(self, fate: str = "expired") -> None:
        """End the exchange from another thread (the first fate given is kept)."""
        with self._lock:
            if self.done or self.fate is not None:
                return
            self.fate, self.stopped_in = fate, self._phase
            sock = self._sock if self._sock is not None else getattr(self._conn, "sock", None)
        shutdown_socket(sock)

    def over(self) -> bool:
        """Stopped, or past the deadline (checked between body chunks by the reader)."""
        return self.fate is not None or time.monotonic() > self.expires_at

    def finish(self) -> str | None:
        """End the watch; the phase the exchange was stopped in, or None if it was not."""
        with self._lock:
            self.done = True
            self._conn = self._sock = None
            return self.stopped_in if self.fate is not None else None


class Watchdog:
    """One thread that stops exchanges whose deadline has passed. Started on first use (again after
    `close()`); named `name` in thread listings."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._seq = itertools.count()
        self._compact_at = 256
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, exchange: Exchange) -> None:
        with self._cond:
            heap = self._heap
            if len(heap) >= self._compact_at:  # finished exchanges are dropped lazily; bound the heap
                heap[:] = [entry for entry in heap if not entry[2].done]
                heapq.heapify(heap)
                self._compact_at = max(256, 2 * len(heap))
            heapq.heappush(heap, (exchange.expires_at, next(self._seq), exchange))
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif heap[0][2] is exchange:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    heap = self._heap
                    while heap and heap[0][2].done:
                        heapq.heappop(heap)
                    if not heap:
                        self._cond.wait()
                        continue
                    delay = heap[0][0] - time.monotonic()
                    if delay <= 0:
                        exchange = heapq.heappop(heap)[2]
                        break
                    self._cond.wait(delay)
            exchange.stop("expired")


# The exchange running on this thread, if any (each sending thread has its own session).
_current = threading.local()


def set_current(exchange: Exchange | None) -> None:
    """Name the exchange the next request of this thread runs (None when it is over)."""
    _current.exchange = exchange


def current() -> Exchange | None:
    return getattr(_current, "exchange", None)
