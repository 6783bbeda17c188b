"""Issue 21 item 5: a dead RPC endpoint is named at once by every RPC path, discovery included
(the signature tail and --session-pda discovery took about a minute of retries to fail)."""
from __future__ import annotations

import socket

import pytest

from iq_etl.errors import SourceError
from iq_etl.ingest.request import IngestRequest
from iq_etl.ingest.run import run_ingest
from iq_etl.warehouse import client as wh
from tests.support.net import free_port


@pytest.mark.parametrize("request_kwargs", [
    {"source": "rpc-signatures"},                                                   # the tail
    {"source": "rpc-signatures", "session_pdas": ["11111111111111111111111111111111"]},
    {"source": "car", "session_pdas": ["11111111111111111111111111111111"]},       # window discovery over RPC
])
def test_discovery_fails_at_once_on_a_refused_endpoint(settings, request_kwargs):
    url = f"http://127.0.0.1:{free_port()}"
    wh.close_client()
    try:
        with pytest.raises(SourceError) as caught:
            run_ingest(settings, IngestRequest(rpc_url=url, **request_kwargs))
    finally:
        wh.close_client()
    text = str(caught.value)
    assert "connection refused" in text and "preflight" in text and "\n" not in text


def test_reconcile_asks_a_dead_archive_host_once(capfd, caplog):
    """A CAR host that cannot answer is asked once, not six times per neighbouring epoch."""
    import threading

    from iq_etl.orchestration.flows import _car_epoch_available

    accepted = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()   # drops every request: neither an answer nor "not found"

    threading.Thread(target=serve, daemon=True).start()
    try:
        available = _car_epoch_available(f"http://127.0.0.1:{server.getsockname()[1]}/{{epoch}}/epoch-{{epoch}}.car")
        assert [available(e) for e in (900, 901, 902, 903)] == [False] * 4
    finally:
        server.close()
    assert len(accepted) <= 2   # one preflight (a HEAD, perhaps retried once by the HTTP stack)
    # said once: on the terminal or through logging, depending on how Prefect's handlers are set up
    said = max(capfd.readouterr().err.count("cannot be reached"),
               sum("cannot be reached" in r.getMessage() for r in caplog.records))
    assert said == 1
