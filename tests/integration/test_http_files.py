"""The loopback Range file server (a real ThreadingHTTPServer) and the HTTP byte source on it."""
from __future__ import annotations

import pytest
import requests

from iq_etl.devchain.servers.files import Faults, serve_files
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.byte_range import HttpSource, open_byte_source

FAST = {"backoff": 0.01, "retries": 3}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "7").mkdir()
    data = bytes(range(256)) * 400  # 102,400 bytes
    (tmp_path / "7" / "epoch-7.car").write_bytes(data)
    return tmp_path, data


@pytest.fixture
def server(files):
    srv = serve_files(files[0])
    yield srv
    srv.shutdown()


def test_head_get_and_ranges(server, files):
    _, data = files
    url = f"{server.url}/7/epoch-7.car"
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Accept-Ranges"] == "bytes"
    assert requests.get(url, timeout=5).content == data
    r = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert requests.get(url, headers={"Range": "bytes=102000-"}, timeout=5).content == data[102000:]
    assert requests.get(url, headers={"Range": "bytes=-5"}, timeout=5).content == data[-5:]
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    assert requests.get(f"{server.url}/7/missing.car", timeout=5).status_code == 404
    assert requests.get(f"{server.url}/../etc/passwd", timeout=5).status_code == 404
    assert server.server_address[0] == "127.0.0.1"


def test_drop_fault_cuts_the_body_once(files):
    root, data = files
    srv = serve_files(root, faults={"drop_after_bytes": 1000})
    try:
        url = f"{srv.url}/7/epoch-7.car"
        with pytest.raises(requests.exceptions.RequestException):
            _ = requests.get(url, timeout=5).content
        assert requests.get(url, timeout=5).content == data  # only once
        assert srv.state.drops == 1
    finally:
        srv.shutdown()


def test_http_source_reads_and_sizes(server, files):
    _, data = files
    src = open_byte_source(f"{server.url}/7/epoch-7.car", **FAST)
    assert isinstance(src, HttpSource)
    assert src.exists() and src.size() == len(data)
    assert src.read_range(100, 200) == data[100:200]
    stream = src.open(50_000)
    got = bytearray()
    while chunk := stream.read(7_000):
        got += chunk
    assert bytes(got) == data[50_000:]
    missing = open_byte_source(f"{server.url}/7/nope.car", **FAST)
    assert not missing.exists()
    with pytest.raises(SourceError, match="404"):
        missing.open(0).read(10)


def test_stream_survives_repeated_drops(files):
    root, data = files
    srv = serve_files(root, faults=Faults(drop_after_bytes=4096, drop_every=1))  # every response is cut
    try:
        stream = HttpSource(f"{srv.url}/7/epoch-7.car", **FAST).open(1000, 90_000)
        got = bytearray()
        while chunk := stream.read(1 << 20):
            got += chunk
        assert bytes(got) == data[1000:90_000]
        ranges = [r for m, _, r in srv.state.requests if m == "GET"]
        assert ranges[0] == "bytes=1000-89999" and ranges[1] == "bytes=5096-89999"  # resumed where it stopped
    finally:
        srv.shutdown()


def test_retries_are_bounded(files):
    # 500s count against the retries; 429/503 (the host throttling) are bounded by the patience instead
    # (tests/integration/test_car_parallel.py)
    root, _ = files
    srv = serve_files(root, faults=Faults(fail_status=500, fail_times=100))
    try:
        with pytest.raises(SourceError, match="gave up after 3 retries"):
            HttpSource(f"{srv.url}/7/epoch-7.car", **FAST).open(0).read(10)
        assert srv.state.gets == 4
    finally:
        srv.shutdown()


def test_transient_503_is_retried(files):
    root, data = files
    srv = serve_files(root, faults=Faults(fail_status=503, fail_times=2))
    try:
        assert HttpSource(f"{srv.url}/7/epoch-7.car", **FAST).read_range(0, 10) == data[:10]
    finally:
        srv.shutdown()
