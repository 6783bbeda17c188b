"""Loopback helpers the tests share: a free (closed) port, a busy one, and waiting until something is
ready. Polling with a deadline is the only wait the tests use; the deadline bounds a hang, it is never a
speed assertion."""
from __future__ import annotations

import contextlib
import socket
import time
from typing import Callable, Iterator, TypeVar

import requests

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on (closed again when this returns: a connection is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port held (listening) for the length of the block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def wait_until(predicate: Callable[[], T], what: str, limit_s: float = 60.0, every_s: float = 0.05) -> T:
    """Poll `predicate` until it returns something true (returned), or fail naming `what` after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def http_ready(url: str, expect: str | None = None) -> Callable[[], bool]:
    """A predicate for `wait_until`: `url` answers 200 (with body `expect` when given)."""
    def ready() -> bool:
        try:
            r = requests.get(url, timeout=2)
        except requests.RequestException:
            return False
        return r.status_code == 200 and (expect is None or r.text == expect)
    return ready
