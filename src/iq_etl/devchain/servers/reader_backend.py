"""A reader backend on loopback that speaks the IQ ingest protocol, for tests, benchmarks and the
demo (the real service is not public; docs/protocol.md §8).

`POST <path>` with the seed's JSON body. The server checks the body (every seed field present,
`payload_base64` valid base64, `sha256` — when given — matching the payload), the bearer token when
one is configured, and deduplicates by the `Idempotency-Key` header: a repeat gets 200 and the
first answer again without being stored twice. Stored bodies are kept in memory (`.received`) and
optionally written to a folder.

Faults (`Faults`) are counted per Idempotency-Key, in this order: `reset_times` connections closed
without an answer, `fail_times` answers 500, `slow_times` answers delayed by `slow_seconds`
(processed normally after the delay), `rate_limit_times` answers 429 with `Retry-After`,
`huge_body_times` answers 500 with a body of `huge_body_bytes` (sent as fast as the client reads),
`trickle_times` answers processed normally but sent slow-loris style: one byte every
`trickle_interval_s`, either the whole answer (`trickle_part="headers"`: status line and headers
trickle) or only its body (`trickle_part="body"`: headers at once); then normal answers.
`bad_request_keys` always get 400 (matched against the upload_key or the whole Idempotency-Key).
`latency_s` delays every answer (benchmarks). A hostile answer the client hangs up on is recorded
as `huge_body_cut` / `trickle_cut`.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_PATH = "/api/v2/inscribe/ingest"
MAX_BODY_BYTES = 512 * 1024 * 1024
SEED_FIELDS = (
    "session_pubkey", "session_id", "total_chunks", "chunk_count", "payload_base64", "merkle_root",
    "reader_mode", "first_slot", "last_slot", "finalize_slot", "finalize_signature", "compression_method",
)


@dataclass(frozen=True)
class Faults:
    reset_times: int = 0
    fail_times: int = 0
    slow_times: int = 0
    slow_seconds: float = 0.0
    rate_limit_times: int = 0
    retry_after: str = "1"
    bad_request_keys: frozenset[str] = field(default_factory=frozenset)
    latency_s: float = 0.0
    huge_body_times: int = 0
    huge_body_bytes: int = 1024 * 1024 * 1024
    trickle_times: int = 0
    trickle_part: str = "headers"   # headers | body
    trickle_interval_s: float = 0.1

    def __post_init__(self) -> None:
        if self.trickle_part not in ("headers", "body"):
            raise ValueError(f"trickle_part must be 'headers' or 'body', got {self.trickle_part!r}")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the backend saw it (never the Authorization header)."""

    idempotency_key: str | None
    status: int | None      # None: connection closed without an answer
    outcome: str            # stored | replayed | reset | error_500 | slow | rate_limited | bad_request | unauthorized
    #                         | invalid | huge_body | huge_body_cut | trickled | trickle_cut (the last four: see Faults)
    authorized: bool


class ReaderBackend(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True  # restartable on the same port right after Ctrl-C (as the RPC and file servers)
    # socketserver's default backlog of 5 drops connections when many clients connect at once;
    # the dropped SYN is retried by the kernel after a second, which would distort benchmarks.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], path: str, faults: Faults | None, token: str | None,
                 store_dir: Path | None):
        super().__init__(address, _Handler)
        self.path = "/" + path.lstrip("/")
        self.faults = faults or Faults()
        self._token = token
        self.store_dir = Path(store_dir) if store_dir else None
        if self.store_dir:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []
        self._answers: dict[str, tuple[int, bytes]] = {}
        self._counts: dict[str, int] = {}
        self._requests: list[RequestRecord] = []
        self._in_flight = 0
        self.max_in_flight = 0
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what tests look at -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    @property
    def received(self) -> list[dict[str, Any]]:
        """Bodies stored, in arrival order, each once (replays are not stored again)."""
        with self._lock:
            return list(self._received)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, idempotency_key: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.idempotency_key == idempotency_key]

    def shutdown(self) -> None:
        self.stopping.set()  # wakes handlers sleeping on slow/latency faults
        super().shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- used by the handler ------------------------------------------------------------------
    def token_ok(self, header: str | None) -> bool:
        if self._token is None:
            return True
        import hmac

        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self._token}".encode())

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def count(self, key: str | None) -> int:
        """1-based number of this request among those with the same Idempotency-Key."""
        with self._lock:
            name = key if key is not None else ""
            self._counts[name] = self._counts.get(name, 0) + 1
            return self._counts[name]

    def log_request_record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def replace_outcome(self, handler: "_Handler", outcome: str) -> None:
        """Change the recorded outcome of `handler`'s request (a hostile answer cut short)."""
        old = handler.record
        if old is None:
            return
        with self._lock:
            for i in range(len(self._requests) - 1, -1, -1):
                if self._requests[i] is old:
                    self._requests[i] = handler.record = dataclasses.replace(old, outcome=outcome)
                    break

    def store(self, key: str | None, body: dict[str, Any]) -> tuple[int, bytes, bool]:
        """Store `body` once per key; returns (status, answer, replayed)."""
        with self._lock:
            if key is not None and key in self._answers:
                status, answer = self._answers[key]
                return status, answer, True
            number = len(self._received) + 1
            answer = json.dumps({"status": "stored", "id": number, "idempotency_key": key,
                                 "sha256": body.get("sha256")}).encode()
            self._received.append(body)
            if key is not None:
                self._answers[key] = (200, answer)
            if self.store_dir is not None:
                name = hashlib.sha256((key or f"no-key-{number}").encode()).hexdigest()[:32] + ".json"
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.store_dir)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(body, fh)
                os.replace(tmp, self.store_dir / name)
            return 200, answer, False


class _Handler(BaseHTTPRequestHandler):
    server: ReaderBackend
    protocol_version = "HTTP/1.1"
    trickle: str | None = None  # set for a request whose answer is to be trickled (Faults.trickle_times)
    record: RequestRecord | None = None  # this request's record, once known

    def setup(self) -> None:
        super().setup()
        # Answers are small: without this, Nagle's algorithm and the client's delayed ACK add
        # ~40 ms to each answer, which would swamp the latency the benchmarks inject.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Request lines only; headers (and so the token) are never logged.
        log.debug("reader backend: %s", format % args)

    def _answer(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if self.trickle:
            return self._trickle(status, body, headers or {})
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True  # the client gave up (e.g. its timeout hit during a slow answer)

    def _trickle(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        """The answer one byte every `trickle_interval_s` (headers included or not), until it is
        sent, the client hangs up or the server stops."""
        server, part = self.server, self.trickle
        self.close_connection = True
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close",
                 *(f"{name}: {value}" for name, value in headers.items())]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        slow = head + body if part == "headers" else body
        try:
            if part == "body":
                self.wfile.write(head)
            for i in range(len(slow)):
                if server.stopping.wait(server.faults.trickle_interval_s):
                    return
                self.wfile.write(slow[i:i + 1])
        except OSError:  # the client gave up (its deadline), as it should
            server.replace_outcome(self, "trickle_cut")

    def _huge_body(self, size: int) -> None:
        """A 500 whose body is `size` bytes, written as fast as the client takes it."""
        server = self.server
        self.close_connection = True
        self.connection.settimeout(10)  # a client that neither reads nor hangs up does not pin this thread
        block = b'{"error":"' + b"x" * (64 * 1024) + b'"}'
        try:
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            while sent < size and not server.stopping.is_set():
                chunk = block[:min(len(block), size - sent)]
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            server.replace_outcome(self, "huge_body_cut")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._answer(405, {"error": "use POST"}, {"Allow": "POST"})

    def do_POST(self) -> None:  # noqa: N802
        server = self.server
        server.enter()
        try:
            self._post(server)
        finally:
            server.leave()

    def _post(self, server: ReaderBackend) -> None:
        self.trickle, self.record = None, None  # the handler serves every request of a connection
        key = self.headers.get("Idempotency-Key")
        authorized = server.token_ok(self.headers.get("Authorization"))

        def done(status: int | None, outcome: str) -> None:
            self.record = RequestRecord(key, status, outcome, authorized)
            server.log_request_record(self.record)

        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            done(411, "invalid")
            return self._answer(411, {"error": "Content-Length required"})
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            done(413, "invalid")
            return self._answer(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
        raw = self.rfile.read(length)
        if self.path.split("?", 1)[0] != server.path:
            done(404, "invalid")
            return self._answer(404, {"error": f"no such endpoint {self.path.split('?', 1)[0]}"})
        faults = server.faults
        if faults.latency_s and server.stopping.wait(faults.latency_s):
            return
        if not authorized:
            done(401, "unauthorized")
            return self._answer(401, {"error": "missing or invalid bearer token"})

        n = server.count(key)
        limit = faults.reset_times
        if n <= limit:
            done(None, "reset")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        limit += faults.fail_times
        if n <= limit:
            done(500, "error_500")
            return self._answer(500, {"error": "injected failure"})
        limit += faults.slow_times
        slow = n <= limit
        if slow and server.stopping.wait(faults.slow_seconds):
            return
        limit += faults.rate_limit_times
        if not slow and n <= limit:
            done(429, "rate_limited")
            return self._answer(429, {"error": "slow down"}, {"Retry-After": faults.retry_after})
        start, limit = limit, limit + faults.huge_body_times
        if not slow and start < n <= limit:
            done(500, "huge_body")
            return self._huge_body(faults.huge_body_bytes)
        start, limit = limit, limit + faults.trickle_times
        if not slow and start < n <= limit:
            self.trickle = faults.trickle_part

        try:
            body = json.loads(raw)
        except ValueError as exc:
            done(400, "invalid")
            return self._answer(400, {"error": f"body is not JSON: {exc}"})
        if not isinstance(body, dict):
            done(400, "invalid")
            return self._answer(400, {"error": "body is not a JSON object"})
        upload_key = body.get("upload_key")
        if key in faults.bad_request_keys or (upload_key is not None and upload_key in faults.bad_request_keys):
            done(400, "bad_request")
            return self._answer(400, {"error": "rejected: upload refused by the backend (injected)"})
        missing = [name for name in SEED_FIELDS if name not in body]
        if missing:
            done(400, "invalid")
            return self._answer(400, {"error": f"missing field(s): {', '.join(missing)}"})
        try:
            payload = base64.b64decode(body["payload_base64"] or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            done(400, "invalid")
            return self._answer(400, {"error": "payload_base64 is not base64"})
        if body.get("sha256") is not None and hashlib.sha256(payload).hexdigest() != body["sha256"]:
            done(422, "invalid")
            return self._answer(422, {"error": "sha256 does not match payload_base64"})

        status, answer, replayed = server.store(key, body)
        done(status, "trickled" if self.trickle else
             ("slow" if slow and not replayed else ("replayed" if replayed else "stored")))
        self._answer(status, answer, {"Idempotent-Replayed": "true"} if replayed else None)


def serve_reader_backend(host: str = "127.0.0.1", port: int = 0, path: str = DEFAULT_PATH,
                         faults: Faults | None = None, token: str | None = None,
                         store_dir: str | Path | None = None) -> ReaderBackend:
    """Start a reader backend in a background thread; `.url` is the full endpoint URL."""
    server = ReaderBackend((host, port), path, faults, token, Path(store_dir) if store_dir else None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"reader-backend-{server.server_address[1]}", daemon=True)
    server._thread = thread
    thread.start()
    return server


def main(argv: list[str] | None = None) -> int:
    """`python -m iq_etl.devchain.servers.reader_backend`: serve until interrupted. The token, if any, is
    read from IQ_READER_TOKEN (never from the command line, where other users could see it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--path", default=DEFAULT_PATH)
    parser.add_argument("--store", type=Path, help="also write stored bodies to this folder")
    args = parser.parse_args(argv)
    from iq_etl.settings import load_settings  # the token: IQ_READER_TOKEN (environment or .env)

    server = serve_reader_backend(args.host, args.port, args.path, token=load_settings().reader_token,
                                  store_dir=args.store)
    print(f"reader backend listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
