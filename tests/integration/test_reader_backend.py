"""The loopback reader backend used by export tests, benchmarks and the demo: protocol checks,
idempotency, bearer token, and each injected fault."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading

import pytest
import requests

from iq_etl.devchain.servers.reader_backend import SEED_FIELDS, Faults, serve_reader_backend


def _body(payload: bytes = b"hello", **extra) -> dict:
    body = {name: None for name in SEED_FIELDS}
    body.update(session_pubkey="S", total_chunks=1, chunk_count=1,
                payload_base64=base64.b64encode(payload).decode(), sha256=hashlib.sha256(payload).hexdigest())
    body.update(extra)
    return body


@pytest.fixture
def backend_factory():
    started = []

    def start(**kwargs):
        server = serve_reader_backend(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()


def _post(url, body, key="k1", token=None, timeout=5.0):
    headers = {"Idempotency-Key": key} if key else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, json=body, headers=headers, timeout=timeout)


def test_stores_a_valid_body_and_replays_the_same_answer_for_a_repeat(backend_factory, tmp_path):
    server = backend_factory(store_dir=tmp_path / "store")
    assert server.url.endswith("/api/v2/inscribe/ingest") and server.url.startswith("http://127.0.0.1:")
    first = _post(server.url, _body())
    again = _post(server.url, _body())
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(server.received) == 1 and server.received[0]["session_pubkey"] == "S"
    assert [r.outcome for r in server.requests] == ["stored", "replayed"]
    stored = list((tmp_path / "store").glob("*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["sha256"] == _body()["sha256"]
    # Without an Idempotency-Key nothing is deduplicated (like the seed's backend).
    _post(server.url, _body(), key=None)
    _post(server.url, _body(), key=None)
    assert len(server.received) == 3


def test_rejects_bad_bodies_paths_and_methods(backend_factory):
    server = backend_factory()
    missing = _body()
    del missing["merkle_root"]
    r = _post(server.url, missing, key="a")
    assert r.status_code == 400 and "merkle_root" in r.json()["error"]
    assert _post(server.url, _body(payload_base64="not base64!"), key="b").status_code == 400
    assert _post(server.url, _body(sha256="00" * 32), key="c").status_code == 422
    assert _post(server.base_url + "/other", _body(), key="d").status_code == 404
    assert requests.get(server.url, timeout=5).status_code == 405
    assert server.received == []


def test_bearer_token_is_checked_and_never_logged(backend_factory, caplog):
    caplog.set_level(logging.DEBUG)
    server = backend_factory(token="s3cret-token")
    assert _post(server.url, _body(), key="a").status_code == 401
    assert _post(server.url, _body(), key="a", token="wrong").status_code == 401
    assert _post(server.url, _body(), key="a", token="s3cret-token").status_code == 200
    assert [r.authorized for r in server.requests] == [False, False, True]
    assert "s3cret-token" not in caplog.text
    assert "s3cret-token" not in repr(server.requests)


def test_fault_sequence_per_key_reset_500_slow_429_then_success(backend_factory):
    server = backend_factory(faults=Faults(reset_times=1, fail_times=2, slow_times=1, slow_seconds=3.0,
                                           rate_limit_times=1, retry_after="7"))
    with pytest.raises(requests.ConnectionError):
        _post(server.url, _body(), key="k")
    assert _post(server.url, _body(), key="k").status_code == 500
    assert _post(server.url, _body(), key="k").status_code == 500
    with pytest.raises(requests.Timeout):
        _post(server.url, _body(), key="k", timeout=0.3)
    limited = _post(server.url, _body(), key="k")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert _post(server.url, _body(), key="k").status_code == 200
    # Another key has its own count: starts again with the reset.
    with pytest.raises(requests.ConnectionError):
        _post(server.url, _body(), key="other")
    outcomes = [r.outcome for r in server.requests_for("k")]
    assert outcomes[:3] == ["reset", "error_500", "error_500"]
    assert "rate_limited" in outcomes and outcomes.count("stored") + outcomes.count("slow") + outcomes.count("replayed") >= 1
    assert len([b for b in server.received if b["sha256"] == _body()["sha256"]]) == 1


def test_bad_request_keys_always_get_400(backend_factory):
    server = backend_factory(faults=Faults(bad_request_keys=frozenset({"bad-upload"})))
    for _ in range(3):
        r = _post(server.url, _body(upload_key="bad-upload"), key="bad-upload:abc")
        assert r.status_code == 400 and "refused" in r.json()["error"]
    assert _post(server.url, _body(upload_key="good"), key="good:abc").status_code == 200
    assert len(server.received) == 1


def test_counts_requests_in_flight(backend_factory):
    server = backend_factory(faults=Faults(latency_s=1.5))  # long enough to overlap on a loaded machine
    barrier = threading.Barrier(4)

    def send(i):
        barrier.wait()
        _post(server.url, _body(payload=f"p{i}".encode()), key=f"k{i}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.received) == 4
    assert 2 <= server.max_in_flight <= 4


def test_shutdown_does_not_wait_for_a_slow_answer(backend_factory):
    server = backend_factory(faults=Faults(slow_times=1, slow_seconds=600))
    with pytest.raises(requests.Timeout):
        _post(server.url, _body(), key="k", timeout=0.2)
    server.shutdown()  # returns: the sleeping handler is woken (the fixture's second shutdown is harmless)
