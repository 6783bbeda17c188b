"""Export against hostile or misconfigured reader backends: real loopback servers that trickle
their answer (slow loris), answer with an endless body, or refuse the token. No mocks: the
development reader backend's fault injection, and a small http.server where it has no such fault.

Each run must end within the attempt deadline (IQ_EXPORT_TIMEOUT, here 1 s) per attempt, record
what happened in iq.exports, and count it in the summary that decides whether the run is ok.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iq_etl.devchain.servers.reader_backend import Faults
from iq_etl.export import export_ready
from tests.support.export_rows import FAST, insert_rows, ledger_rows, many_uploads, reader_settings

TOKEN = "tok-DO-NOT-LEAK-hostile-0987654321"
# One second per attempt, two attempts: a trickling backend costs about two seconds, not forever.
SHORT = dataclasses.replace(FAST, retry=dataclasses.replace(FAST.retry, timeout_s=1.0, max_attempts=2))
REFUSED_TOKEN = ("HTTP 401 Unauthorized: the backend refused the token; set IQ_READER_TOKEN "
                 "(and check IQ_READER_ENDPOINT_PATH)")
NO_TOKEN = "HTTP 401 Unauthorized: no token was sent; set IQ_READER_TOKEN (and check IQ_READER_ENDPOINT_PATH)"




def _outcomes_settle(server, expected, timeout=3.0):
    """The backend's request outcomes (sorted) once it noticed the client hanging up (it notices
    on its next write, a moment after the client's deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        outcomes = sorted(r.outcome for r in server.requests)
        if outcomes == sorted(expected) or time.monotonic() > deadline:
            return outcomes
        time.sleep(0.05)


# -- slow loris: item 3 ---------------------------------------------------------------------------
@pytest.mark.parametrize("part, phase", [("headers", "waiting for the response headers"),
                                         ("body", "reading the response body")])
def test_a_trickling_backend_hits_the_attempt_deadline_retrying_then_failed(settings, mart, backend, part, phase):
    # A byte every 0.1 s: a read timeout of 1 s never fires, only a wall-clock deadline does.
    server = backend(faults=Faults(trickle_times=99, trickle_part=part, trickle_interval_s=0.1))
    rows = many_uploads(1)
    insert_rows(mart, rows)
    started = time.monotonic()
    summary = export_ready(reader_settings(settings, server), mart, options=SHORT)
    elapsed = time.monotonic() - started
    assert elapsed < 6, f"export took {elapsed:.1f}s against a trickling backend"
    assert (summary.selected, summary.delivered, summary.failed, summary.refused) == (1, 0, 1, 0)
    assert (summary.attempts, summary.retries) == (2, 1) and not summary.ok
    ledger = ledger_rows(mart)
    assert [r["status"] for r in ledger] == ["retrying", "failed"]
    for row in ledger:
        assert "attempt deadline of 1.0" in row["error"] and f"exceeded while {phase}" in row["error"]
        assert "IQ_EXPORT_TIMEOUT=1s" in row["error"]
    assert ledger[-1]["error"].endswith("; gave up after 2 attempt(s)")
    # Headers never complete: no status. The body trickles after a 200 status line: the status is
    # kept, but without the whole answer in time the upload is not taken as delivered.
    assert [r["http_status"] for r in ledger] == ([None, None] if part == "headers" else [200, 200])
    failure = summary.failures[0]
    assert failure["upload_key"] == rows[0]["upload_key"] and failure["status"] == "failed"
    assert failure["error"] == ledger[-1]["error"]
    assert summary.to_dict()["ok"] is False and summary.to_dict()["failed"] == 1
    # The backend stored it once (the retry is a replay of the same Idempotency-Key) and saw the
    # client hang up on both trickled answers.
    assert len(server.received) == 1
    assert _outcomes_settle(server, ["trickle_cut", "trickle_cut"]) == ["trickle_cut", "trickle_cut"]


def test_after_a_trickled_answer_the_retry_delivers_exactly_once(settings, mart, backend):
    server = backend(faults=Faults(trickle_times=1, trickle_part="headers", trickle_interval_s=0.1))
    rows = many_uploads(2)
    insert_rows(mart, rows)
    started = time.monotonic()
    summary = export_ready(reader_settings(settings, server), mart, options=SHORT)
    assert time.monotonic() - started < 5
    assert (summary.delivered, summary.failed, summary.retries, summary.attempts) == (2, 0, 2, 4) and summary.ok
    for row in rows:
        ledger = ledger_rows(mart, session_key=row["upload_key"])
        assert [r["status"] for r in ledger] == ["retrying", "delivered"]
        assert "deadline" in ledger[0]["error"] and ledger[1]["http_status"] == 200
    # Stored by the first (trickled) request, replayed to the second: one body each.
    assert sorted(b["upload_key"] for b in server.received) == sorted(r["upload_key"] for r in rows)
    expected = ["replayed", "replayed", "trickle_cut", "trickle_cut"]
    assert _outcomes_settle(server, expected) == expected


# -- an endless answer: item 2 --------------------------------------------------------------------
def test_a_huge_answer_body_is_cut_at_the_read_limit_not_read_whole(settings, mart, backend):
    # 1 GiB behind a 500: read whole, this would take seconds and a gigabyte; with a 1 s deadline
    # and no read cap it would be a deadline failure instead of the 500 it is.
    server = backend(faults=Faults(huge_body_times=1, huge_body_bytes=1024 ** 3))
    rows = many_uploads(1)
    insert_rows(mart, rows)
    started = time.monotonic()
    summary = export_ready(reader_settings(settings, server), mart, options=SHORT)
    assert time.monotonic() - started < 3
    assert (summary.delivered, summary.failed, summary.retries) == (1, 0, 1) and summary.ok
    first, second = ledger_rows(mart)
    assert (first["status"], first["http_status"], first["error"]) == ("retrying", 500, "HTTP 500 Internal Server Error")
    assert first["response_excerpt"].startswith('{"error":"xxxx') and len(first["response_excerpt"]) == 500
    assert (second["status"], second["http_status"]) == ("delivered", 200)
    # The client hung up long before the gigabyte was sent.
    assert _outcomes_settle(server, ["huge_body_cut", "stored"]) == ["huge_body_cut", "stored"]


# -- 401/403 hints: item 13 -----------------------------------------------------------------------
def _no_leak(mart, summary, caplog):
    assert TOKEN not in repr(mart.query("SELECT * FROM iq.exports").result_rows)
    assert TOKEN not in repr(summary.to_dict()) and TOKEN not in caplog.text


def test_a_refused_token_names_the_settings_to_check_and_is_not_retried(settings, mart, backend, caplog):
    caplog.set_level(logging.DEBUG)
    server = backend(token="the-right-one")
    rows = many_uploads(2)
    insert_rows(mart, rows)
    summary = export_ready(reader_settings(settings, server, token=TOKEN), mart, options=SHORT)
    assert (summary.delivered, summary.failed, summary.refused, summary.attempts, summary.retries) == (0, 2, 0, 2, 0)
    assert not summary.ok
    assert [f["error"] for f in summary.failures] == [REFUSED_TOKEN, REFUSED_TOKEN]
    assert {(f["status"], f["http_status"]) for f in summary.failures} == {("failed", 401)}
    ledger = ledger_rows(mart)
    assert [(r["status"], r["http_status"], r["error"]) for r in ledger] == [("failed", 401, REFUSED_TOKEN)] * 2
    _no_leak(mart, summary, caplog)


def test_a_401_without_a_token_says_to_set_one(settings, mart, backend):
    server = backend(token="the-right-one")
    insert_rows(mart, many_uploads(1))
    summary = export_ready(reader_settings(settings, server, token=None), mart, options=SHORT)
    assert summary.failed == 1 and summary.failures[0]["error"] == NO_TOKEN
    assert ledger_rows(mart)[0]["error"] == NO_TOKEN


def test_a_401_from_another_target_says_the_token_is_not_sent_there(settings, mart, backend):
    reader = backend()
    other = backend(token=TOKEN)
    insert_rows(mart, many_uploads(1))
    summary = export_ready(reader_settings(settings, reader, token=TOKEN), mart, target=other.url, options=SHORT)
    assert summary.failed == 1 and [r.authorized for r in other.requests] == [False]
    assert summary.failures[0]["error"] == (
        "HTTP 401 Unauthorized: no token was sent: IQ_READER_TOKEN goes only to the reader backend's origin "
        "(IQ_READER_BASE_URL), and this target is elsewhere")


class _Forbidding(BaseHTTPRequestHandler):
    """Answers every POST 403, echoing the request's Authorization header (a careless backend)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_POST(self):  # noqa: N802 - stdlib naming
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"error": "forbidden", "you_sent": self.headers.get("Authorization")}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def forbidding_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidding)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_403_names_the_settings_and_an_echoed_token_is_scrubbed(settings, mart, forbidding_server, caplog):
    caplog.set_level(logging.DEBUG)
    host, port = forbidding_server.server_address[:2]
    s = dataclasses.replace(settings, reader_base_url=f"http://{host}:{port}", reader_endpoint_path="/ingest",
                            reader_token=TOKEN)
    insert_rows(mart, many_uploads(1))
    summary = export_ready(s, mart, options=SHORT)
    expected = ("HTTP 403 Forbidden: the backend refused the token; set IQ_READER_TOKEN "
                "(and check IQ_READER_ENDPOINT_PATH)")
    assert (summary.failed, summary.attempts, summary.retries) == (1, 1, 0) and not summary.ok
    assert summary.failures[0]["error"] == expected and summary.failures[0]["http_status"] == 403
    row = ledger_rows(mart)[0]
    assert (row["status"], row["http_status"], row["error"]) == ("failed", 403, expected)
    assert '"you_sent": "Bearer ***"' in row["response_excerpt"]
    _no_leak(mart, summary, caplog)
