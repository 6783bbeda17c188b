"""One wording for network failures (iq_etl.net.errors.classify), from real failures against loopback
servers that misbehave on purpose."""
from __future__ import annotations

import socket
import struct
import threading
from typing import Callable

import pytest
import requests

from iq_etl.net.errors import causes, classify
from tests.support.raw_http import RawServer


@pytest.fixture
def serve():
    servers: list[RawServer] = []

    def start(handle: Callable[[socket.socket, threading.Event], None]) -> str:
        servers.append(RawServer(handle))
        return servers[-1].url

    yield start
    for s in servers:
        s.close()


def _failure(call: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_refused():
    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        exc = _failure(lambda: requests.get(f"http://127.0.0.1:{port}/x", timeout=5))
    assert classify(exc) == ("refused", "connection refused")


def test_no_answer_in_time(serve):
    url = serve(lambda conn, stopping: stopping.wait(30))  # the request is read, never answered
    exc = _failure(lambda: requests.get(url, timeout=(5, 0.2)))
    assert classify(exc) == ("timeout", "timed out waiting for the reply")


def test_reset_by_the_server(serve):
    def reset(conn: socket.socket, stopping: threading.Event) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST

    exc = _failure(lambda: requests.get(serve(reset), timeout=5))
    assert classify(exc) == ("dropped", "connection reset by the server")


def test_closed_mid_response(serve):
    def short(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)

    exc = _failure(lambda: requests.get(serve(short), timeout=5).content)
    assert classify(exc) == ("dropped", "connection closed mid-response")


def test_an_unknown_failure_is_named_without_quoting_it():
    secret = "http://user:pw@host.example/?token=abc"
    kind, text = classify(RuntimeError(secret))
    assert (kind, text) == ("dropped", "connection dropped") and "token" not in text


def test_the_cause_chain_is_walked_and_bounded():
    inner = ConnectionRefusedError(111, "Connection refused")
    try:
        try:
            raise inner
        except OSError as e:
            raise requests.ConnectionError("wrapped") from e
    except requests.ConnectionError as outer:
        assert inner in causes(outer) and classify(outer)[0] == "refused"
    loop = ValueError("a")
    loop.__context__ = ValueError("b")
    loop.__context__.__context__ = loop  # a cycle ends
    assert len(causes(loop)) == 2
