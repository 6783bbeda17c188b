"""What one RPC reply may cost in memory (hostile peers round 2, item 2), against real loopback servers:
per-method byte caps, the structural estimate that refuses pathological replies unparsed (peak RSS of
a client process measured), and the process-wide budget of replies being read and parsed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_index import RpcChain
from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
from iq_etl.ingest.sources.rpc.client import RpcClient, RpcError
from iq_etl.ingest.sources.rpc.replies import (
    CHECK_ABOVE,
    KIB,
    MemoryBudget,
    budget_for,
    parse_cost,
    reply_cap,
    shown_size,
)
from tests.support.rpc_chain import FIRST_SLOT, build_blocks, transactions

FAST = dict(rps=None, method_rps=None, backoff_base=0.01, backoff_max=0.05, max_retries=3)
MIB = 1024 * 1024
_BUDGET_SEQ = iter(range(1, 10_000))


def own_budget(capacity: int) -> int:
    """A budget capacity no other test uses (budgets are shared per capacity in the process)."""
    return capacity + next(_BUDGET_SEQ)


# --- a streaming JSON-RPC server: replies are produced piece by piece, never built whole --------------

class Streamer(ThreadingHTTPServer):
    """Answers every POST with the pieces `reply(request)` yields (Content-Length from `length(request)`
    when given, else the body runs until the connection closes)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: Callable[[dict], Iterator[bytes]], length: Callable[[dict], int] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply, self.length = reply, length
        self.requests = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up on a refused reply is the point

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Streamer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.server.length is not None:
            self.send_header("Content-Length", str(self.server.length(request)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            for piece in self.server.reply(request):
                self.wfile.write(piece)
        except OSError:
            self.close_connection = True


@pytest.fixture
def streamer():
    servers: list[Streamer] = []

    def start(reply, length=None):
        srv = Streamer(reply, length)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def envelope(request: dict) -> tuple[bytes, bytes]:
    return b'{"jsonrpc":"2.0","id":%d,"result":' % request["id"], b"}"


def empty_lists(size: int) -> tuple[Callable[[dict], Iterator[bytes]], Callable[[dict], int]]:
    """A reply of `size` bytes whose result is [[],[],...]: json.loads takes ~22 bytes per byte of it."""
    unit = b"[],"
    chunk = unit * 21_845

    def parts(request: dict) -> tuple[bytes, bytes, int]:
        head, tail = envelope(request)
        head, tail = head + b"[", b"[]]" + tail
        return head, tail, (size - len(head) - len(tail)) // len(unit)

    def reply(request: dict) -> Iterator[bytes]:
        head, tail, n = parts(request)
        yield head
        full, rest = divmod(n, len(chunk) // len(unit))
        for _ in range(full):
            yield chunk
        yield unit * rest
        yield tail

    def length(request: dict) -> int:
        head, tail, n = parts(request)
        return len(head) + n * len(unit) + len(tail)

    return reply, length


# --- 1. peak RSS of a client process meeting a hostile reply ----------------------------------------------

_CHILD = """
import json, resource, sys
from iq_etl.ingest.sources.rpc.client import RpcClient
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with RpcClient(sys.argv[1], rps=None, method_rps=None, max_retries=0) as client:
    try:
        result = client.call("getBlock", [7, {"encoding": "base64", "transactionDetails": "full"}])
        outcome = f"accepted {len(result)} items"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "baseline_kb": baseline, "peak_kb": peak}))
"""


@pytest.mark.timeout(300)
def test_a_hostile_reply_of_small_values_is_refused_before_parsing_and_rss_stays_bounded(streamer):
    """60 MiB of [[],[],...] under the 256 MB getBlock cap: parsed, it took ~22x its size (1.3 GB here,
    6.4 GB for 250 MiB). Now it is refused unparsed; the client process's peak RSS stays within ~2x the
    reply above what it had before the call (measured: 250 MiB reply -> +251 MB)."""
    size = 60 * MIB
    reply, length = empty_lists(size)
    srv = streamer(reply, length)
    done = subprocess.run([sys.executable, "-c", _CHILD, srv.url], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    outcome = found["outcome"]
    assert outcome.startswith("RpcError: RPC getBlock([7,") and f" at {srv.url} failed: reply of " in outcome
    assert "once parsed" in outcome and "more than the 1.0 GiB limit (max_reply_memory); refused unparsed" in outcome
    assert "\n" not in outcome
    grown = (found["peak_kb"] - found["baseline_kb"]) * 1024
    assert grown < 3 * size, f"peak RSS grew by {grown / MIB:.0f} MiB for a {size / MIB:.0f} MiB reply"
    assert srv.requests == 1  # refused for good, not retried


# --- 2. per-method byte caps ------------------------------------------------------------------------------

def _padding(total: int) -> Callable[[dict], Iterator[bytes]]:
    """A reply whose result is a string of `total` bytes (total: whole MiB)."""
    def reply(request: dict) -> Iterator[bytes]:
        head, tail = envelope(request)
        yield head + b'"'
        for _ in range(total // MIB):
            yield b"x" * MIB
        yield b'"' + tail
    return reply


def _padding_length(total: int) -> Callable[[dict], int]:
    return lambda request: sum(map(len, envelope(request))) + 2 + total


@pytest.mark.parametrize("method, params, cap, name", [
    ("getSignaturesForAddress", ["Addr", {"limit": 1000}], 8 * MIB, "the getSignaturesForAddress reply cap"),
    ("getSignatureStatuses", [["sig"], {"searchTransactionHistory": True}], 4 * MIB,
     "the getSignatureStatuses reply cap"),
    ("getTransaction", ["sig", {"encoding": "base64"}], 8 * MIB, "the getTransaction reply cap"),
    ("getHealth", [], MIB, "the getHealth reply cap"),
    ("getBlock", [7, {"transactionDetails": "signatures"}], 32 * MIB,
     "the getBlock reply cap for transactionDetails signatures"),
])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_small_answers_have_small_caps(streamer, method, params, cap, name, declared):
    srv = streamer(_padding(cap + MIB), _padding_length(cap + MIB) if declared else None)
    with RpcClient(srv.url, **FAST) as client:
        with pytest.raises(RpcError) as info:
            client.call(method, params)
        assert client.budget.used == 0
    text = str(info.value)
    assert text.startswith(f"RPC {method}(") and text.endswith(
        f" at {srv.url} failed: reply larger than {cap} bytes ({shown_size(cap)}, {name})"), text
    assert srv.requests == 1


def test_a_full_block_keeps_the_large_cap_and_a_batch_the_sum_of_its_calls(streamer):
    big = 40 * MIB  # above every small cap, far below max_reply_bytes
    srv = streamer(_padding(big))
    with RpcClient(srv.url, **FAST) as client:
        assert len(client.call("getBlock", [7, {"transactionDetails": "full"}])) == big
    # ten getTransaction calls in one POST may answer up to 10 x (8 MiB + 1 KiB of envelope) together
    assert reply_cap([("getTransaction", ["s"])] * 10, 256 * MIB) == (
        10 * (8 * MIB + KIB), "the reply cap of a batch of 10 getTransaction calls")
    assert reply_cap([("getTransaction", ["s"])] * 40, 256 * MIB) == (256 * MIB, "max_reply_bytes")
    assert reply_cap([("getBlock", [7, {"transactionDetails": "signatures"}])], 4 * MIB) == (
        4 * MIB, "max_reply_bytes")


# --- 3. the structural estimate ---------------------------------------------------------------------------

def test_a_pathological_reply_is_refused_unparsed_naming_endpoint_method_and_limit(streamer):
    reply, length = empty_lists(MIB)
    srv = streamer(reply, length)
    with RpcClient(srv.url, **FAST, max_reply_memory=8 * MIB) as client:
        with pytest.raises(RpcError) as info:
            client.call("getBlock", [7])
    text = str(info.value)
    assert re.match(rf"RPC getBlock\(\[7\]\) at {srv.url} failed: reply of 1,048,5\d\d bytes would take about "
                    r"3\d MiB of memory once parsed \(349,5\d\d JSON arrays/objects, 349,5\d\d commas\), ", text), text
    assert text.endswith("more than the 8.0 MiB limit (max_reply_memory); refused unparsed")
    assert "\n" not in text and srv.requests == 1


def test_a_small_method_may_take_16x_its_cap(streamer):
    reply, length = empty_lists(6 * MIB)  # under the 8 MiB cap, ~220 MiB once parsed
    srv = streamer(reply, length)
    with RpcClient(srv.url, **FAST) as client:
        with pytest.raises(RpcError, match=r'getSignaturesForAddress\(\["A"\]\) at' r" .* failed: reply of 6,291,4\d\d "
                                           r"bytes would take about \d+ MiB of memory once parsed .* more than the "
                                           r"128 MiB limit \(16x the getSignaturesForAddress reply cap of 8\.0 MiB\)"):
            client.call("getSignaturesForAddress", ["A"])


def test_a_reply_nested_too_deep_is_an_rpc_error_not_a_crash(streamer):
    def reply(request):
        head, tail = envelope(request)
        yield head + b"[" * 100_000 + b"]" * 100_000 + tail
    srv = streamer(reply)
    with RpcClient(srv.url, **FAST) as client:
        with pytest.raises(RpcError, match=r"reply of 200,\d+ bytes nests arrays or objects deeper than the JSON "
                                           r"parser allows"):
            client.call("getBlock", [7])


def test_the_estimate_covers_what_json_loads_takes():
    """The estimate is at or above tracemalloc's peak of json.loads for pathological shapes, and
    within ~3x of it for a legitimate block (so real replies are not refused)."""
    import tracemalloc

    n = 300_000
    shapes = [b"[" + b"[]," * n + b"0]", b"[" + b"{}," * n + b"0]", b"[" + b'{"":0},' * n + b"0]",
              b"[" + b"300," * n + b"0]", b"[" + b"1.5," * n + b"0]", b"[" + b'"abcd",' * n + b"0]",
              b"{" + b",".join(b'"%d":0' % i for i in range(n)) + b"}",
              '["{}"]'.format("x" * n + "\U0001F600").encode()]
    for body in shapes:
        cost = parse_cost(body)[0]
        tracemalloc.start()
        obj = json.loads(body)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del obj
        assert cost >= peak, (body[:20], cost, peak)

    blocks = build_blocks(slots=1, tx_per_slot=300, seed=11, only_kinds=(0, 1, 2, 3))
    with _devchain(blocks) as srv:
        with RpcClient(srv.url, **FAST) as client:
            raw = client.call("getBlock", RpcBlockSource(client).block_params(FIRST_SLOT))
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": raw}).encode()
    tracemalloc.start()
    obj = json.loads(body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del obj
    assert len(body) > CHECK_ABOVE and peak <= parse_cost(body)[0] <= 3 * peak


class _devchain:
    def __init__(self, blocks):
        self.srv = serve_rpc(RpcChain.from_blocks(blocks))

    def __enter__(self):
        return self.srv

    def __exit__(self, *exc):
        self.srv.shutdown()


# --- 4. the process-wide budget of replies in flight ------------------------------------------------------

def test_the_oldest_holder_never_waits_the_others_wait_for_room():
    budget = MemoryBudget(10)
    old, young = budget.ticket(), budget.ticket()
    assert budget.take(old, 6) and budget.take(young, 4)
    assert budget.take(old, 5)  # over the budget: the oldest holder goes on (no deadlock)
    assert budget.used == 15 and budget.peak == 15
    assert budget.take(young, 1, stop=lambda: True) is False  # the younger waits; gives up when told
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(budget.take(young, 1)))
    t.start()
    budget.give_back(old)  # room again: the waiting take goes through
    t.join(10)
    assert got == [True] and budget.used == 5 and budget.held(young) == 5
    budget.give_back(young)
    assert budget.used == 0


def test_concurrent_replies_share_the_budget_and_all_arrive(streamer):
    size = MIB
    srv = streamer(_padding(size))
    capacity = own_budget(3 * MIB)
    with RpcClient(srv.url, **FAST, concurrency=4, memory_budget=capacity) as client:
        results = list(client.imap("getBlock", ([s] for s in range(16)), batch_size=1))
        budget = client.budget
    assert [len(r) for r in results] == [size] * 16
    one_reply = size + parse_cost(b'"' + b"x" * size + b'"')[0] + 64 * 1024
    assert budget.peak <= capacity + one_reply  # never more than the budget plus the oldest reply
    assert budget.used == 0  # everything given back


def test_refused_and_cancelled_replies_give_their_budget_back(streamer):
    reply, length = empty_lists(2 * MIB)
    srv = streamer(reply, length)
    capacity = own_budget(64 * MIB)
    with RpcClient(srv.url, **FAST, concurrency=4, max_reply_memory=8 * MIB, memory_budget=capacity) as client:
        with pytest.raises(RpcError, match="refused unparsed"):
            list(client.imap("getBlock", ([s] for s in range(8)), batch_size=1))
    assert budget_for(capacity).used == 0


def test_a_dense_scan_of_large_blocks_goes_through_the_estimate():
    blocks = build_blocks(slots=3, tx_per_slot=300, seed=12, only_kinds=(0, 1, 2, 3))
    with _devchain(blocks) as srv:
        capacity = own_budget(256 * MIB)
        with RpcClient(srv.url, **FAST, memory_budget=capacity) as client:
            got = list(RpcBlockSource(client).iter_blocks(FIRST_SLOT, FIRST_SLOT + 2))
    assert transactions(got) == transactions(blocks)
    assert budget_for(capacity).peak > CHECK_ABOVE and budget_for(capacity).used == 0
