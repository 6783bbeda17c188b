"""A real HTTP file server on loopback with Range support, laid out like the Old Faithful bucket
(`{epoch}/epoch-{epoch}.car`): GET and HEAD, single byte ranges (206), unsatisfiable ranges (416),
and optional faults for testing readers: drop the connection after N body bytes (once, a few times,
or on every K-th request), answer a status such as 503 to the first requests, or misbehave the way
hostile or broken servers do: ignore Range (200 and the whole file), send more bytes than the range
asked for, or trickle the body a few bytes at a time (or stall) for as long as the client waits.
Like a real CDN it can also cap each connection's rate, wait before the first byte of every answer,
clamp connections that have lived long (Cloudflare-style), answer 429/503 storms with Retry-After,
and reset connections (RST) mid-body.
"""
from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COPY_CHUNK = 1 << 20  # most bytes per send (sendfile: the kernel copies, no Python buffer)


@dataclass
class Faults:
    drop_after_bytes: int | None = None  # close the connection after sending this many body bytes...
    drop_times: int = 1                  # ...on this many responses (0 = every response)...
    drop_every: int | None = None        # ...or only on every K-th GET (overrides drop_times)
    fail_status: int | None = None       # answer this status (e.g. 503) ...
    fail_times: int = 0                  # ...to the first N GET requests
    min_drop_offset: int = 0             # only drop responses whose range starts at or after this byte
    ignore_range: bool = False           # answer GETs with 200 and the whole file, whatever Range says
    overrun_bytes: int = 0               # send this many bytes past a 206 range (0xFF past the end of the
                                         # file); Content-Length counts them, Content-Range does not
    trickle_bytes: int | None = None     # send the body this many bytes at a time...
    trickle_interval: float = 0.1        # ...waiting this long before each piece (until done, the client
                                         # leaves or the server shuts down; a huge interval is a stall)
    drop_reset: bool = False             # drop with a TCP reset (RST) instead of a clean close
    rate: float | None = None            # bytes/s per connection (a CDN's per-connection cap)
    latency: float = 0.0                 # seconds before the first byte of every GET answer
    clamp_after: float | None = None     # a connection older than this many seconds...
    clamp_rate: float = 100_000.0        # ...is served at this many bytes/s (long-lived connections clamped)...
    clamp_every: int = 1                 # ...every K-th connection only (1 = all of them)
    stall_every: int = 0                 # the K-th, 2K-th... connection sends nothing more after...
    stall_after_bytes: int = 0           # ...this many body bytes (it stalls until the client leaves)
    storm_after_gets: int = 0            # a 429/503 storm (fail_status) starting after this many GETs...
    storm_seconds: float = 0.0           # ...lasting this long (0: only fail_times counts)
    retry_after: str | None = None       # Retry-After header sent with fail_status answers


class _State:
    def __init__(self, faults: Faults):
        self.faults = faults
        self.lock = threading.Lock()
        self.gets = 0
        self.drops = 0
        self.reserved_drops = 0       # drops planned for answers still being sent (parallel GETs)
        self.fails = 0
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.connections = 0          # TCP connections accepted
        self.body_bytes = 0           # body bytes sent by GET answers
        self.storm_started: float | None = None
        self.clamped = 0              # answers served (partly) at the clamped rate
        self.max_open = 0             # most GET answers being sent at once
        self.open = 0

    def plan(self, start: int) -> tuple[int | None, int | None]:
        """(status to fail with, body bytes after which to drop) for the next GET."""
        f = self.faults
        with self.lock:
            self.gets += 1
            if f.fail_status and f.storm_seconds and self.gets > f.storm_after_gets:
                now = time.monotonic()
                if self.storm_started is None:
                    self.storm_started = now
                if now - self.storm_started < f.storm_seconds:
                    self.fails += 1
                    return f.fail_status, None
            elif f.fail_status and self.gets > f.storm_after_gets and self.fails < f.fail_times:
                self.fails += 1
                return f.fail_status, None
            if f.drop_after_bytes is None or start < f.min_drop_offset:
                return None, None
            if f.drop_every:
                return (None, f.drop_after_bytes) if self.gets % f.drop_every == 0 else (None, None)
            if f.drop_times == 0 or self.drops + self.reserved_drops < f.drop_times:
                # reserved now (answers sent at once must not all drop), counted in dropped() once it
                # really happens, or given back by undropped() when the answer ended before the byte
                self.reserved_drops += 1
                return None, f.drop_after_bytes
            return None, None

    def dropped(self) -> None:
        with self.lock:
            self.drops += 1
            self.reserved_drops -= 1

    def undropped(self) -> None:
        with self.lock:
            self.reserved_drops -= 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FileServer"

    def setup(self):
        super().setup()
        state = self.server.state
        with state.lock:
            state.connections += 1
            self.conn_number = state.connections
        self.conn_born = time.monotonic()

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _resolve(self) -> Path | None:
        rel = unquote(urlparse(self.path).path).lstrip("/")
        root = self.server.root
        target = (root / rel).resolve()
        if root not in target.parents and target != root:
            return None
        return target if target.is_file() else None

    def _headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _error(self, status: int, extra: dict[str, str] | None = None) -> None:
        body = f"{status}\n".encode()
        self._headers(status, len(body), {"Content-Type": "text/plain", **(extra or {})})
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.command, self.path, range_header))
        path = self._resolve()
        if path is None:
            self._error(404)
            return
        size = path.stat().st_size
        start, end, status = 0, size, 200  # end exclusive
        if range_header and not (state.faults.ignore_range and not head):
            m = _RANGE.match(range_header.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._error(416)
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, size) if m.group(2) else size
            else:  # suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start >= end:
                self._headers(416, 0, {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        extra = {"Content-Range": f"bytes {start}-{end - 1}/{size}"} if status == 206 else {}
        if head:
            self._headers(status, end - start, extra)
            return
        faults = state.faults
        if faults.latency and self.server.stopping.wait(faults.latency):
            return
        fail, drop_after = state.plan(start)
        if fail:
            self._error(fail, {"Retry-After": faults.retry_after} if faults.retry_after else None)
            return
        overrun = faults.overrun_bytes if status == 206 else 0
        self._headers(status, end - start + overrun, extra)
        if faults.trickle_bytes:
            self._trickle(path, start, end, overrun, faults.trickle_bytes, faults.trickle_interval)
            return
        if faults.stall_every and self.conn_number % faults.stall_every == 0:
            if drop_after is not None and not faults.drop_every:
                state.undropped()
            drop_after = None
            stall_at = faults.stall_after_bytes
        else:
            stall_at = None
        with state.lock:
            state.open += 1
            state.max_open = max(state.max_open, state.open)
        dropped = False
        try:
            dropped = self._send_body(path, start, end, overrun, drop_after, stall_at)
        finally:
            with state.lock:
                state.open -= 1
            if drop_after is not None and not faults.drop_every and not dropped:
                state.undropped()

    def _rate_now(self) -> float | None:
        f = self.server.state.faults
        if (f.clamp_after is not None and self.conn_number % max(f.clamp_every, 1) == 0
                and time.monotonic() - self.conn_born >= f.clamp_after):
            return f.clamp_rate
        return f.rate

    def _send_body(self, path: Path, start: int, end: int, overrun: int, drop_after: int | None,
                   stall_at: int | None) -> bool:
        """Send the body (paced, stalled or dropped as the faults say); True when it was dropped."""
        state = self.server.state
        sent = 0
        began = time.monotonic()
        paced = 0        # bytes sent since `began` at the current rate
        last_rate = None
        counted_clamp = False
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            while start + sent < end + overrun:
                rate = self._rate_now()
                chunk_max = _COPY_CHUNK if rate is None else max(1024, min(_COPY_CHUNK, int(rate / 50)))
                n = min(chunk_max, end + overrun - start - sent)
                if stall_at is not None:
                    if sent >= stall_at:
                        self.wfile.flush()
                        self.server.stopping.wait(3600)  # says nothing more, until the client leaves
                        self.close_connection = True
                        return False
                    n = min(n, stall_at - sent)
                if drop_after is not None:
                    n = min(n, drop_after - sent)
                    if n <= 0:
                        if not state.faults.drop_every:
                            state.dropped()
                        else:
                            with state.lock:
                                state.drops += 1
                        self.wfile.flush()
                        if state.faults.drop_reset:
                            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.close_connection = True  # the client sees fewer bytes than Content-Length
                        return True
                pos = start + sent
                if pos < file_size:
                    n = min(n, file_size - pos)  # file bytes: sent by the kernel (sendfile), no copy here
                elif overrun and pos >= end:
                    pass                         # past the end of the file: garbage (0xFF)
                else:
                    break
                if rate is not None:
                    if rate != last_rate:
                        began, paced, last_rate = time.monotonic(), 0, rate
                        if rate == state.faults.clamp_rate and state.faults.clamp_after is not None \
                                and not counted_clamp:
                            counted_clamp = True
                            with state.lock:
                                state.clamped += 1
                    ahead = began + paced / rate - time.monotonic()
                    if ahead > 0 and self.server.stopping.wait(ahead):
                        return False
                try:
                    if pos < file_size:
                        done = self.connection.sendfile(f, offset=pos, count=n)
                    else:
                        self.wfile.write(b"\xff" * n)
                        done = n
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return False
                if not done:
                    break  # the file shrank under us
                if rate is not None:
                    paced += done
                sent += done
                with state.lock:
                    state.body_bytes += done
        return False

    def _trickle(self, path: Path, start: int, end: int, overrun: int, piece: int, interval: float) -> None:
        with open(path, "rb") as f:
            f.seek(start)
            body_end = end + overrun
            pos = start
            while pos < body_end:
                if self.server.stopping.wait(interval):
                    break
                chunk = f.read(min(piece, body_end - pos)) or b"\xff" * min(piece, body_end - pos)
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    break
                pos += len(chunk)
        self.close_connection = True


class FileServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, address: tuple[str, int], faults: Faults):
        self.root = root
        self.state = _State(faults)
        self.stopping = threading.Event()  # ends trickling responses at shutdown
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def start(self) -> "FileServer":
        self._thread = threading.Thread(target=self.serve_forever, name="http-files", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def serve_files(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                faults: Faults | dict | None = None) -> FileServer:
    """Serve the files under `root` over HTTP in a background thread; returns the started server
    (`.server_address`, `.url`, `.state.requests`, `.shutdown()`)."""
    if isinstance(faults, dict):
        faults = Faults(**faults)
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root_path}: not a folder")
    return FileServer(root_path, (host, port), faults or Faults()).start()
