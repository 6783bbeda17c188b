"""CAR reads against real loopback servers that misbehave: ignore Range, send more than asked,
trickle or stall, refuse connections, answer with errors, or serve truncated and corrupted files.
Every case ends, quickly, in the right bytes or a SourceError naming the URL (without credentials),
the position and the cause."""
from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iq_etl.devchain.servers.files import Faults, serve_files
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.byte_range import HttpSource, preflight
from iq_etl.ingest.sources.car.source import CarSource
from tests.support.car_sections import sections as car_sections
from tests.support.net import free_port
from tests.support.synthetic_car import build_synthetic_car

FAST = {"backoff": 0.01, "retries": 2}
NAME = "epoch-0-1.car"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "7").mkdir()
    data = bytes(range(256)) * 400  # 102,400 bytes
    (tmp_path / "7" / "epoch-7.car").write_bytes(data)
    return tmp_path, data


def _serve(root, **faults):
    return serve_files(root, faults=Faults(**faults))


def _finishes(fn, within: float):
    """Run fn in a thread; (result or exception, seconds). Fails the test if it is still running
    after `within` seconds (the thread is left to end when the server shuts down)."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["value"] = exc

    t0 = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"still reading after {within} s"
    return out["value"], time.monotonic() - t0


# --- item 2: bounded in bytes -----------------------------------------------------------------------

def test_server_ignoring_range_at_offset_zero_yields_only_what_was_asked(files):
    root, data = files
    srv = _serve(root, ignore_range=True)
    try:
        src = HttpSource(f"{srv.url}/7/epoch-7.car", **FAST)
        assert src.read_range(0, 100) == data[:100]
        stream = src.open(0, 3000)
        got = bytearray()
        while chunk := stream.read(1000):
            got += chunk
        stream.close()
        assert bytes(got) == data[:3000]
        assert all(r == "bytes=0-2999" for m, _, r in srv.state.requests if m == "GET" and r != "bytes=0-99")
    finally:
        srv.shutdown()


def test_server_ignoring_range_past_offset_zero_is_an_error(files):
    root, _ = files
    srv = _serve(root, ignore_range=True)
    try:
        with pytest.raises(SourceError, match=r"server ignores Range requests \(asked for byte 1000, got the whole"):
            HttpSource(f"{srv.url}/7/epoch-7.car", **FAST).read_range(1000, 1100)
    finally:
        srv.shutdown()


def test_bytes_past_the_range_are_never_returned(files):
    root, data = files
    srv = _serve(root, overrun_bytes=5000)
    try:
        src = HttpSource(f"{srv.url}/7/epoch-7.car", **FAST)
        assert src.read_range(100, 200) == data[100:200]
        stream = src.open(50_000)  # to the end of the object: the server adds 5,000 bytes of garbage
        got = bytearray()
        while chunk := stream.read(7000):
            got += chunk
        assert bytes(got) == data[50_000:]
        view = memoryview(bytearray(len(data)))
        stream = src.open(90_000)
        n = 0
        while got_n := stream.readinto(view[n:]):
            n += got_n
        assert n == len(data) - 90_000 and bytes(view[:n]) == data[90_000:]
    finally:
        srv.shutdown()


def test_car_read_over_an_overrunning_server_matches_local(fixtures_dir, tmp_path):
    shutil.copy(fixtures_dir / NAME, tmp_path / NAME)
    local = [(b.slot, b.transactions_seen) for b in CarSource(str(tmp_path / NAME)).iter_blocks(0, 9)]
    srv = _serve(tmp_path, overrun_bytes=4096)
    try:
        remote = [(b.slot, b.transactions_seen)
                  for b in CarSource(f"{srv.url}/{NAME}", http_options=FAST).iter_blocks(0, 9)]
    finally:
        srv.shutdown()
    assert remote == local


# --- item 2: bounded in time ------------------------------------------------------------------------

def test_trickling_server_ends_at_the_deadline_with_a_clear_error(files):
    root, _ = files
    srv = _serve(root, trickle_bytes=10, trickle_interval=0.05)  # 200 bytes/s, forever
    host, port = srv.server_address[:2]
    url = f"http://reader:s3cret-pass@{host}:{port}/7/epoch-7.car?token=t0psecret"
    try:
        src = HttpSource(url, retries=2, backoff=0.01, timeout=(2.0, 30.0), deadline=0.5)
        exc, took = _finishes(lambda: src.read_range(1000, 11_000), within=20)
    finally:
        srv.shutdown()
    assert isinstance(exc, SourceError), exc
    msg = str(exc)
    assert msg.startswith(f"http://{host}:{port}/7/epoch-7.car: read deadline of 0.5 s passed at byte "), msg
    assert msg.endswith("(gave up after 2 retries)"), msg
    assert "s3cret" not in msg and "t0psecret" not in msg and "reader" not in msg
    at = int(re.search(r"at byte (\d+)", msg).group(1))
    assert 1000 < at < 11_000  # some bytes arrived, then the deadline, three times over
    assert took < 5


def test_stalled_server_ends_at_the_deadline_not_the_socket_timeout(files):
    root, _ = files
    srv = _serve(root, trickle_bytes=10, trickle_interval=3600)  # headers, then nothing
    try:
        src = HttpSource(f"{srv.url}/7/epoch-7.car", retries=1, backoff=0.01, timeout=(2.0, 60.0), deadline=0.5)
        exc, took = _finishes(lambda: src.read_range(0, 100), within=20)
    finally:
        srv.shutdown()
    assert isinstance(exc, SourceError), exc
    assert "read deadline of 0.5 s passed at byte 0 (0 of 100 bytes arrived)" in str(exc)
    assert took < 5


def test_reconnect_loop_of_tiny_responses_ends_at_the_deadline(files):
    """Ten bytes per connection, then a drop, forever: each reconnect is progress, so the drops never use
    up the retries; only the wall-clock deadline of the read ends it.

    Which wait the deadline cuts is not the test's to choose: the read of a body, or (on a loaded machine)
    the wait for a reconnect's answer, whose timeout is narrowed to what is left of the same deadline
    (the message then says "timed out"). What is deterministic is asserted: the server answered every
    GET with its ten bytes and a drop, the read went through several of them, and it did not end on the
    drops ("response ended early" / "connection dropped")."""
    root, _ = files
    srv = _serve(root, drop_after_bytes=10, drop_every=1)
    try:
        # 2 s a read (not 0.3 s): long enough for several reconnects on a loaded machine, far too
        # short for the 6,000 ten-byte answers the range needs (~70 a second here).
        src = HttpSource(f"{srv.url}/7/epoch-7.car", retries=1, backoff=0.01, deadline=2.0)
        exc, took = _finishes(lambda: src.read_range(0, 60_000), within=20)
        gets, drops = srv.state.gets, srv.state.drops
    finally:
        srv.shutdown()
    assert isinstance(exc, SourceError), exc
    msg = str(exc)
    assert msg.endswith("(gave up after 1 retries)"), msg
    assert re.search(r"read deadline of 2 s passed at byte \d+ \(\d+ of \d+ bytes arrived\)", msg) or \
        re.search(r"connecting at byte \d+: timed out", msg), msg
    assert "ended early" not in msg and "connection dropped" not in msg, msg
    assert gets >= 2 and drops >= gets - 1  # a loop of reconnects, each cut after its ten bytes
    at = int(re.search(r"at byte (\d+)", msg).group(1))
    assert 10 <= at <= 10 * gets, (msg, gets)  # ten bytes an answer, each reconnect resumed where it was


def test_slow_but_steady_server_is_read_in_full(files):
    root, data = files
    srv = _serve(root, trickle_bytes=16_384, trickle_interval=0.01)
    try:
        src = HttpSource(f"{srv.url}/7/epoch-7.car", retries=1, backoff=0.01, deadline=5)
        assert src.read_range(0, len(data)) == data
    finally:
        srv.shutdown()


# --- item 7: preflight and named causes -------------------------------------------------------------

class _Silent:
    """Accepts TCP connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _status_server(status: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_preflight_passes_for_a_served_archive(files):
    root, _ = files
    srv = _serve(root)
    try:
        preflight(f"{srv.url}/7/epoch-7.car")
        CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", http_options=FAST).preflight(7 * 432_000 + 5)
        heads = [m for m, _, _ in srv.state.requests]
        assert heads == ["HEAD", "HEAD"]
    finally:
        srv.shutdown()
    preflight(str(root / "7" / "epoch-7.car"))
    preflight((root / "7" / "epoch-7.car").as_uri())


def test_preflight_connection_refused_is_named_at_once():
    url = f"http://127.0.0.1:{free_port()}/7/epoch-7.car"
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        preflight(url, retries=6, backoff=10)  # the normal retry options are not used
    assert str(info.value) == f"{url}: cannot reach the CAR archive: connection refused"
    assert time.monotonic() - t0 < 5  # one retry would have waited 10 s


def test_preflight_name_not_resolved():
    # The suite's loopback guard (tests/support/loopback_guard.py) answers the lookup as a resolver
    # does for an unknown name, without a query leaving the machine.
    host = "no-such-car-host.invalid"
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(host, 80)
    with pytest.raises(SourceError) as info:
        preflight(f"http://{host}/7/epoch-7.car")
    assert str(info.value) == f"http://{host}/7/epoch-7.car: cannot reach the CAR archive: name not resolved (DNS)"


def test_preflight_silent_server_times_out():
    silent = _Silent()
    try:
        url = f"http://127.0.0.1:{silent.port}/7/epoch-7.car"
        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            preflight(url, answer_timeout=0.5)
        assert str(info.value) == f"{url}: cannot reach the CAR archive: timed out (no answer within 0.5 s)"
        assert time.monotonic() - t0 < 3
    finally:
        silent.close()


def test_preflight_missing_file_is_404(files):
    root, _ = files
    srv = _serve(root)
    try:
        url = f"{srv.url}/8/epoch-8.car"
        with pytest.raises(SourceError) as info:
            preflight(url)
        assert str(info.value) == f"{url}: CAR archive not found: HTTP 404 (no such file)"
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car")
        with pytest.raises(SourceError, match=r"/8/epoch-8\.car: CAR archive not found: HTTP 404"):
            src.preflight(8 * 432_000)
        with pytest.raises(ValueError):
            src.preflight()
    finally:
        srv.shutdown()


@pytest.mark.parametrize("status,words", [(503, "CAR archive not readable: HTTP 503 (server error)"),
                                          (403, "CAR archive not readable: HTTP 403 (access denied)")])
def test_preflight_error_status_is_named_without_retrying(status, words):
    srv = _status_server(status)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/7/epoch-7.car"
        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            preflight(url, retries=6, backoff=10)
        assert str(info.value) == f"{url}: {words}"
        assert time.monotonic() - t0 < 5  # one retry would have waited 10 s
    finally:
        srv.shutdown()
        srv.server_close()


def test_preflight_local_paths(tmp_path):
    with pytest.raises(SourceError) as info:
        CarSource(str(tmp_path / "{epoch}" / "epoch-{epoch}.car")).preflight(3 * 432_000)
    assert str(info.value) == f"{tmp_path / '3' / 'epoch-3.car'}: CAR archive not found: no such file"
    with pytest.raises(SourceError, match="a folder, not a file"):
        preflight(str(tmp_path))
    (tmp_path / "empty.car").write_bytes(b"")
    with pytest.raises(SourceError, match=r"CAR archive is empty \(0 bytes\)"):
        CarSource(str(tmp_path / "empty.car")).preflight(0)


def test_refused_connection_is_named_in_the_retry_path():
    url = f"http://127.0.0.1:{free_port()}/7/epoch-7.car"
    src = HttpSource(url, retries=1, backoff=0.01)
    with pytest.raises(SourceError) as info:
        src.read_range(0, 10)
    assert str(info.value) == f"{url}: connecting at byte 0: connection refused (gave up after 1 retries)"
    with pytest.raises(SourceError) as info:
        src.exists()
    assert str(info.value) == f"{url}: HEAD: connection refused (gave up after 1 retries)"


def test_credentials_never_reach_error_messages(files):
    root, _ = files
    srv = _serve(root)
    host, port = srv.server_address[:2]
    try:
        with pytest.raises(SourceError) as info:
            HttpSource(f"http://me:hunter2@{host}:{port}/7/nope.car?sig=abc123", **FAST).read_range(0, 10)
    finally:
        srv.shutdown()
    assert str(info.value) == f"http://{host}:{port}/7/nope.car: not found (HTTP 404)"


# --- truncated and bit-flipped archives over HTTP ---------------------------------------------------



def _damaged(sample: bytes, how: str) -> bytes:
    sections = car_sections(sample)
    if how == "cut-at-boundary":
        return sample[:sections[len(sections) // 2][0]]
    if how.startswith("cut-"):
        return sample[:int(how[4:])]
    data = bytearray(sample)
    if how == "bad-cid":
        data[sections[5][1]] = 0x07
    elif how == "flipped-tx":
        tx = next(s for s in sections if sample[s[2] + 1] == 0)
        data[tx[3] - 100] ^= 0x55
    elif how == "huge-length":
        data[sections[10][0]:sections[10][0] + 2] = b"\xff\xff"
    return bytes(data)


@pytest.mark.parametrize("how", ["cut-30", "cut-5000", "cut-50000", "cut-at-boundary", "bad-cid", "flipped-tx",
                                 "huge-length"])
def test_damaged_archive_over_http_fails_like_the_local_file(fixtures_dir, tmp_path, how):
    data = _damaged((fixtures_dir / NAME).read_bytes(), how)
    (tmp_path / NAME).write_bytes(data)
    with pytest.raises(SourceError) as local:
        list(CarSource(str(tmp_path / NAME)).iter_blocks(0, 9))
    srv = _serve(tmp_path)
    try:
        url = f"{srv.url}/{NAME}"
        with pytest.raises(SourceError) as remote:
            list(CarSource(url, http_options=FAST).iter_blocks(0, 9))
    finally:
        srv.shutdown()
    assert str(remote.value) == str(local.value).replace(str(tmp_path / NAME), url)
    assert "byte offset" in str(remote.value)


def test_synthetic_epoch_over_a_trickling_server_fails_with_the_url_and_offset(tmp_path):
    chain = build_synthetic_car(tmp_path, 200, epoch=6, tx_per_slot=5, wanted_every=20)
    srv = _serve(tmp_path, trickle_bytes=64, trickle_interval=0.05)
    try:
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", use_index=False,
                        http_options={"retries": 1, "backoff": 0.01, "deadline": 0.4})
        exc, took = _finishes(lambda: list(src.iter_blocks(chain.first_slot, chain.last_slot)), within=20)
    finally:
        srv.shutdown()
    assert isinstance(exc, SourceError), exc
    assert str(exc).startswith(f"{srv.url}/6/epoch-6.car: read deadline of 0.4 s passed at byte ")
    assert took < 5


# --- issue 22 item 6: patience bounds the whole streak, not each read --------------------------------

def test_a_trickling_host_is_given_up_at_the_patience_not_after_every_retry(files):
    """Six retries of a 0.5 s deadline would cost ~3.5 s; a patience of 1.2 s ends it after about two."""
    root, _ = files
    srv = _serve(root, trickle_bytes=10, trickle_interval=0.05)  # 200 bytes/s, forever
    host, port = srv.server_address[:2]
    try:
        src = HttpSource(f"http://{host}:{port}/7/epoch-7.car", retries=6, backoff=0.01, timeout=(2.0, 30.0),
                         deadline=0.5, patience=1.2)
        exc, _took = _finishes(lambda: src.read_range(1000, 60_000), within=20)
    finally:
        srv.shutdown()
    assert isinstance(exc, SourceError), exc
    msg = str(exc)
    assert "without progress: IQ_CAR_PATIENCE=0.02 min)" in msg, msg
    assert "gave up after 6 retries" not in msg


def test_car_patience_is_a_setting(tmp_path):
    from iq_etl.errors import SettingsError
    from iq_etl.settings import load_settings

    assert load_settings({"IQ_CAR_PATIENCE": "5"}, dotenv=tmp_path / "x").car_patience_s == 300.0
    assert load_settings({}, dotenv=tmp_path / "x").car_patience_s == 180.0
    with pytest.raises(SettingsError, match="IQ_CAR_PATIENCE"):
        load_settings({"IQ_CAR_PATIENCE": "nan"}, dotenv=tmp_path / "x")


# --- issue 22 item 9: redirects to another host are refused, same-host ones followed ------------------

def _redirecting_server(location_for):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _go(self):
            self.send_response(302)
            self.send_header("Location", location_for(self.path))
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _go

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_redirect_to_another_host_is_refused(files):
    root, data = files
    real = _serve(root)
    host, port = real.server_address[:2]
    elsewhere = _redirecting_server(lambda path: f"http://{host}:{port}{path}")   # another origin (port)
    try:
        url = f"http://127.0.0.1:{elsewhere.server_address[1]}/7/epoch-7.car"
        with pytest.raises(SourceError, match=r"redirects to another host \(http://127\.0\.0\.1:\d+/7/epoch-7\.car\); "
                                              r"refused: set IQ_CAR_URL"):
            HttpSource(url, **FAST).read_range(0, 100)
        with pytest.raises(SourceError, match="redirects to another host"):
            preflight(url)
    finally:
        elsewhere.shutdown()
        real.shutdown()
