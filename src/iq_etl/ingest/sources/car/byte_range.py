"""Byte ranges of a local file or an HTTP(S) object, read as a stream.

HTTP reads use Range requests with a large read size, and survive dropped connections: the stream
reconnects and resumes at the byte it had reached, with a bounded number of consecutive retries
and exponential backoff. Local reads are plain buffered file reads. Neither ever loads a whole
file: callers pull `read(n)` chunks.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import requests
import urllib3

from iq_etl.errors import SourceError

log = logging.getLogger(__name__)

READ_SIZE = 8 << 20  # 8 MiB per read: few syscalls and few Python-level iterations per file
DEFAULT_RETRIES = 6
DEFAULT_BACKOFF = 0.5  # seconds, doubled per consecutive failure
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class RangeStream(Protocol):
    offset: int  # file offset of the next byte read() returns

    def read(self, n: int = READ_SIZE) -> bytes: ...  # b"" at the end of the range or file

    def readinto(self, view: memoryview) -> int: ...  # 0 at the end of the range or file

    def close(self) -> None: ...


class ByteSource(Protocol):
    name: str

    def exists(self) -> bool: ...

    def size(self) -> int: ...

    def read_range(self, start: int, end: int) -> bytes: ...  # [start, end), shorter at end of file

    def open(self, start: int = 0, end: int | None = None) -> RangeStream: ...


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def open_byte_source(location: str | os.PathLike, **http_options) -> ByteSource:
    """A ByteSource for a path, file:// URL or http(s) URL (http_options go to HttpSource)."""
    text = str(location)
    if is_url(text):
        return HttpSource(text, **http_options)
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    return LocalSource(text)


def sibling(location: str, name: str) -> str:
    """The location of file `name` in the same folder (or URL base) as `location`."""
    if is_url(location):
        base = location.split("?", 1)[0]
        return base.rsplit("/", 1)[0] + "/" + name
    return str(Path(location).with_name(name))


# --- local files ------------------------------------------------------------------------------------

class _LocalStream:
    def __init__(self, path: Path, start: int, end: int | None):
        self._f = open(path, "rb", buffering=0)
        self._f.seek(start)
        self.offset = start
        self._end = end

    def read(self, n: int = READ_SIZE) -> bytes:
        if self._end is not None:
            n = min(n, self._end - self.offset)
            if n <= 0:
                return b""
        data = self._f.read(n)
        self.offset += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        if self._end is not None:
            room = self._end - self.offset
            if room <= 0:
                return 0
            if len(view) > room:
                view = view[:room]
        got = self._f.readinto(view) or 0
        self.offset += got
        return got

    def close(self) -> None:
        self._f.close()


class LocalSource:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            raise SourceError(f"{self.name}: file not found") from None

    def read_range(self, start: int, end: int) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except FileNotFoundError:
            raise SourceError(f"{self.name}: file not found") from None

    def open(self, start: int = 0, end: int | None = None) -> RangeStream:
        try:
            return _LocalStream(self.path, start, end)
        except FileNotFoundError:
            raise SourceError(f"{self.name}: file not found") from None
        except IsADirectoryError:
            raise SourceError(f"{self.name}: is a folder, not a file") from None


# --- HTTP -------------------------------------------------------------------------------------------

class _Retrier:
    """Bounded consecutive failures with exponential backoff; progress resets the count."""

    def __init__(self, name: str, retries: int, backoff: float):
        self.name = name
        self.retries = retries
        self.backoff = backoff
        self.failures = 0

    def failed(self, what: str, retry_after: float | None = None) -> None:
        self.failures += 1
        if self.failures > self.retries:
            raise SourceError(f"{self.name}: {what} (gave up after {self.retries} retries)")
        delay = retry_after if retry_after is not None else self.backoff * 2 ** (self.failures - 1)
        log.warning("%s: %s; retry %d/%d in %.2fs", self.name, what, self.failures, self.retries, delay)
        time.sleep(delay)

    def progressed(self) -> None:
        self.failures = 0


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value and value.strip().isdigit():
        return min(float(value), 60.0)
    return None


class _HttpStream:
    def __init__(self, src: "HttpSource", start: int, end: int | None):
        self._src = src
        self.offset = start
        self._end = end  # exclusive; None = to the end of the object
        self._resp: requests.Response | None = None
        self._retry = _Retrier(src.name, src.retries, src.backoff)
        self._object_size: int | None = None

    def _connect(self) -> bool:
        """Open a response at self.offset. False when the range is already exhausted."""
        while True:
            last = "" if self._end is None else str(self._end - 1)
            try:
                resp = self._src.session.get(self._src.url, headers={"Range": f"bytes={self.offset}-{last}"},
                                             stream=True, timeout=self._src.timeout)
            except requests.RequestException as exc:
                self._retry.failed(f"connecting at byte {self.offset}: {type(exc).__name__}")
                continue
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != self.offset:
                    resp.close()
                    raise SourceError(f"{self._src.name}: server answered range at byte {self.offset} with "
                                      f"Content-Range {resp.headers.get('Content-Range')!r}")
                if m.group(3) != "*":
                    self._object_size = int(m.group(3))
                self._resp = resp
                return True
            if resp.status_code == 200:
                if self.offset != 0:
                    resp.close()
                    raise SourceError(f"{self._src.name}: server ignores Range requests (asked for byte "
                                      f"{self.offset}, got the whole object)")
                self._resp = resp
                return True
            if resp.status_code == 416:
                resp.close()
                return False  # offset is at or past the end of the object
            if resp.status_code == 404:
                resp.close()
                raise SourceError(f"{self._src.name}: not found (HTTP 404)")
            if resp.status_code in _RETRY_STATUS:
                resp.close()
                self._retry.failed(f"HTTP {resp.status_code} at byte {self.offset}", _retry_after(resp))
                continue
            resp.close()
            raise SourceError(f"{self._src.name}: HTTP {resp.status_code} at byte {self.offset}")

    def read(self, n: int = READ_SIZE) -> bytes:
        if self._end is not None:
            n = min(n, self._end - self.offset)
        if n <= 0:
            return b""
        while True:
            if self._resp is None and not self._connect():
                return b""
            try:
                data = self._resp.raw.read(n)
            except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                    OSError) as exc:
                self._drop()
                self._retry.failed(f"connection dropped at byte {self.offset}: {type(exc).__name__}")
                continue
            if data:
                self.offset += len(data)
                self._retry.progressed()
                return data
            # Clean end of this response: either the range is done, or the server stopped short.
            self._drop()
            if self._end is not None and self.offset < self._end and \
                    (self._object_size is None or self.offset < self._object_size):
                self._retry.failed(f"response ended early at byte {self.offset}")
                continue
            if self._end is None and self._object_size is not None and self.offset < self._object_size:
                self._retry.failed(f"response ended early at byte {self.offset}")
                continue
            return b""

    def readinto(self, view: memoryview) -> int:
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def close(self) -> None:
        self._drop()


class HttpSource:
    def __init__(self, url: str, *, session: requests.Session | None = None, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, timeout: tuple[float, float] = (10.0, 120.0)):
        self.url = url
        self.name = url.split("?", 1)[0]  # never log query strings (may hold tokens)
        self.session = session or requests.Session()
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def _head(self) -> requests.Response | None:
        retry = _Retrier(self.name, self.retries, self.backoff)
        while True:
            try:
                resp = self.session.head(self.url, timeout=self.timeout, allow_redirects=True)
            except requests.RequestException as exc:
                retry.failed(f"HEAD: {type(exc).__name__}")
                continue
            if resp.status_code in _RETRY_STATUS:
                retry.failed(f"HEAD: HTTP {resp.status_code}", _retry_after(resp))
                continue
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise SourceError(f"{self.name}: HEAD answered HTTP {resp.status_code}")
            return resp

    def exists(self) -> bool:
        return self._head() is not None

    def size(self) -> int:
        resp = self._head()
        if resp is None:
            raise SourceError(f"{self.name}: not found (HTTP 404)")
        length = resp.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise SourceError(f"{self.name}: server did not give a Content-Length")
        return int(length)

    def read_range(self, start: int, end: int) -> bytes:
        stream = self.open(start, end)
        try:
            parts = []
            while chunk := stream.read(READ_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            stream.close()

    def open(self, start: int = 0, end: int | None = None) -> RangeStream:
        return _HttpStream(self, start, end)
