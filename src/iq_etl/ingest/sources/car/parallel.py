"""Parallel ranged reads of one HTTP object, consumed in order (issue 24).

The byte span a stream covers ([start, end): from the slot-ranges index, or to the object's size
from one cached HEAD) is cut into pieces of `piece` bytes. K worker threads (K = HttpSource.connections,
IQ_CAR_CONNECTIONS) each take the next piece, fetch it over their own keep-alive HTTP/1.1 connection
with the bounded-read machinery of byte_range._HttpStream (Range GET, Content-Range checks, the read
deadline, retries with backoff, the patience, the process-wide 429/503 pause), and write it into a
piece buffer. The walker reads the pieces strictly in order, each as soon as its first bytes are
there; a piece is handed to a worker only while it is less than K pieces ahead of the one the walker
reads, so:

- memory: at most K piece buffers of `piece` bytes (default piece: the span cut into whole rounds of K
  pieces, between 1 and 16 MiB, so K x 16 MiB at most: 256 MiB for K = 16) per stream, beside the
  walker's own buffer;
- bytes read: at most K pieces past the last byte the walker consumed (an unindexed walk that stops
  early, or a read abandoned on an error, reads ahead no further than that).

Connections ("lanes") belong to the process, not to a stream: each lane keeps one HTTP/1.1
connection alive across sub-ranges and epochs, and its transfer rate is measured across them.
A monitor thread replaces a lane's connection (the read resumes on a fresh connection at the byte it
reached) when it has been far below its peers' rate (below `slow_ratio` of their median) for
`slow` seconds of transfer; a connection that delivers no byte for `stall` seconds is replaced by its
own socket timeout. Truncation is never success: a piece that ends early ends the stream there, and
the walker's checks (the index's last slot, a slot without its Block node, the root node) report it.
"""
from __future__ import annotations

import logging
import mmap
import os
import statistics
import threading
import time
from collections import deque

import requests

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.http_stream import (
    MAX_CONNECTIONS,
    READ_SIZE,
    STATS,
    _HttpStream,
)
from iq_etl.ingest.sources.car.http_stream import HttpObject as HttpSource  # byte_range.HttpSource, seen as a Protocol

log = logging.getLogger(__name__)

PIECE_MAX = 16 << 20
PIECE_MIN = 1 << 20
_ALIGN = 64 << 10


def piece_size(src: HttpSource, span: int, connections: int) -> int:
    """Bytes per piece (a fixed `src.piece` wins): the span cut into whole rounds of K pieces of at most
    PIECE_MAX (16 MiB), at least PIECE_MIN. Each piece costs one request and its time to the first byte
    (50 ms on the benchmark host, a round trip or more on a real CDN) during which its connection carries
    nothing: 16 MiB at 25 MB/s is 0.67 s of transfer against that 50 ms (8 MiB lost 13 %). Whole rounds:
    the last round of a stream keeps every connection busy instead of a few (a span of 10.5 rounds took
    11 rounds' time)."""
    if src.piece:
        return max(int(src.piece), 1)
    k = max(connections, 1)
    rounds = max(1, -(-span // (k * PIECE_MAX)))
    p = -(-span // (rounds * k))
    p = -(-p // _ALIGN) * _ALIGN
    return max(PIECE_MIN, min(PIECE_MAX, p))


# --- lanes: the process's connections ------------------------------------------------------------------

class Lane:
    """One keep-alive HTTP/1.1 connection of the process (its own one-connection pool) and its
    transfer rate, measured over seconds of transfer (time spent waiting for the walker not counted)."""

    def __init__(self, number: int):
        self.number = number
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=1, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.in_use = False
        self.owner: object = None
        self.http: _HttpStream | None = None
        self.bytes = 0
        self.busy = 0.0
        self.busy_since: float | None = None
        self.samples: deque[tuple[float, int]] = deque()  # (seconds of transfer, bytes) at each sweep
        self.slow = 30.0
        self.slow_ratio = 0.25

    def arrived(self, n: int) -> None:
        self.bytes += n

    def begin(self, http: _HttpStream) -> None:
        self.http = http
        self.busy_since = time.monotonic()
        STATS.connection(+1)

    def end(self) -> None:
        if self.busy_since is not None:
            self.busy += time.monotonic() - self.busy_since
            self.busy_since = None
        self.http = None
        STATS.connection(-1)

    def busy_now(self) -> float:
        since = self.busy_since
        return self.busy + (time.monotonic() - since if since is not None else 0.0)

    def rate(self, window: float, minimum: float) -> float | None:
        """Bytes/s over the last `window` seconds of transfer (or all there is, when at least
        `minimum`); None with less history."""
        if not self.samples:
            return None
        b_now, n_now = self.samples[-1]
        chosen = None
        for b, n in self.samples:
            if b_now - b >= window:
                chosen = (b, n)
            else:
                break
        if chosen is None:
            b, n = self.samples[0]
            if b_now - b < minimum:
                return None
            chosen = (b, n)
        b, n = chosen
        return (n_now - n) / (b_now - b) if b_now > b else None


class _Pool:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.lanes: list[Lane] = []
        self.monitor: threading.Thread | None = None
        self.sweep_s = 1.0

    def acquire(self, k: int, src: HttpSource) -> list[Lane]:
        with self.lock:
            free = [lane for lane in self.lanes if not lane.in_use]
            while len(free) < k:
                lane = Lane(len(self.lanes))
                self.lanes.append(lane)
                free.append(lane)
            got = free[:k]
            for lane in got:
                lane.in_use = True
                lane.slow = src.slow
                lane.slow_ratio = src.slow_ratio
            self.sweep_s = min(1.0, max(src.slow / 10.0, 0.05))
            if self.monitor is None or not self.monitor.is_alive():
                self.monitor = threading.Thread(target=self._watch, name="car-lanes-monitor", daemon=True)
                self.monitor.start()
            return got

    def release(self, lane: Lane) -> None:
        with self.lock:
            lane.in_use = False
            lane.owner = None

    def _watch(self) -> None:
        while True:
            time.sleep(self.sweep_s)
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the monitor must outlive any one bad sweep
                log.debug("lane monitor sweep failed", exc_info=True)

    def sweep(self) -> None:
        with self.lock:
            lanes = list(self.lanes)
        for lane in lanes:
            b = lane.busy_now()
            if lane.samples and lane.samples[-1][0] == b:
                continue  # idle since the last sweep: nothing new to learn
            lane.samples.append((b, lane.bytes))
            while len(lane.samples) > 2 and b - lane.samples[1][0] >= 2 * lane.slow:
                lane.samples.popleft()
        busy = [lane for lane in lanes if lane.http is not None]
        rates = {lane.number: lane.rate(lane.slow, lane.slow / 4) for lane in lanes}
        for lane in busy:
            mine = lane.rate(lane.slow, lane.slow)  # judged only over a full `slow` window
            if mine is None:
                continue
            peers = [r for n, r in rates.items() if n != lane.number and r is not None]
            if not peers:
                continue
            median = statistics.median(peers)
            if mine < lane.slow_ratio * median:
                http = lane.http
                if http is None:
                    continue
                lane.samples.clear()
                STATS.add("replaced_slow")
                http.replace(f"{mine / 1e6:.2f} MB/s over {lane.slow:g} s of transfer, "
                             f"peers' median {median / 1e6:.2f} MB/s")


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = _Pool()
        return _POOL


def lane_seconds() -> float:
    """Seconds this process's connections (lanes) have spent on requests so far, summed: its growth over
    an interval divided by the interval is the mean number of connections in use then (the ingest
    heartbeat's figure; a count taken at one instant often falls between two pieces)."""
    p = _POOL
    if p is None or p.pid != os.getpid():
        return 0.0
    with p.lock:
        lanes = list(p.lanes)
    return sum(lane.busy_now() for lane in lanes)


# --- the stream ----------------------------------------------------------------------------------------

def _buffer(n: int) -> mmap.mmap:
    """A piece buffer: anonymous memory, zeroed by the kernel page by page as the socket fills it. A
    bytearray of 16 MiB is zeroed at once while its thread holds the GIL (~5 ms each, K of them at
    the start of every stream, delaying the first requests one after the other)."""
    return mmap.mmap(-1, n)


class _Piece:
    __slots__ = ("a", "b", "buf", "filled", "done", "error")

    def __init__(self, a: int, b: int):
        self.a = a
        self.b = b
        self.buf: mmap.mmap | None = None
        self.filled = 0
        self.done = False
        self.error: BaseException | None = None


class ParallelStream:
    """Bytes [start, end) of an HTTP object, fetched by K connections in pieces and read in order
    (a RangeStream: `offset`, `read`, `readinto`, `close`)."""

    def __init__(self, src: HttpSource, start: int, end: int, connections: int, piece: int):
        self._src = src
        self.offset = start
        self._start = start
        self._end = end
        self._piece = piece
        self._count = -(-(end - start) // piece)
        self._k = max(1, min(connections, self._count))
        # One lock, two conditions: the walker waits for bytes of the piece it reads (`_data`, told only
        # by that piece's worker), the workers wait for room in the window (`_room`, told when the walker
        # moves to the next piece). One condition told everyone of every chunk: with K = 16, each socket
        # read woke 16 threads to fight for the GIL for nothing.
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._pieces: dict[int, _Piece] = {}
        self._head = 0            # the piece the walker reads
        self._next = 0            # the next piece a worker takes
        self._free: list[mmap.mmap] = []
        self._closed = False
        self._eof_at: int | None = None  # a piece ended early: the object ends here
        self._pool = pool()
        self._lanes = self._pool.acquire(self._k, src)
        for lane in self._lanes:
            lane.owner = self
        self._threads = [threading.Thread(target=self._work, args=(lane,), name=f"car-piece-{lane.number}",
                                          daemon=True) for lane in self._lanes]
        for t in self._threads:
            t.start()

    @property
    def connections(self) -> int:
        return self._k

    # -- workers
    def _take(self) -> tuple[int, _Piece] | None:
        with self._lock:
            while not self._closed and self._next < self._count and self._next >= self._head + self._k:
                self._room.wait(1.0)
            if self._closed or self._next >= self._count or self._eof_at is not None:
                return None
            i = self._next
            self._next += 1
            if self._next >= self._count:
                self._room.notify_all()   # the last piece is out: the waiting workers end (their lanes freed)
            a = self._start + i * self._piece
            pc = _Piece(a, min(a + self._piece, self._end))
            pc.buf = self._free.pop() if self._free else None
            self._pieces[i] = pc
            return i, pc

    def _work(self, lane: Lane) -> None:
        src = self._src
        try:
            while True:
                taken = self._take()
                if taken is None:
                    return
                _, pc = taken
                if pc.buf is None:
                    pc.buf = _buffer(self._piece)
                size = pc.b - pc.a
                http = _HttpStream(src, pc.a, pc.b, session=lane.session)
                http._socket_timeout = min(src.stall, src.timeout[1])
                http.lane = lane
                lane.begin(http)
                try:
                    with memoryview(pc.buf) as view:
                        while pc.filled < size:
                            got = http.readinto(view[pc.filled:min(size, pc.filled + READ_SIZE)])
                            if not got:
                                break  # the object ends here (shorter than asked): the walker decides
                            with self._lock:
                                pc.filled += got
                                if self._pieces.get(self._head) is pc:
                                    self._data.notify()   # only the piece the walker reads wakes it
                except BaseException as exc:  # noqa: BLE001 - handed to the walker, in order
                    with self._lock:
                        pc.error = exc
                        pc.done = True
                        self._data.notify_all()
                    return
                finally:
                    lane.end()
                    http.close()
                with self._lock:
                    pc.done = True
                    if pc.filled < size and (self._eof_at is None or pc.a + pc.filled < self._eof_at):
                        self._eof_at = pc.a + pc.filled
                        self._room.notify_all()   # no piece past the end is handed out
                    self._data.notify_all()
        finally:
            self._pool.release(lane)

    # -- the walker's side
    def _want(self, n: int) -> int:
        return min(n, self._end - self.offset, READ_SIZE)

    def readinto(self, view: memoryview) -> int:
        n = self._want(len(view))
        if n <= 0:
            return 0
        with self._lock:
            while True:
                if self._closed:
                    raise SourceError(f"{self._src.name}: read after close")
                if self._eof_at is not None and self.offset >= self._eof_at:
                    return 0
                pc = self._pieces.get(self._head)
                if pc is not None:
                    pos = self.offset - pc.a
                    if pc.filled > pos:
                        break
                    if pc.error is not None:
                        raise pc.error
                    if pc.done:  # ended early, past what _eof_at says (cannot happen) or exactly at it
                        return 0
                self._data.wait(1.0)
        n = min(n, pc.filled - pos)
        assert pc.buf is not None
        view[:n] = memoryview(pc.buf)[pos:pos + n]
        self.offset += n
        STATS.add("delivered", n)
        if self.offset >= pc.b:
            with self._lock:
                del self._pieces[self._head]
                self._head += 1
                self._free.append(pc.buf)
                pc.buf = None
                self._room.notify()   # one more piece may be handed out: one worker takes it
        return n

    def read(self, n: int = READ_SIZE) -> bytes:
        n = self._want(n)
        if n <= 0:
            return b""
        buf = bytearray(n)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got]) if got < n else bytes(buf)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._data.notify_all()
            self._room.notify_all()
        for lane in self._lanes:
            http = lane.http
            if http is not None and lane.owner is self:
                http.cancel.set()
                http.replace("read closed")
        self._pieces.clear()
        self._free.clear()


def open_parallel(src: HttpSource, start: int, end: int | None) -> ParallelStream | None:
    """A parallel stream for [start, end), or None where one sequential stream does as well: one
    connection asked for, a span of one piece, or an object whose size one HEAD cannot tell."""
    k = min(src.connections, MAX_CONNECTIONS)
    if k <= 1:
        return None
    if end is None:
        try:
            end = src.size()  # one HEAD per URL and process
        except SourceError:
            return None  # 404, HEAD refused...: the sequential stream says what is wrong
    if end <= start:
        return None
    piece = piece_size(src, end - start, k)
    if end - start <= piece:
        return None
    return ParallelStream(src, start, end, k, piece)
