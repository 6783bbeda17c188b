"""The wall-clock deadline of one HTTP exchange (iq_etl.net.deadline, net.hooks), against loopback
servers that trickle or never answer: the watchdog, or the owner, ends the exchange by shutting its
socket down, whatever the socket timeouts say."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from iq_etl.net.deadline import Exchange, Watchdog, current, set_current
from iq_etl.net.hooks import HookedAdapter
from tests.support.raw_http import RawServer

READ_TIMEOUT = 60.0  # far longer than any deadline below: only the deadline can end these exchanges


def _server(head: bytes, every: float | None) -> RawServer:
    """Answers every request with `head`, then one byte every `every` seconds (never, when None),
    until the client goes away."""

    def answer(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(head)
        while not stopping.wait(1.0 if every is None else every):
            if every is not None:
                conn.sendall(b"x")

    return RawServer(answer)


@pytest.fixture
def session():
    s = requests.Session()
    s.mount("http://", HookedAdapter(max_retries=0))
    yield s
    s.close()


@pytest.fixture
def watchdog():
    dog = Watchdog("test-deadlines")
    yield dog
    dog.close()


def _watch_from(dog: Watchdog, exchange: Exchange, phase: str) -> threading.Thread:
    """Hands `exchange` to the watchdog once it is in `phase`. Its deadline runs from its creation,
    so a deadline already past is cut at once, in that phase: the test checks the phase the watchdog
    cut, never how fast this machine reached it (a loaded CI machine once took more than 0.3 s to
    connect on loopback and the cut came while connecting)."""

    def watch_when_there() -> None:
        give_up = time.monotonic() + 30.0
        while exchange.phase != phase and time.monotonic() < give_up:
            time.sleep(0.005)
        dog.watch(exchange)

    watcher = threading.Thread(target=watch_when_there, daemon=True)
    watcher.start()
    return watcher


def _run(session: requests.Session, dog: Watchdog | None, exchange: Exchange, url: str,
         watch_from: str | None = None) -> BaseException | None:
    """One GET under `exchange`, the body read to its end; the exception it ended with, if any.
    `watch_from`: the watchdog watches the exchange from that phase on (from the start when None)."""
    if dog is not None:
        if watch_from is None:
            dog.watch(exchange)
        else:
            _watch_from(dog, exchange, watch_from)
    set_current(exchange)
    try:
        resp = session.get(url, stream=True, timeout=(5.0, READ_TIMEOUT))
        exchange.set_phase("reading the body")
        for _ in resp.iter_content(1024):
            pass
        return None
    except (requests.RequestException, OSError) as exc:
        return exc
    finally:
        set_current(None)


def test_a_trickled_body_is_cut_at_the_deadline(session, watchdog):
    srv = _server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", every=0.05)
    try:
        exchange = Exchange(0.5)
        failure = _run(session, watchdog, exchange, srv.url, watch_from="reading the body")
    finally:
        srv.close()
    assert failure is not None
    assert (exchange.fate, exchange.finish()) == ("expired", "reading the body")
    assert current() is None


def test_missing_headers_are_cut_at_the_deadline(session, watchdog):
    srv = _server(b"", every=None)
    try:
        exchange = Exchange(0.3)
        failure = _run(session, watchdog, exchange, srv.url, watch_from="waiting for the response headers")
    finally:
        srv.close()
    assert isinstance(failure, requests.ConnectionError)
    assert exchange.finish() == "waiting for the response headers"


def test_the_owner_can_stop_an_exchange_from_another_thread(session):
    srv = _server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", every=0.05)
    exchange = Exchange(3600.0, cancel="token")
    done = threading.Event()

    def stop_once_asked() -> None:  # the owner cancels the work while the body trickles in
        while not srv.requests and not done.wait(0.01):
            pass
        exchange.stop("cancelled")

    threading.Thread(target=stop_once_asked, daemon=True).start()
    try:
        failure = _run(session, None, exchange, srv.url)
    finally:
        done.set()
        srv.close()
    assert failure is not None and exchange.fate == "cancelled" and exchange.cancel == "token"


def test_an_exchange_stopped_before_it_starts_sends_nothing(session):
    srv = _server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", every=None)
    exchange = Exchange(3600.0)
    exchange.stop("cancelled")
    try:
        failure = _run(session, None, exchange, srv.url)
    finally:
        srv.close()
    assert isinstance(failure, requests.ConnectionError) and "request stopped while" in str(failure)
    assert srv.requests == 0 and exchange.finish() == "connecting"


def test_a_finished_exchange_is_left_alone_and_the_heap_stays_bounded(watchdog):
    for _ in range(1000):
        exchange = Exchange(3600.0)
        watchdog.watch(exchange)
        exchange.finish()
    assert len(watchdog._heap) <= 512
    late = Exchange(0.0)
    late.finish()
    late.stop("expired")  # after finish: nothing happens
    assert late.fate is None and late.finish() is None


def test_the_watchdog_starts_again_after_close(watchdog):
    watchdog.close()
    exchange = Exchange(0.05)
    watchdog.watch(exchange)
    for _ in range(400):
        if exchange.fate is not None:
            break
        time.sleep(0.05)
    assert exchange.fate == "expired" and exchange.over()
