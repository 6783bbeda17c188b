"""RpcClient against the real loopback server with injected faults: 429 bursts, 5xx, timeouts, dropped
connections, refused batches, permanent errors; rate limiting; URL choice; credential redaction."""
from __future__ import annotations

import logging

import pytest

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_faults import Faults
from iq_etl.devchain.servers.rpc_index import RpcChain
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
from iq_etl.ingest.sources.rpc.client import RpcClient, RpcError, SkippedSlot, resolve_rpc_url
from iq_etl.ingest.sources.rpc.discovery import discover_windows
from iq_etl.ingest.sources.rpc.limits import TokenBucket
from iq_etl.ingest.sources.rpc.signatures import RpcSignatureSource
from iq_etl.net.redact import redact_url
from iq_etl.settings import DEFAULT_RPC_URL, load_settings
from tests.support.rpc_chain import FIRST_SLOT, PDAS, build_blocks, transactions

SKIPPED = FIRST_SLOT + 2
SLOTS = 8
LAST = FIRST_SLOT + SLOTS - 1
FAST = dict(rps=None, method_rps=None, backoff_base=0.01, backoff_max=0.05, max_retries=12)


@pytest.fixture(scope="module")
def chain_blocks():
    return build_blocks(slots=SLOTS, tx_per_slot=5, skipped=[SKIPPED])


@pytest.fixture
def server(chain_blocks):
    srv = serve_rpc(RpcChain.from_blocks(chain_blocks))
    yield srv
    srv.shutdown()


def client_for(server, **kw) -> RpcClient:
    return RpcClient(server.url, **{**FAST, **kw})


def assert_complete(client, chain_blocks):
    """Dense scan, discovery and sparse fetch all return exactly the chain."""
    dense = list(RpcBlockSource(client).iter_blocks(FIRST_SLOT, LAST))
    assert [(b.slot, b.skipped) for b in dense] == [(b.slot, b.skipped) for b in chain_blocks]
    assert transactions(dense) == transactions(chain_blocks)
    found = discover_windows(client, [str(p) for p in PDAS], padding=0)
    sparse = list(RpcSignatureSource(client, found.signature_slots()).iter_blocks(FIRST_SLOT, LAST))
    wanted = {str(p) for p in PDAS}
    assert transactions(sparse) == [tx for tx in transactions(chain_blocks) if wanted & set(tx.account_keys())]


def test_clean_run_and_batching(server, chain_blocks):
    with client_for(server, batch_size=5) as client:
        assert_complete(client, chain_blocks)
        stats = client.stats.snapshot()
        assert stats["retries"] == 0 and stats["skipped_slots"] == 1
        assert stats["blocks_fetched"] == SLOTS - 1
        # getTransaction calls travel 5 to a POST: fewer HTTP requests than JSON-RPC calls
        assert server.counters.http_requests < server.counters.rpc_calls
        assert stats["requests"] == server.counters.rpc_calls


def test_429_bursts_honour_retry_after(server, chain_blocks):
    server.set_faults(Faults(burst=(3, 2), retry_after=0.05))
    slept: list[float] = []

    def record(seconds):
        slept.append(seconds)

    with client_for(server, sleep=record, concurrency=1) as client:
        assert_complete(client, chain_blocks)
        assert client.stats.http_429 == server.counters.http_429 > 0
        # every 429 was answered by waiting exactly what Retry-After said
        assert slept.count(0.05) == client.stats.http_429


def test_time_window_rate_limit_still_gives_complete_results(server, chain_blocks):
    server.set_faults(Faults(rate_limit=4, rate_window=0.2, retry_after=0.1))
    with client_for(server, concurrency=4) as client:
        assert_complete(client, chain_blocks)
        assert client.stats.http_429 == server.counters.http_429


def test_5xx_are_retried(server, chain_blocks):
    server.set_faults(Faults(error_rate=0.3, seed=11))
    with client_for(server) as client:
        assert_complete(client, chain_blocks)
        assert client.stats.http_5xx == server.counters.http_5xx > 0


def test_dropped_connections_are_retried(server, chain_blocks):
    server.set_faults(Faults(drop_rate=0.25, seed=5))
    with client_for(server) as client:
        assert_complete(client, chain_blocks)
        assert server.counters.dropped > 0
        assert client.stats.dropped == server.counters.dropped


def test_timeouts_are_retried(server, chain_blocks):
    # Delayed answers (3 s) always time out at 1 s; an answer that was not delayed has 1 s, so a
    # loaded machine does not time it out too (the count check below would then fail).
    server.set_faults(Faults(delay=3.0, delay_rate=0.2, seed=3))
    with client_for(server, timeout=1.0) as client:
        assert_complete(client, chain_blocks)
        assert client.stats.timeouts > 0
        assert client.stats.timeouts <= server.counters.delayed


def test_refused_batches_fall_back_to_single_calls(server, chain_blocks):
    server.set_faults(Faults(reject_batches=True))
    with client_for(server, batch_size=8) as client:
        sigs = [tx.signature for tx in transactions(chain_blocks)][:10]
        results = client.call_many("getTransaction", [[s, {"encoding": "base64", "maxSupportedTransactionVersion": 0}]
                                                      for s in sigs])
        assert [r["transaction"][0] for r in results] and len(results) == 10
        assert client.batching is False


def test_per_item_results_in_a_batch(server):
    with client_for(server, batch_size=10, max_retries=2) as client:
        out = client.call_many("getBlock", [[FIRST_SLOT, {"transactionDetails": "none"}],
                                            [SKIPPED, {"transactionDetails": "none"}],
                                            [FIRST_SLOT + 1, {"transactionDetails": "none"}]])
        assert out[0]["parentSlot"] == FIRST_SLOT - 1
        assert out[1] == SkippedSlot(SKIPPED, -32009, f"Slot {SKIPPED} was skipped, or missing in long-term storage")
        assert out[2]["parentSlot"] == FIRST_SLOT
        assert server.counters.http_requests == 1
        # -32004 (above the tip) is retried, then reported with the method and slot
        with pytest.raises(RpcError, match=rf"getBlock\(\[{LAST + 1}.*gave up after 3 attempts.*-32004.*Block not available"):
            client.call_many("getBlock", [[FIRST_SLOT, {"transactionDetails": "none"}], [LAST + 1]])


def test_permanent_errors_name_method_params_and_message(server):
    with client_for(server) as client:
        with pytest.raises(RpcError) as info:
            client.call("getBalance", [str(PDAS[0])])
        err = info.value
        assert isinstance(err, SourceError)
        assert (err.method, err.code) == ("getBalance", -32601)
        assert "getBalance" in str(err) and str(PDAS[0]) in str(err) and "Method not found" in str(err)
        assert server.counters.http_requests == 1  # not retried
        with pytest.raises(RpcError, match="Invalid limit; max 1000"):
            client.call("getSignaturesForAddress", [str(PDAS[0]), {"limit": 5000}])
        with pytest.raises(SourceError, match="signature.*not found"):
            list(RpcSignatureSource(client, ["1" * 64]).iter_blocks(FIRST_SLOT, LAST))


def test_giving_up_after_max_retries(server):
    server.set_faults(Faults(error_rate=1.0))
    with client_for(server, max_retries=3) as client:
        with pytest.raises(RpcError, match=r"getSlot\(\[\]\).*gave up after 4 attempts; last problem: HTTP 503"):
            client.call("getSlot")
        assert server.counters.http_5xx == 4


def test_credentials_never_shown(server, caplog):
    secret_url = f"{server.url}/v2/k3yK3yK3yK3yK3yK3yK3y?api-key=TOPSECRET42&cluster=main"
    assert redact_url(secret_url) == f"{server.url}/v2/***?api-key=***&cluster=***"
    assert "TOPSECRET42" not in redact_url("https://user:TOPSECRET42@rpc.example/?x=1")
    server.set_faults(Faults(drop_rate=0.5, error_rate=0.3, seed=2))
    caplog.set_level(logging.DEBUG)
    with RpcClient(secret_url, **{**FAST, "max_retries": 30}) as client:
        assert client.call("getSlot") == LAST
        with pytest.raises(RpcError) as info:
            client.call("getBalance", [str(PDAS[0])])
        texts = [str(info.value), repr(client), caplog.text, str(client.stats.snapshot())]
    assert server.counters.dropped + server.counters.http_5xx > 0
    for text in texts:
        assert "TOPSECRET42" not in text and "k3yK3y" not in text


def test_progress_callback_and_counters(server, chain_blocks):
    seen = []
    with client_for(server, progress=lambda s: seen.append(s.snapshot()["http_posts"])) as client:
        list(RpcBlockSource(client).iter_blocks(FIRST_SLOT, FIRST_SLOT + 3))
        snap = client.stats.snapshot()
    # 4 getBlock, plus 1 getBlocks to confirm the skipped slot really is one
    assert seen and max(seen) == snap["http_posts"] == 5
    assert snap["transactions_fetched"] == 15 and snap["requests_per_s"] > 0


def test_token_bucket_spacing_without_wall_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        bucket.acquire()
    assert now[0] == pytest.approx(2.0)  # first free, then one every 0.5 s: 1 + rate*T requests in T
    bucket.acquire(4)                   # a batch of 4 goes once a token is there, leaving a debt ...
    before = now[0]
    bucket.acquire()                    # ... that the next request waits out
    assert now[0] - before == pytest.approx(2.0)


def test_clients_of_one_url_share_one_budget(server):
    a, b = RpcClient(server.url, rps=7, method_rps=3), RpcClient(server.url, rps=7, method_rps=3)
    c = RpcClient(server.url, rps=50, method_rps=None)
    assert a._limits is b._limits and a._limits is not c._limits
    for x in (a, b, c):
        x.close()


def test_url_choice(tmp_path):
    def settings(env):
        return load_settings(env, dotenv=tmp_path / "no.env")

    env = {"SOLANA_RPC_URL": "http://solana.example"}
    assert resolve_rpc_url(None, settings({})) == DEFAULT_RPC_URL
    assert resolve_rpc_url(None, settings(env)) == "http://solana.example"
    assert resolve_rpc_url(None, settings({**env, "IQ_RPC_URL": "http://iq.example"})) == "http://iq.example"
    assert resolve_rpc_url("http://flag.example", settings({**env, "IQ_RPC_URL": "http://iq.example"})) == \
        "http://flag.example"
    with pytest.raises(SourceError, match="not an http"):
        RpcClient("ftp://x?api-key=SECRET")
