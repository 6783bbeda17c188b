"""A development ClickHouse server for tests: ClickHouse's HTTP interface over a real chDB engine on
loopback (`iq-etl devchain serve-clickhouse`). A TEST TOOL, never the product's warehouse: one chDB
folder, one query at a time, one user, plain HTTP on 127.0.0.1 only.

It lets the remote warehouse path (`IQ_CLICKHOUSE_DSN=http://user:pass@host:port/db`) run where no
ClickHouse server can be installed, through the same HTTP clients a real server sees: clickhouse-connect
(iq-etl's warehouse client) and dbt-clickhouse (its `http` driver is clickhouse-connect too).

What it speaks (the parts those clients use, checked against their code and what they send):
- `GET /ping`, `GET /replicas_status`, `GET /` without a query: `Ok.`;
- the query in the `query` URL parameter and/or the POST body (joined by a newline, as ClickHouse
  does), or a `multipart/form-data` body (`query` and `param_*` fields, what clickhouse-connect sends
  for long bound parameters); bound parameters `param_NAME`; `default_format`; `database` (and
  `X-ClickHouse-Database`); every other URL parameter is a setting, applied to that query only;
- INSERT with data: the statement (in the URL or at the start of the body) names the format; the data
  after it is loaded with `INSERT ... FROM INFILE ... FORMAT <it>`. Bodies may be compressed with
  `Content-Encoding: lz4|zstd|gzip|deflate|br` (clickhouse-connect sends Native inserts as LZ4 frames by
  default) or in ClickHouse's own block framing with `decompress=1`; chunked transfer encoding;
- sessions (`session_id`, `session_timeout`, `session_check`): one chDB connection per session, so
  `SET`, `USE` and temporary tables live in it; a session used by two requests at once is refused
  (Code 373), an unknown one with `session_check=1` too (Code 372); idle sessions expire;
- answers uncompressed (allowed whatever `Accept-Encoding`/`enable_http_compression` say; `compress=1`,
  ClickHouse's compressed framing of answers, is refused with Code 48) with the headers clients read:
  X-ClickHouse-Query-Id, X-ClickHouse-Format (result-producing statements only), X-ClickHouse-Timezone,
  X-ClickHouse-Server-Display-Name, X-ClickHouse-Summary;
- errors as ClickHouse writes them, `Code: N. DB::Exception: ... (NAME) (version V)`, with
  X-ClickHouse-Exception-Code and ClickHouse's HTTP status for the code;
- authentication by X-ClickHouse-User/X-ClickHouse-Key, HTTP basic auth or `user`/`password` URL
  parameters; anyone else gets Code 516 AUTHENTICATION_FAILED, HTTP 403;
- GET is read-only (`readonly=2` as a real server sets it).

chDB compiles in defaults a server does not have (async_insert=1, mutations_sync=1, implicit_select=1,
...): every connection gets a real server's values first (`SERVER_DEFAULTS`). The client protocol
revision (`client_protocol_version`) is ignored, so clickhouse-connect's probe falls back to plain Native.
Not implemented: external data tables, progress headers, response compression, users and grants.
"""
from __future__ import annotations

import base64
import gzip
import hmac
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BANNER = ("TEST TOOL: a development ClickHouse HTTP server over an embedded chDB engine, for tests on "
          "loopback only; never the product's warehouse")
DISPLAY_NAME = "iq-etl-devchain-chdb"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_BODY_BYTES = 1 << 30

# A real server's defaults where chDB's compiled-in ones differ (`SELECT name, value, default, changed
# FROM system.settings` in chDB against the ClickHouse documentation).
SERVER_DEFAULTS: dict[str, str] = {
    "async_insert": "0",
    "wait_for_async_insert": "1",
    "mutations_sync": "0",
    "alter_sync": "1",
    "lightweight_deletes_sync": "2",
    "implicit_select": "0",
    "allow_introspection_functions": "0",
    "date_time_input_format": "basic",
    "enable_http_compression": "0",
}

# URL parameters the HTTP interface consumes itself; every other one is a setting.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "session_id",
    "session_timeout", "session_check", "query_id", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "role", "stacktrace",
})
DEFAULT_SESSION_TIMEOUT = 60.0
MAX_SESSION_TIMEOUT = 3600.0

_STATUS_BY_NAME = {
    **dict.fromkeys(("REQUIRED_PASSWORD",), 401),
    **dict.fromkeys(("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
                     "ACCESS_DENIED"), 403),
    **dict.fromkeys(("BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
                     "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
                     "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
                     "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
                     "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
                     "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
                     "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"), 400),
    **dict.fromkeys(("UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
                     "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
                     "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
                     "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"), 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

_CONTENT_TYPES = {
    "Native": "application/octet-stream", "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream", "Parquet": "application/octet-stream",
    "Arrow": "application/octet-stream", "ArrowStream": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8", "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "TabSeparated": "text/tab-separated-values; charset=UTF-8", "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent", "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
_RESULT_KINDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "VALUES"}
_READ_KINDS = _RESULT_KINDS | {"SET", "USE"}
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code: (\d+)\. ")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\s*$")


class ServerError(Exception):
    """An error answered the way ClickHouse answers it."""

    def __init__(self, code: int, name: str, message: str):
        super().__init__(message)
        self.code, self.name, self.message = code, name, message


def _error_from_engine(exc: BaseException) -> ServerError:
    text = str(exc).strip()
    start = text.find("Code: ")
    if start > 0:
        text = text[start:]
    m = _CODE.match(text)
    code = int(m.group(1)) if m else 1002
    text = re.sub(r"^Code: \d+\. DB::\w*Exception: ", "", text)
    n = _NAME.search(text.splitlines()[0] if text else "")
    name = n.group(1) if n else "UNKNOWN_EXCEPTION"
    message = re.sub(r"\s*\([A-Z][A-Z0-9_]+\)\s*$", "", text.splitlines()[0] if text else type(exc).__name__)
    return ServerError(code, name, message)


# --- SQL text, only as far as the HTTP layer needs it ----------------------------------------------

_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|#[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.S)


def statement_kind(sql: str) -> str:
    """The statement's first keyword (leading comments, whitespace and parentheses skipped)."""
    m = re.match(r"[A-Za-z]+", sql[_LEADING.match(sql).end():])  # type: ignore[union-attr]
    return m.group(0).upper() if m else ""


def _strip_literals(sql: str) -> str:
    """The SQL with string literals, quoted identifiers and comments blanked (for keyword searches)."""
    return re.sub(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)


def output_format(sql: str, default: str) -> str:
    found = re.findall(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)", _strip_literals(sql), re.I)
    return found[-1] if found else default


_INSERT_HEAD = re.compile(rb"\bVALUES\b|\bSELECT\b|\bWITH\b|\bFORMAT[ \t\r\n]+([A-Za-z][A-Za-z0-9_]*)", re.I)


def split_insert(text: bytes) -> tuple[str, str, bytes] | None:
    """(statement head before FORMAT, format, data) of an INSERT carrying data after `FORMAT name`;
    None for anything else (INSERT ... VALUES / SELECT runs as plain SQL)."""
    start = _LEADING.match(text.decode("latin-1")).end()  # type: ignore[union-attr]
    if not re.match(rb"INSERT\b", text[start:], re.I):
        return None
    m = _INSERT_HEAD.search(text, start)
    if not m or not m.group(1):
        return None
    pos = m.end()
    while pos < len(text) and text[pos:pos + 1] in (b" ", b"\t"):
        pos += 1
    if text[pos:pos + 2] == b"\r\n":
        pos += 2
    elif text[pos:pos + 1] == b"\n":
        pos += 1
    return text[start:m.start()].decode(), m.group(1).decode(), text[pos:]


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _set_names(sql: str) -> set[str]:
    body = _strip_literals(sql)[_LEADING.match(sql).end():]  # type: ignore[union-attr]
    return {name.lower() for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", body)}


# --- bodies -----------------------------------------------------------------------------------------

def decode_content(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -15)
        if encoding == "lz4":
            import lz4.frame

            out, rest = [], body
            while rest:  # concatenated frames: clickhouse-connect compresses each block as its own frame
                d = lz4.frame.LZ4FrameDecompressor()
                out.append(d.decompress(rest))
                rest = d.unused_data
            return b"".join(out)
        if encoding == "zstd":
            from clickhouse_connect.driver.compression import _zstd_decompress

            return _zstd_decompress(body)
        if encoding == "br":
            import brotli

            return brotli.decompress(body)
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - a corrupt body is the client's error, in ClickHouse's words
        raise ServerError(271, "CANNOT_DECOMPRESS", f"Cannot decompress the body ({encoding}): {exc}") from None
    raise ServerError(48, "NOT_IMPLEMENTED", f"Content-Encoding {encoding} is not supported by this development server")


def decode_clickhouse_blocks(body: bytes) -> bytes:
    """ClickHouse's compressed block framing (`decompress=1`): 16-byte checksum (not verified here),
    method byte, compressed size (with the 9-byte header), uncompressed size, data."""
    out, pos = [], 0
    while pos < len(body):
        if len(body) - pos < 25:
            raise ServerError(271, "CANNOT_DECOMPRESS", "Truncated compressed block")
        method = body[pos + 16]
        csize = int.from_bytes(body[pos + 17:pos + 21], "little")
        usize = int.from_bytes(body[pos + 21:pos + 25], "little")
        data = body[pos + 25:pos + 16 + csize]
        if method == 0x02:
            out.append(data)
        elif method == 0x82:
            import lz4.block

            out.append(lz4.block.decompress(data, uncompressed_size=usize))
        elif method == 0x90:
            from clickhouse_connect.driver.compression import _zstd_decompress

            out.append(_zstd_decompress(data))
        else:
            raise ServerError(48, "NOT_IMPLEMENTED", f"Compression method 0x{method:02x} is not supported by this development server")
        pos += 16 + csize
    return b"".join(out)


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bool]:
    """Form fields of a multipart/form-data body, and whether it held files (external data)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    files = False
    for part in msg.iter_parts():  # type: ignore[attr-defined,unused-ignore]
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            files = True
            continue
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload.decode() if isinstance(payload, bytes) else str(payload or "")
    return fields, files


# --- the engine -------------------------------------------------------------------------------------

@dataclass
class _Session:
    conn: Any
    timeout: float
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False


class Engine:
    """One chDB engine on a folder; a connection per session, a fresh one per sessionless request;
    one query at a time."""

    def __init__(self, data: Path):
        import chdb

        self._chdb = chdb
        self.path = str(Path(data).resolve())
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.sessions_lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self._anchor = chdb.connect(self.path)  # keeps the engine up between requests
        row = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().strip().split("\t")
        self.version, self.timezone = row[0], row[1]

    def connect(self) -> Any:
        conn = self._chdb.connect(self.path)
        for name, value in SERVER_DEFAULTS.items():
            conn.query(f"SET {name} = {_quote(value)}", "TabSeparated")
        return conn

    def acquire_session(self, session_id: str, timeout: float, check: bool) -> _Session:
        with self.sessions_lock:
            self._expire()
            session = self.sessions.get(session_id)
            if session is None:
                if check:
                    raise ServerError(372, "SESSION_NOT_FOUND", f"Session {session_id} not found")
                with self.lock:
                    session = _Session(self.connect(), timeout)
                self.sessions[session_id] = session
            elif session.busy:
                raise ServerError(373, "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client")
            session.busy = True
            session.timeout = timeout
            return session

    def release_session(self, session: _Session) -> None:
        with self.sessions_lock:
            session.busy = False
            session.last_used = time.monotonic()

    def _expire(self) -> None:
        now = time.monotonic()
        for key, session in list(self.sessions.items()):
            if not session.busy and now - session.last_used > session.timeout:
                del self.sessions[key]
                with self.lock:
                    session.conn.close()

    def close(self) -> None:
        with self.sessions_lock, self.lock:
            for session in self.sessions.values():
                session.conn.close()
            self.sessions.clear()
            self._anchor.close()


@dataclass
class Request:
    sql: str
    settings: dict[str, str]
    params: dict[str, str]
    database: str | None
    default_format: str
    readonly: bool
    insert: tuple[str, str, bytes] | None = None


@dataclass
class Answer:
    body: bytes
    fmt: str | None
    summary: dict[str, str]


def _summary(result: Any, body: bytes, started: float) -> dict[str, str]:
    def get(name: str) -> int:
        try:
            return int(getattr(result, name)())
        except Exception:  # noqa: BLE001 - statistics are best effort
            return 0

    return {"read_rows": str(get("rows_read")), "read_bytes": str(get("bytes_read")),
            "written_rows": str(get("rows_written")), "written_bytes": str(get("bytes_written")),
            "total_rows_to_read": str(get("rows_read")), "result_rows": "0", "result_bytes": str(len(body)),
            "elapsed_ns": str(int((time.perf_counter() - started) * 1e9))}


def execute(engine: Engine, req: Request, session: _Session | None, user: str) -> Answer:
    """Run one request on its session's connection (settings and database for this query only) or
    on a fresh connection."""
    started = time.perf_counter()
    kind = statement_kind(req.sql) if req.insert is None else "INSERT"
    if req.readonly and session is not None and kind not in _READ_KINDS:
        # A session's connection cannot leave readonly mode again: enforce it by statement kind.
        raise ServerError(164, "READONLY", f"{user}: Cannot execute query in readonly mode")
    settings = dict(req.settings)
    tmp_path: str | None = None
    with engine.lock:
        conn = session.conn if session is not None else engine.connect()
        snapshot: dict[str, tuple[str, bool]] = {}
        database_before: str | None = None
        try:
            try:
                if session is None and (req.readonly or "readonly" in settings):
                    level = settings.pop("readonly", "2" if req.readonly else "0")
                    conn.query(f"SET readonly = {_quote(level)}", "TabSeparated")
                elif session is not None:
                    settings.pop("readonly", None)
                    if settings:
                        names = ", ".join(_quote(k) for k in settings)
                        rows = conn.query(f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})",
                                          "JSONEachRow").bytes().splitlines()
                        for line in rows:
                            row = json.loads(line)
                            snapshot[row["name"]] = (row["value"], bool(row["changed"]))
                        for key in settings:
                            snapshot.setdefault(key, ("", False))
                    if req.database:
                        database_before = conn.query("SELECT currentDatabase()", "TabSeparated").bytes().decode().strip()
                for key, value in settings.items():
                    conn.query(f"SET {key} = {_quote(value)}", "TabSeparated")
                if req.database:
                    conn.query(f"USE `{req.database.replace('`', '``')}`", "TabSeparated")
                if req.insert is not None:
                    head, fmt, data = req.insert
                    head_settings = ""
                    hs = re.search(r"\bSETTINGS\b", _strip_literals(head), re.I)
                    if hs:
                        head, head_settings = head[:hs.start()], " " + head[hs.start():]
                    with tempfile.NamedTemporaryFile(prefix="iq-etl-ch-insert-", suffix=".data", delete=False) as f:
                        f.write(data)
                        tmp_path = f.name
                    sql = f"{head.rstrip()} FROM INFILE {_quote(tmp_path)} COMPRESSION 'none'{head_settings} FORMAT {fmt}"
                    result = conn.query(sql, "TabSeparated")
                    body, fmt_out = b"", None
                else:
                    result = conn.query(req.sql, req.default_format, params=req.params)
                    body = result.bytes() or b""
                    fmt_out = output_format(req.sql, req.default_format) if kind in _RESULT_KINDS else None
            except ServerError:
                raise
            except Exception as exc:  # noqa: BLE001 - every engine error is answered as ClickHouse answers it
                raise _error_from_engine(exc) from None
            return Answer(body, fmt_out, _summary(result, body, started))
        finally:
            if tmp_path:
                try:
                    os.unlink(tmp_path)
                except OSError:
                    pass
            if session is None:
                conn.close()
            else:
                keep = _set_names(req.sql) if kind == "SET" else set()
                for name, (value, changed) in snapshot.items():
                    if name.lower() in keep:
                        continue
                    try:
                        literal = value if value.startswith("'") and value.endswith("'") and len(value) > 1 else _quote(value)
                        conn.query(f"SET {name} = {literal if changed else 'DEFAULT'}", "TabSeparated")
                        if not changed and name in SERVER_DEFAULTS:
                            conn.query(f"SET {name} = {_quote(SERVER_DEFAULTS[name])}", "TabSeparated")
                    except Exception:  # noqa: BLE001 - an unknown setting was never applied
                        pass
                if database_before and kind != "USE":
                    try:
                        conn.query(f"USE `{database_before.replace('`', '``')}`", "TabSeparated")
                    except Exception:  # noqa: BLE001 - the database was dropped by this query
                        pass


# --- HTTP -------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ClickHouseHTTPServer"

    def log_message(self, format, *args):  # noqa: A002 - quiet unless asked
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise ServerError(307, "TOO_MANY_BYTES", "Request body too large for this development server")
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ServerError(307, "TOO_MANY_BYTES", "Request body too large for this development server")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: ServerError, query_id: str) -> None:
        message = err.message.rstrip()
        message += "" if message.endswith(".") else "."
        text = f"Code: {err.code}. DB::Exception: {message} ({err.name}) (version {self.server.engine.version})\n"
        self._send(_STATUS_BY_NAME.get(err.name, 500), text.encode(), {
            "Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(err.code),
            "X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": self.server.engine.timezone})

    def _credentials(self, params: dict[str, str]) -> tuple[str, str]:
        user = self.headers.get("X-ClickHouse-User")
        key = self.headers.get("X-ClickHouse-Key")
        if user is not None or key is not None:
            return user or "default", key or ""
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
            except Exception:  # noqa: BLE001 - a malformed header authenticates nobody
                return "", "\0"
            name, _, password = decoded.partition(":")
            return name, password
        return params.get("user", "default"), params.get("password", "")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        params: dict[str, str] = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            body = self._read_body()
            if url.path in ("/ping", "/replicas_status") or (method == "GET" and "query" not in params and url.path == "/"):
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            user, password = self._credentials(params)
            srv = self.server
            if not (hmac.compare_digest(user.encode(), srv.user.encode())
                    and hmac.compare_digest(password.encode(), srv.password.encode())):
                raise ServerError(516, "AUTHENTICATION_FAILED",
                                  f"{user}: Authentication failed: password is incorrect, or there is no user with such name")
            ctype = self.headers.get("Content-Type", "")
            if ctype.lower().startswith("multipart/form-data"):
                fields, files = parse_multipart(ctype, body)
                if files:
                    raise ServerError(48, "NOT_IMPLEMENTED", "External data is not supported by this development server")
                params.update(fields)
                body = b""
            body = decode_content(body, self.headers.get("Content-Encoding", ""))
            if params.get("decompress") in ("1", "true"):
                body = decode_clickhouse_blocks(body)
            if params.get("compress") in ("1", "true"):
                raise ServerError(48, "NOT_IMPLEMENTED", "compress=1 (compressed answers) is not supported by this development server")
            url_query = params.get("query", "").encode()
            text = url_query + b"\n" + body if url_query and body else (url_query or body)
            if not text.strip():
                raise ServerError(62, "SYNTAX_ERROR", "Empty query")
            insert = split_insert(text)
            if insert is not None and not insert[2].strip():
                insert = None  # `INSERT ... FORMAT X` with no data: let the engine say so
            try:
                sql = "" if insert is not None else text.decode()
            except UnicodeDecodeError:
                raise ServerError(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "The query is not valid UTF-8") from None
            settings: dict[str, str] = {}
            bound: dict[str, str] = {}
            for key, value in params.items():
                if key in TRANSPORT_PARAMS:
                    continue
                if key.startswith("param_"):
                    bound[key[6:]] = value
                elif _SETTING_NAME.match(key):
                    settings[key] = value
                else:
                    raise ServerError(115, "UNKNOWN_SETTING", f"Unknown setting '{key}'")
            database = self.headers.get("X-ClickHouse-Database") or params.get("database") or None
            req = Request(sql=sql, settings=settings, params=bound, database=database,
                          default_format=params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated",
                          readonly=method == "GET", insert=insert)
            session_id = params.get("session_id")
            session = None
            if session_id:
                try:
                    timeout = min(float(params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT), MAX_SESSION_TIMEOUT)
                except ValueError:
                    raise ServerError(36, "BAD_ARGUMENTS", "Invalid session timeout") from None
                session = srv.engine.acquire_session(session_id, timeout, params.get("session_check") in ("1", "true"))
            if srv.verbose:
                kind = f"INSERT FORMAT {insert[1]} ({len(insert[2])} bytes)" if insert else statement_kind(sql)
                sys.stderr.write(f"  {method} {kind}; Content-Encoding {self.headers.get('Content-Encoding') or '-'}; "
                                 f"Accept-Encoding {self.headers.get('Accept-Encoding') or '-'}; "
                                 f"format {output_format(sql, req.default_format) if sql else '-'}; session "
                                 f"{'yes' if session_id else 'no'}; settings {','.join(sorted(settings)) or '-'}\n")
            try:
                answer = execute(srv.engine, req, session, user)
            finally:
                if session is not None:
                    srv.engine.release_session(session)
            headers = {"X-ClickHouse-Query-Id": query_id,
                       "X-ClickHouse-Timezone": settings.get("session_timezone") or srv.engine.timezone,
                       "X-ClickHouse-Summary": json.dumps(answer.summary, separators=(",", ":")),
                       "Content-Type": _CONTENT_TYPES.get(answer.fmt or "", "text/plain; charset=UTF-8")}
            if answer.fmt:
                headers["X-ClickHouse-Format"] = answer.fmt
            self._send(200, answer.body, headers)
        except ServerError as err:
            self._error(err, query_id)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug here is still an answer, not a dropped connection
            self._error(ServerError(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Engine, user: str, password: str, verbose: bool = False):
        self.engine = engine
        self.user = user
        self.password = password
        self.verbose = verbose
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()
        self.engine.close()


def serve_clickhouse(data: Path, host: str = "127.0.0.1", port: int = 0, user: str = "default",
                     password: str = "", verbose: bool = False) -> ClickHouseHTTPServer:
    """Start the development ClickHouse HTTP server in a background thread; `.shutdown()` stops it.
    One per process (chDB holds one folder per process)."""
    if host not in LOOPBACK:
        raise ValueError(f"{host}: this development server listens on loopback only (127.0.0.1, ::1)")
    engine = Engine(data)
    try:
        server = ClickHouseHTTPServer((host, port), engine, user, password, verbose)
    except BaseException:
        engine.close()
        raise
    threading.Thread(target=server.serve_forever, name="clickhouse-http", daemon=True).start()
    return server
