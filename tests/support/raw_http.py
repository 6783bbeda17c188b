"""A loopback TCP server that answers HTTP requests with whatever bytes a test writes by hand: a
reset, half an answer, headers and then a trickle, nothing at all (the network layer's unit tests)."""
from __future__ import annotations

import socket
import threading
from typing import Callable

Handler = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """Each connection gets its own thread: the request is read (one recv), counted, then
    `handle(conn, stopping)` writes the answer; `stopping` is set by `close()`."""

    def __init__(self, handle: Handler):
        self.handle = handle
        self.requests = 0
        self.stopping = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x"
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not conn.recv(65536):
                return
            self.requests += 1
            try:
                self.handle(conn, self.stopping)
            except OSError:
                pass  # the client went away: the point of most of these tests

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
