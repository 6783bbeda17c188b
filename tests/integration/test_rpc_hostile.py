"""RpcClient and the RPC sources against hostile peers on loopback: real servers doing the hostile thing
(no mocks of the HTTP library). Malformed or incomplete data (the devchain server with a `tamper`
fault), replies too large or trickled forever, a permanent error among slow retryable ones, and
endpoints that are down, misnamed or refusing (a small hostile http.server below)."""
from __future__ import annotations

import gzip
import json
import re
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_faults import Faults
from iq_etl.devchain.servers.rpc_index import RpcChain
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
from iq_etl.ingest.sources.rpc.client import Preflight, RpcClient, RpcError
from iq_etl.ingest.sources.rpc.discovery import discover_windows
from iq_etl.ingest.sources.rpc.signatures import RpcSignatureSource
from tests.support.net import free_port, wait_until
from tests.support.rpc_chain import FIRST_SLOT, PDAS, build_blocks, transactions

FAST = dict(rps=None, method_rps=None, backoff_base=0.01, backoff_max=0.05, max_retries=3)
SLOTS = 6
LAST = FIRST_SLOT + SLOTS - 1
MIB = 1024 * 1024


# --- a hostile JSON-RPC server ------------------------------------------------------------------------

class Hostile(ThreadingHTTPServer):
    """Answers every POST with `behave(handler, request, n)` (n: 1-based count of HTTP requests)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, behave: Callable[["_Handler", Any, int], None]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behave = behave
        self.requests = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self) -> int:
        with self.lock:
            return self.requests

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client cutting a connection off is what these tests are about

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Hostile

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            n = self.server.requests
        try:
            self.server.behave(self, request, n)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send(self, payload: bytes, *, status: int = 200, headers: dict[str, str] | None = None,
             length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(payload)))
        else:
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def reply(self, request: Any, *, result: Any = None, error: dict | None = None) -> None:
        obj = {"jsonrpc": "2.0", "id": request["id"]}
        obj.update({"error": error} if error is not None else {"result": result})
        self.send(json.dumps(obj).encode())

    def trickle(self, data: bytes, every: float = 0.05) -> None:
        """Write `data` a byte every `every` seconds (unbuffered), until done or the client goes away."""
        for i in range(len(data)):
            if self.server.stopping.is_set():
                return
            self.wfile.write(data[i:i + 1])
            time.sleep(every)


@pytest.fixture
def hostile():
    servers: list[Hostile] = []

    def start(behave):
        srv = Hostile(behave)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- the devchain server, tampered ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_blocks():
    return build_blocks(slots=SLOTS, tx_per_slot=5, seed=7)  # signatures no other test module locates


@pytest.fixture
def server(chain_blocks):
    srv = serve_rpc(RpcChain.from_blocks(chain_blocks))
    yield srv
    srv.shutdown()


def tamper_block(slot: int, change: Callable[[dict], Any]) -> Faults:
    """Faults whose getBlock(slot) result is `change(result)` (a copy)."""
    def tamper(method, params, result):
        if method == "getBlock" and params[0] == slot and isinstance(result, dict):
            return change(json.loads(json.dumps(result)))
        return result
    return Faults(tamper=tamper)


def without(key: str) -> Callable[[dict], dict]:
    return lambda obj: {k: v for k, v in obj.items() if k != key}


def dense(client, first=FIRST_SLOT, last=LAST):
    return list(RpcBlockSource(client).iter_blocks(first, last))


# --- 1. incomplete peer data is an error, never an empty default ---------------------------------------

@pytest.mark.parametrize("change, message", [
    (without("transactions"), "block has no 'transactions' field"),
    (lambda b: {**b, "transactions": None}, "block has transactions null, expected a list"),
])
def test_block_without_transactions_is_an_error_not_an_empty_block(server, change, message):
    hole = FIRST_SLOT + 2
    server.set_faults(tamper_block(hole, change))
    with RpcClient(server.url, **FAST) as client:
        with pytest.raises(SourceError) as info:
            dense(client)
    text = str(info.value)
    assert text.startswith(f"getBlock({hole}) at {server.url}: ") and message in text
    assert "\n" not in text


def test_a_block_that_lists_zero_transactions_is_empty(server):
    empty = FIRST_SLOT + 2
    server.set_faults(tamper_block(empty, lambda b: {**b, "transactions": []}))
    with RpcClient(server.url, **FAST) as client:
        blocks = dense(client)
    assert [(b.slot, b.transactions_seen) for b in blocks if b.transactions_seen == 0] == [(empty, 0)]


def _first_tx(change: Callable[[dict], Any], *, v0: bool = False) -> Callable[[dict], dict]:
    """Apply `change` to the block's first (v0: first version-0) transaction entry."""
    def apply(block):
        i = next(i for i, e in enumerate(block["transactions"]) if not v0 or e.get("version") == 0)
        block["transactions"][i] = change(block["transactions"][i])
        return block
    return apply


def _meta(change: Callable[[dict], Any]) -> Callable[[dict], dict]:
    return lambda entry: {**entry, "meta": change(entry["meta"])}


@pytest.mark.parametrize("change, message", [
    (without("parentSlot"), "block has no 'parentSlot' field"),
    (without("blockTime"), "block has no 'blockTime' field"),
    (lambda b: {**b, "blockHeight": "7"}, "block has blockHeight '7', expected an integer or null"),
    (_first_tx(without("meta")), "transaction 0: transaction entry has no 'meta' field"),
    (_first_tx(_meta(without("err"))), "malformed transaction meta has no 'err' field"),
    (_first_tx(_meta(without("fee"))), "malformed transaction meta has no 'fee' field"),
    (_first_tx(_meta(without("loadedAddresses")), v0=True), "but the v0 transaction's lookups load"),
    (_first_tx(_meta(lambda m: {**m, "innerInstructions": [{"index": 0}]}), v0=True),
     "innerInstructions[0] has no 'instructions' field"),
])
def test_missing_fields_in_blocks_are_errors(server, change, message):
    server.set_faults(tamper_block(FIRST_SLOT + 1, change))
    with RpcClient(server.url, **FAST) as client:
        with pytest.raises(SourceError, match=re.escape(message)):
            dense(client)


def test_missing_fields_in_discovery_and_sparse_answers_are_errors(server, chain_blocks):
    sigs = {tx.signature: tx.slot for tx in transactions(chain_blocks)[:4]}

    def drop_err(method, params, result):
        if method == "getSignaturesForAddress":
            result[1] = without("err")(result[1])
        return result

    server.set_faults(Faults(tamper=drop_err))
    with RpcClient(server.url, **FAST) as client:
        with pytest.raises(SourceError, match=r"getSignaturesForAddress\(.*\) at .*: entry 1 has no 'err' field"):
            discover_windows(client, [str(PDAS[0])])

        server.set_faults(Faults(tamper=lambda m, p, r: without("signatures")(r) if m == "getBlock" else r))
        with pytest.raises(SourceError, match=rf"getBlock\({FIRST_SLOT}\) at .*: block has no 'signatures' field"):
            list(RpcSignatureSource(client, sigs).iter_blocks(FIRST_SLOT, LAST))

        server.set_faults(Faults(tamper=lambda m, p, r: {"value": [{"confirmations": None}] * len(p[0])}
                                 if m == "getSignatureStatuses" else r))
        with pytest.raises(SourceError, match=r"getSignatureStatuses at .*: status of \w+ has no 'slot' field"):
            list(RpcSignatureSource(client, list(sigs)).iter_blocks(FIRST_SLOT, LAST))


# --- 6. wrong types are one-line errors naming the method and the field ---------------------------------

def test_wrong_types_from_the_peer_are_one_line_errors(server, chain_blocks):
    pda = str(PDAS[0])
    sig, slot = next((tx.signature, tx.slot) for tx in transactions(chain_blocks))

    def cases():
        def bad_slot(method, params, result):
            if method == "getSignaturesForAddress":
                result[3]["slot"] = "abc"
            return result
        yield (Faults(tamper=bad_slot), lambda c: discover_windows(c, [pda]),
               f"getSignaturesForAddress({pda}) at {server.url}: entry 3 has slot 'abc', expected an integer")
        yield (Faults(tamper=lambda m, p, r: "abc" if m == "getTransaction" else r),
               lambda c: list(RpcSignatureSource(c, {sig: slot}).iter_blocks(slot, slot)),
               f"getTransaction({sig}) at {server.url}: result is 'abc', expected an object")
        yield (Faults(tamper=lambda m, p, r: {**r, "meta": "abc"} if m == "getTransaction" else r),
               lambda c: list(RpcSignatureSource(c, {sig: slot}).iter_blocks(slot, slot)),
               f"getTransaction({sig}): transaction entry has meta 'abc', expected an object or null")
        yield (tamper_block(slot, _first_tx(_meta(lambda m: "abc"))), lambda c: dense(c, slot, slot),
               f"getBlock({slot}) transaction 0: transaction entry has meta 'abc', expected an object or null")
        yield (Faults(tamper=lambda m, p, r: [str(s) for s in r] if m == "getBlocks" else r,
                      hide_blocks=frozenset({slot})),
               lambda c: dense(c, slot, slot),
               f"getBlocks({slot}, {slot}) at {server.url}: entry 0 is '{slot}', expected an integer")
        yield (Faults(tamper=lambda m, p, r: {**r, "slot": "x"} if m == "getTransaction" else r),
               lambda c: list(RpcSignatureSource(c, {sig: slot}).iter_blocks(slot, slot)),
               f"getTransaction({sig}) at {server.url}: result has slot 'x', expected an integer")

    with RpcClient(server.url, **FAST) as client:
        for faults, run, expected in cases():
            server.set_faults(faults)
            with pytest.raises(SourceError) as info:
                run(client)
            assert str(info.value) == expected


# --- 2. reply size cap and per-request deadline --------------------------------------------------------

def _big_result(request: Any, size: int) -> bytes:
    return _json({"jsonrpc": "2.0", "id": request["id"], "result": "x" * size})


@pytest.mark.parametrize("how", ["content-length", "until-close", "gzip-bomb"])
def test_a_reply_larger_than_the_cap_fails_for_good(hostile, how):
    # Built before tracemalloc starts: the server shares the process. The client's first call has id 1.
    if how == "gzip-bomb":  # 64 MiB of JSON in ~64 KiB of gzip
        payload = gzip.compress(_big_result({"id": 1}, 64 * MIB), 9)
    else:
        payload = _big_result({"id": 1}, 3 * MIB)

    def behave(h, request, n):
        if how == "content-length":
            h.send(payload)
        elif how == "until-close":  # no Content-Length: the body runs until the server closes
            h.send(payload, length=False)
        else:
            h.send(payload, headers={"Content-Encoding": "gzip"})

    srv = hostile(behave)
    tracemalloc.start()
    try:
        with RpcClient(srv.url, **FAST, max_reply_bytes=MIB) as client:
            with pytest.raises(RpcError, match=rf"getBlock\(\[7\]\) at {srv.url} failed: reply larger than "
                                               rf"{MIB} bytes") as info:
                client.call("getBlock", [7])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert srv.count() == 1  # permanent: not retried
    assert "\n" not in str(info.value)
    assert peak < 8 * MIB  # never read (or decoded) much past the cap


def test_a_reply_under_the_cap_still_passes_gzip_included(hostile):
    srv = hostile(lambda h, request, n: h.send(gzip.compress(_big_result(request, MIB - 100)),
                                               headers={"Content-Encoding": "gzip"}))
    with RpcClient(srv.url, **FAST, max_reply_bytes=MIB) as client:
        assert len(client.call("getBlock", [7])) == MIB - 100


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickled_reply_hits_the_deadline_and_is_retried(hostile, where):
    """One byte every 50 ms never trips a 5 s read timeout; the 1 s deadline does, every attempt."""
    def behave(h, request, n):
        payload = _big_result(request, 10_000)
        if where == "body":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.flush()
            h.trickle(payload)
        else:
            h.trickle(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"." * 10_000 + b"\r\n")

    srv = hostile(behave)
    started = time.monotonic()
    with RpcClient(srv.url, **{**FAST, "max_retries": 1}, timeout=5.0, deadline=1.0) as client:
        with pytest.raises(RpcError, match=r"gave up after 2 attempts; last problem: no complete reply within 1s "
                                           r"\(request deadline\)"):
            client.call("getBlock", [7])
        assert client.stats.timeouts == 2
    assert time.monotonic() - started < 5
    assert srv.count() == 2


@pytest.mark.timeout(60)
def test_a_deadline_is_transient_the_retry_gets_the_answer(hostile):
    def behave(h, request, n):
        if n == 1:
            h.send_response(200)
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.flush()
            h.trickle(b" " * 1000)
        else:
            h.reply(request, result={"ok": n})

    srv = hostile(behave)
    started = time.monotonic()
    # 2 s, not 0.5: the trickle (a byte every 0.05 s: 50 s) is always cut, and the second answer
    # arrives well within it on a loaded machine too.
    with RpcClient(srv.url, **FAST, timeout=5.0, deadline=2.0) as client:
        assert client.call("getSlot") == {"ok": 2}
        assert client.stats.timeouts == 1
    assert time.monotonic() - started < 15


# --- 5. a permanent error stops every worker at once ----------------------------------------------------

def _slow_503_but(bad: int, *, code: int = -32602):
    """getBlock(bad): a permanent error at once; everything else: 0.3 s, then HTTP 503 (retryable)."""
    def behave(h, request, n):
        if request["params"][0] == bad:
            h.reply(request, error={"code": code, "message": "Invalid params: injected"})
        else:
            time.sleep(0.3)
            h.send(b"upstream busy", status=503)
    return behave


def _settles(srv: Hostile, quiet: float = 1.0, within: float = 5.0) -> int:
    """The server's request count once it stayed unchanged for `quiet` seconds (fails after `within`)."""
    end = time.monotonic() + within
    last, since = srv.count(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = srv.count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the server still receives requests {within}s later ({srv.count()})")


@pytest.mark.timeout(120)
def test_a_permanent_error_stops_the_prefetch_at_once(hostile):
    srv = hostile(_slow_503_but(3))
    # The retry budget alone would keep the workers busy for about a minute.
    client = RpcClient(srv.url, rps=None, method_rps=None, concurrency=4, max_retries=8, backoff_base=0.5,
                       backoff_max=30)
    started = time.monotonic()
    with pytest.raises(RpcError, match=r"getBlock\(\[3\]\).*failed \(code -32602\): Invalid params: injected"):
        list(client.imap("getBlock", ([s] for s in range(40)), batch_size=1))
    assert time.monotonic() - started < 3  # not after the earlier slots' retries ran out
    at_raise = srv.count()
    settled = _settles(srv)
    assert settled <= at_raise + 4  # at most what was already on its way
    t = time.monotonic()
    client.close()
    assert time.monotonic() - t < 1.5


@pytest.mark.timeout(120)
def test_a_bad_block_stops_the_prefetch_of_its_source_at_once(hostile):
    """A consumer-side error (an answer that is no block) also stops the workers retrying other slots."""
    bad = 3

    def behave(h, request, n):
        if request["params"][0] == bad:
            h.reply(request, result="abc")
        else:
            time.sleep(0.3)
            h.send(b"upstream busy", status=503)

    srv = hostile(behave)
    client = RpcClient(srv.url, rps=None, method_rps=None, concurrency=4, max_retries=8, backoff_base=0.5,
                       backoff_max=30)
    started = time.monotonic()
    source = RpcBlockSource(client, verify_skips=False)
    with pytest.raises(SourceError, match=r"getBlock\(3\) at .*: no block in the answer"):
        list(source.iter_blocks(bad, bad + 30))  # the bad block comes first; the later slots keep failing
    assert time.monotonic() - started < 3
    at_raise = srv.count()
    assert _settles(srv) <= at_raise + 4
    client.close()


@pytest.mark.timeout(60)
def test_close_stops_workers_waiting_to_retry(hostile):
    srv = hostile(lambda h, request, n: h.send(b"busy", status=503))
    client = RpcClient(srv.url, rps=None, method_rps=None, concurrency=2, max_retries=8, backoff_base=20,
                       backoff_max=60)
    errors: list[BaseException] = []

    def consume():
        try:
            list(client.imap("getBlock", ([s] for s in range(4)), batch_size=1))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    # Both workers got their 503 and are in their backoff sleep (10 s at least: equal jitter of 20 s)
    # once the server counted two requests; waited for, not slept on, so a loaded machine cannot close
    # the client earlier. A close that did not wake them would take 10 s or more.
    wait_until(lambda: srv.count() >= 2, "both workers' first request", limit_s=30)
    started = time.monotonic()
    client.close()
    t.join(30)
    assert time.monotonic() - started < 5
    assert errors and "cancelled: the client was closed" in str(errors[0])


# --- 7. fail fast: preflight, and causes named apart ---------------------------------------------------

def test_preflight_against_the_devchain(server):
    with RpcClient(server.url, **FAST) as client:
        found = client.preflight()
    assert isinstance(found, Preflight) and (found.method, found.result, found.note) == ("getHealth", "ok", None)
    assert server.counters.by_method["getHealth"] == 1


def test_preflight_falls_back_to_get_version(hostile):
    def behave(h, request, n):
        if request["method"] == "getHealth":
            h.reply(request, error={"code": -32601, "message": "Method not found"})
        else:
            h.reply(request, result={"solana-core": "2.2.0", "feature-set": 1})

    srv = hostile(behave)
    with RpcClient(srv.url, **FAST) as client:
        found = client.preflight()
    assert (found.method, found.result["solana-core"]) == ("getVersion", "2.2.0")
    assert "Method not found" in found.note


@pytest.mark.timeout(60)
def test_preflight_names_the_cause(hostile):
    port = free_port()
    # (url, answer timeout, message): only the silent server gets the short answer timeout, so a
    # loaded machine cannot turn the 401 or 503 into a timeout. The .invalid name is answered by the
    # suite's loopback guard as a resolver answers an unknown name (no DNS query leaves the machine).
    silent = hostile(lambda h, request, n: time.sleep(3))
    unauthorized = hostile(lambda h, request, n: h.send(b"no key", status=401))
    down = hostile(lambda h, request, n: h.send(b"down", status=503))
    cases: list[tuple[str, float, str]] = [
        (f"http://127.0.0.1:{port}", 5.0, f"RPC getHealth([]) at http://127.0.0.1:{port} failed: connection refused"),
        ("http://iq-etl-test.invalid:8899", 5.0, "failed: name not resolved (DNS): iq-etl-test.invalid"),
        (silent.url, 0.5, "failed: timed out waiting for the reply after 0.5s"),
        (unauthorized.url, 5.0, "failed: HTTP 401: no key"),
        (down.url, 5.0, "failed: HTTP 503: down"),
    ]
    for url, answer_timeout, message in cases:
        with RpcClient(url, **FAST) as client:
            with pytest.raises(RpcError) as info:
                client.preflight(connect_timeout=5.0, answer_timeout=answer_timeout)
        assert message in str(info.value), str(info.value)
    # One request each: a preflight names the cause at once, it does not retry.
    assert (silent.count(), unauthorized.count(), down.count()) == (1, 1, 1)


def test_retries_name_a_refused_connection_apart(hostile):
    port = free_port()
    with RpcClient(f"http://127.0.0.1:{port}", **{**FAST, "max_retries": 1}) as client:
        with pytest.raises(RpcError, match="gave up after 2 attempts; last problem: connection refused$"):
            client.call("getSlot")
        assert client.stats.connect_errors == 2 and client.stats.dropped == 0


def test_through_ingest_a_block_without_transactions_leaves_its_range_not_done(server, settings):
    """Operations issue, item 1, end to end: the sub-range holding the bad block is recorded `failed`,
    never `done` (before, it was marked done: silent loss), and the run reports itself incomplete."""
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.warehouse import client as wh

    hole = FIRST_SLOT + 2
    server.set_faults(tamper_block(hole, lambda b: {k: v for k, v in b.items() if k != "transactions"}))
    wh.close_client()
    try:
        with pytest.raises(SourceError, match="has no 'transactions' field"):
            run_ingest(settings, IngestRequest(slot_spec=f"{FIRST_SLOT}:{FIRST_SLOT + 5}", source="rpc-blocks",
                                               rpc_url=server.url, rpc_options=FAST, subrange_slots=3))
        rows = wh.get_client(settings).query(
            "SELECT first_slot, last_slot, status FROM iq.scan_ranges FINAL ORDER BY first_slot").result_rows
    finally:
        wh.close_client()
    statuses = {(a, b): s for a, b, s in rows}
    assert statuses.get((FIRST_SLOT, FIRST_SLOT + 2)) == "failed"
    assert "done" not in [s for (a, b), s in statuses.items() if a <= hole <= b]
