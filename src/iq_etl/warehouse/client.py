"""The warehouse: one clickhouse-connect client per process for a `chdb://` or `http(s)://` DSN.

Embedded mode is chDB in-process (a real ClickHouse engine on a folder). chDB locks its folder, so
only one process may hold it: a second one gets `WarehouseBusy`, optionally after waiting
`IQ_WAREHOUSE_LOCK_WAIT` seconds. `close_client()` releases the folder. Nothing else in the code
branches on embedded vs remote.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from clickhouse_connect.driver import Client

from iq_etl.errors import WarehouseBusy, WarehouseError
from iq_etl.settings import Settings, redact_dsn

log = logging.getLogger(__name__)


_lock = threading.RLock()
_client: Client | None = None
_client_dsn: str | None = None


def chdb_path(dsn: str) -> Path:
    """The absolute folder of a `chdb://` DSN (`chdb://./rel`, `chdb:///abs`, `chdb://rel`)."""
    rest = dsn[len("chdb://"):]
    rest = rest.split("?", 1)[0]
    return Path(rest).expanduser().resolve()


_CODE_PREFIX = re.compile(r"^(?:.*?: )?Code: \d+\. DB::Exception: ")


def clean_error(exc: BaseException) -> str:
    """A ClickHouse/chDB error as one line for people: without the `Code: NN. DB::Exception:` preamble."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    text = _CODE_PREFIX.sub("", lines[0]).strip()
    if "NOT_ENOUGH_SPACE" in text or "No space left on device" in text:
        text += " (the disk holding the warehouse is full: free space, then rerun; finished sub-ranges are kept)"
    return text[:500]


class _NativeStderr:
    """Capture what native code writes to file descriptor 2 while the engine starts (chDB prints its
    start-up errors there itself); given back to stderr unless the start failed and we explain it."""

    def __enter__(self) -> "_NativeStderr":
        import tempfile

        self.text = ""
        self._file = tempfile.TemporaryFile()
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read(65536).decode(errors="replace")
        self._file.close()
        if exc is None and self.text:
            sys.stderr.write(self.text)  # nothing went wrong: whatever was printed is not ours to hide

    def reason(self) -> str:
        """chDB's own reason from a raw `Code: NN. DB::...Exception: ...` line, cleaned."""
        for line in reversed(self.text.splitlines()):
            if "Exception" in line:
                return re.sub(r"^.*?Code: \d+\. DB::\w*Exception: ", "", line).strip()[:300]
        return ""


def lock_holder(path: Path) -> str | None:
    """Who holds an embedded warehouse folder: ClickHouse writes its PID to `status` while the folder is
    open. 'process N (command)' when that process is alive and not this one, else None."""
    try:
        text = (path / "status").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^PID:\s*(\d+)", text, re.M)
    if not m:
        return None
    pid = int(m.group(1))
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        command = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split())
    except OSError:
        command = ""
    return f"process {pid}" + (f" ({redact_command(command)[:400]})" if command else "")


_SECRET_FLAG = re.compile(r"(?i)^--?[\w-]*(password|passwd|token|secret|api-?key|auth)[\w-]*$")
_SECRET_ASSIGN = re.compile(r"(?i)^([\w-]*(password|passwd|token|secret|api-?key|auth)[\w-]*=).+$")


def redact_command(command: str) -> str:
    """A process's command line as it may be shown to another user or process: every URL or DSN
    without its password and query-string secrets, the value after a secret-looking flag
    (`--password X`) and of `NAME=secret` assignments replaced by `***`."""
    out: list[str] = []
    hide_next = False
    for token in command.split():
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag, eq, value = token.partition("=")
        if _SECRET_FLAG.match(flag) and not eq:
            out.append(token)
            hide_next = True
        elif _SECRET_FLAG.match(flag) or _SECRET_ASSIGN.match(token):
            out.append(f"{flag}=***")
        elif "://" in token:
            prefix = f"{flag}=" if eq and "://" in value and "://" not in flag else ""
            out.append(prefix + redact_dsn(token[len(prefix):]))
        else:
            out.append(token)
    return " ".join(out)


def _open(dsn: str, lock_wait_s: float, connect_timeout: float) -> Client:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    if dsn.startswith("chdb://"):
        path = chdb_path(dsn)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:   # a file where the folder should be, or under one; no permission
            raise WarehouseError(f"cannot open the embedded warehouse at {path}: {exc.strerror or exc} "
                                 "(IQ_CLICKHOUSE_DSN=chdb://PATH needs PATH to be a folder, or creatable as one)") from None
        deadline = time.monotonic() + lock_wait_s
        while True:
            native = _NativeStderr()
            try:
                with native:
                    return clickhouse_connect.get_client(dsn=f"chdb://{path}")
            except ClickHouseError as exc:
                holder = lock_holder(path)
                if holder is None:
                    # Not held by anyone: some other start-up failure (permissions, a full disk, a
                    # damaged folder). Say so, with chDB's own reason (it prints it natively to
                    # stderr as a raw `Code: NN` line, which we keep off the terminal); never claim
                    # "in use" and never wait for a lock.
                    reason = native.reason() or clean_error(exc)
                    raise WarehouseError(f"cannot open the embedded warehouse at {path}: {reason} "
                                         "(no other process holds it: check the folder's permissions and "
                                         "free disk space)") from None
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"the embedded warehouse at {path} is in use by {holder}; wait for it, set "
                        "IQ_WAREHOUSE_LOCK_WAIT=SECONDS to wait, or use a remote DSN (IQ_CLICKHOUSE_DSN=http://...)"
                    ) from None
                time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
    return _open_remote(dsn, connect_timeout)


def _open_remote(dsn: str, connect_timeout: float) -> Client:
    """A client for an http(s):// DSN. It connects to the server's default database first: a DSN naming
    a database that does not exist yet (`.../iq` on a fresh server) would fail at once, since the client
    sends `database=` with its first queries. The database is then created if missing and used."""
    import clickhouse_connect

    parts = urlsplit(dsn)
    scheme = parts.scheme
    secure = scheme in ("https", "clickhouses")
    username = unquote(parts.username) if parts.username else "default"   # `p%40ss` in a URL is `p@ss`
    password = unquote(parts.password) if parts.password else ""
    kwargs: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "username": username,
        "password": password,
        "secure": secure,
        "connect_timeout": connect_timeout,
        "send_receive_timeout": 300,
    }
    for key, value in parse_qsl(parts.query):
        kwargs.setdefault(key, value)
    # The path (or a `?database=`) names the database; never connect to it before it exists.
    db = unquote(parts.path.strip("/")) or str(kwargs.pop("database", "") or "")
    kwargs.pop("database", None)
    where = redact_dsn(dsn)

    def one_line(exc: BaseException) -> str:
        text = str(exc)
        for secret in {password, parts.password or ""} - {""}:
            text = text.replace(secret, "***")
        text = re.sub(r"^.*?server response: ", "", text.strip().splitlines()[0] if text.strip() else "")
        return re.sub(r" \(for url [^)]*\)$", "", text)[:300]

    try:
        client = clickhouse_connect.get_client(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any driver/network error becomes one clear line
        code = getattr(exc, "code", None)
        if str(code) in ("516", "192", "193", "194") or "AUTHENTICATION_FAILED" in str(exc):
            raise WarehouseError(f"the warehouse at {where} refused user {username!r}: Code 516 AUTHENTICATION_FAILED "
                                 "(authentication failed: check the user and password in IQ_CLICKHOUSE_DSN; "
                                 "percent-encode @ : / in them)") from None
        raise WarehouseError(_remote_failure(where, exc, one_line(exc))) from None
    if db and db != "default":
        quoted = "`" + db.replace("\\", "\\\\").replace("`", "\\`") + "`"
        try:
            exists = str(client.command(f"EXISTS DATABASE {quoted}")).strip() == "1"
            if not exists:
                client.command(f"CREATE DATABASE IF NOT EXISTS {quoted}")
        except Exception as exc:  # noqa: BLE001 - the database is missing and cannot be made: say why
            client.close()
            raise WarehouseError(f"the database {db!r} named by {where} does not exist and could not be created: "
                                 f"{one_line(exc)} (create it, or grant CREATE DATABASE to {username!r})") from None
        client.database = db
    return client


def _remote_failure(where: str, exc: BaseException, text: str) -> str:
    """One line that says what to fix: the server answered with an error (its code and message), or
    it could not be reached, and why (refused, DNS, timeout, TLS)."""
    code = getattr(exc, "code", None)
    if code not in (None, 0, "0"):
        return f"the warehouse at {where} answered with an error: Code {code}: {text}"
    lowered = str(exc).lower()
    if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
        cause = "TLS failure (check https:// against the server's port and certificate)"
    elif "refused" in lowered:
        cause = "connection refused (is the server running, and is this its HTTP port, usually 8123 / 8443?)"
    elif "name or service not known" in lowered or "nodename nor servname" in lowered \
            or "temporary failure in name resolution" in lowered or "failed to resolve" in lowered:
        cause = "host name not resolved (DNS)"
    elif "timed out" in lowered or "timeout" in lowered:
        cause = "timed out connecting"
    else:
        cause = f"{type(exc).__name__}: {text}"
    return f"cannot reach the warehouse at {where}: {cause}"


def get_client(settings: Settings, connect_timeout: float = 5.0) -> Client:
    """The process's shared client for `settings.clickhouse_dsn` (opened on first use)."""
    global _client, _client_dsn
    with _lock:
        if _client is not None:
            if _client_dsn != settings.clickhouse_dsn:
                raise WarehouseError(
                    f"this process already holds {redact_dsn(_client_dsn or '')}; close it before opening {settings.dsn_redacted}"
                )
            return _client
        _client = _open(settings.clickhouse_dsn, settings.warehouse_lock_wait_s, connect_timeout)
        _client_dsn = settings.clickhouse_dsn
        log.debug("opened warehouse %s", settings.dsn_redacted)
        return _client


def close_client() -> None:
    """Close the shared client; for chDB this releases the folder lock for other processes."""
    global _client, _client_dsn
    with _lock:
        if _client is not None:
            try:
                _client.close()
            finally:
                _client = None
                _client_dsn = None


class Warehouse:
    """Context manager: `with Warehouse(settings) as client:` opens the shared client and closes it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._owned = False

    def __enter__(self) -> Any:
        self._owned = _client is None
        return get_client(self.settings)

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            close_client()


# --- migrations -------------------------------------------------------------------------------


