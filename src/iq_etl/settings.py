"""Settings from the environment and an optional `.env` file in the working directory.

Names are compatible with the seed Jetstreamer plugin (`IQ_PROGRAM_ID`, `IQ_SESSION_PDA_LIST`,
`IQ_READER_MODE`, `IQ_READER_BASE_URL`, `IQ_READER_ENDPOINT_PATH`, `JETSTREAMER_CLICKHOUSE_MODE`,
`JETSTREAMER_CLICKHOUSE_DSN`, `JETSTREAMER_THREADS`) plus iq-etl's own (`IQ_CLICKHOUSE_DSN`, ...).
The process environment wins over `.env`. Every malformed value is a `SettingsError` naming the
variable; secrets never appear in messages (see `redact_dsn`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from iq_etl.errors import SettingsError

# Known IQ programs of every generation that holds user files (docs/protocol.md §1).
G1_PROGRAM_ID = "FG5nDUjz4S1FBs2rZrXsKsa7J34e21WF17F8nFL9uwWi"
G2_PROGRAM_ID = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3_PROGRAM_ID = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
DEFAULT_PROGRAM_IDS: tuple[str, ...] = (G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID)

READER_MODES = ("pinocchio", "legacy", "passthrough", "auto")
# A flow run whose export failed or refused deliveries: `fail` the run (it pages someone) or only `warn`.
EXPORT_FAILURE_POLICIES = ("fail", "warn")
LOG_FORMATS = ("text", "json")
DEFAULT_DSN = "chdb://./.iq-etl/warehouse"
DEFAULT_RPC_URL = "https://api.mainnet-beta.solana.com"
DEFAULT_READER_BASE_URL = "https://api.iqlabs.xyz"
DEFAULT_READER_ENDPOINT_PATH = "/api/v2/inscribe/ingest"
DEFAULT_CAR_URL = "https://files.old-faithful.net/{epoch}/epoch-{epoch}.car"
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "critical")

_B58_ALPHABET = set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_pubkey(value: str) -> bool:
    """True when `value` is base58 that decodes to exactly 32 bytes."""
    if not value or not set(value) <= _B58_ALPHABET:
        return False
    from solders.pubkey import Pubkey

    try:
        Pubkey.from_string(value)
    except Exception:  # noqa: BLE001 - solders raises several types for bad input
        return False
    return True


def redact_dsn(dsn: str) -> str:
    """The DSN with any password (and query-string secrets) replaced by `***`."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable DSN>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"(?i)(password|token|secret|key)=[^&]*", r"\1=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes, optional `export `."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        if "=" not in line:
            raise SettingsError(f"{path}:{lineno}: expected KEY=VALUE")
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _pubkey_list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    items = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    for item in items:
        if not is_pubkey(item):
            raise SettingsError(f"{name}: {item!r} is not a base58 32-byte public key")
    return items


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
    if value < 1:
        raise SettingsError(f"{name}: must be at least 1, got {value}")
    return value


def _http_url(env: Mapping[str, str], name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise SettingsError(f"{name}: {redact_dsn(value)!r} is not an http(s):// or file:// URL")
    return value


NATIVE_PORTS = (9000, 9440)  # ClickHouse's native TCP protocol; iq-etl speaks HTTP(S) (8123 / 8443)
SUPPORTED_DSNS = "chdb://PATH (embedded) or http(s)://[user[:password]@]host[:port][/database] (HTTP interface)"


def validate_dsn(dsn: str, name: str = "IQ_CLICKHOUSE_DSN") -> str:
    """Check a warehouse DSN strictly: `chdb://PATH` (embedded) or `http(s)://[user[:pass]@]host[:port][/db]`.
    A typo must not silently change the target (`chdb:/x` is not a remote server on localhost)."""
    if dsn.split(":", 1)[0].lower() == "chdb":
        if not dsn.startswith("chdb://"):
            raise SettingsError(f"{name}: {redact_dsn(dsn)!r} is not a chdb DSN: write chdb://PATH "
                                "(two slashes), e.g. chdb://./.iq-etl/warehouse")
        if not dsn[len("chdb://"):].split("?", 1)[0]:
            raise SettingsError(f"{name}: chdb:// DSN needs a folder, e.g. chdb://./.iq-etl/warehouse")
        return dsn
    try:
        parts = urlsplit(dsn)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise SettingsError(f"{name}: {redact_dsn(dsn)!r} is not a valid DSN; supported: {SUPPORTED_DSNS}") from None
    if parts.scheme in ("http", "https"):
        if not dsn.lower().startswith(f"{parts.scheme}://") or not parts.hostname:
            raise SettingsError(f"{name}: {redact_dsn(dsn)!r} has no host; supported: {SUPPORTED_DSNS}")
        if port in NATIVE_PORTS:
            raise SettingsError(f"{name}: port {port} in {redact_dsn(dsn)!r} is ClickHouse's native protocol; "
                                "iq-etl uses the HTTP interface (usually 8123, or 8443 with https)")
        return dsn
    if parts.scheme in ("clickhouse", "clickhouses", "tcp"):
        raise SettingsError(f"{name}: {parts.scheme}:// in {redact_dsn(dsn)!r} is not supported (it usually means "
                            f"the native protocol); use http://host:8123 or https://host:8443")
    raise SettingsError(f"{name}: unsupported scheme {parts.scheme!r} in {redact_dsn(dsn)!r}; "
                        f"supported: {SUPPORTED_DSNS}")


_DASK_ADDRESS = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-]+:[0-9]{1,5}$")


def check_dask_address(address: str | None, name: str = "--dask-address") -> str | None:
    """A Dask scheduler address, `tcp://HOST:PORT` (or tls://); None stays None."""
    if address is None:
        return None
    if not _DASK_ADDRESS.match(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise SettingsError(f"{name}: {address!r} is not a Dask scheduler address like tcp://HOST:8786")
    return address


@dataclass(frozen=True)
class Settings:
    program_ids: tuple[str, ...] = DEFAULT_PROGRAM_IDS
    session_pdas: tuple[str, ...] = ()
    reader_mode: str = "auto"
    export_failure_policy: str = "fail"    # IQ_EXPORT_FAILURE_POLICY: fail | warn (a flow run with failed deliveries)
    log_format: str = "text"               # IQ_LOG_FORMAT: text | json
    reader_base_url: str = DEFAULT_READER_BASE_URL
    reader_endpoint_path: str = DEFAULT_READER_ENDPOINT_PATH
    reader_token: str | None = field(default=None, repr=False)
    clickhouse_dsn: str = field(default=DEFAULT_DSN, repr=False)
    clickhouse_cluster: str | None = None
    warehouse_lock_wait_s: float = 0.0
    threads: int = 1
    dask_address: str | None = None        # IQ_DASK_ADDRESS: tcp://HOST:PORT of a Dask scheduler for ingest fan-out
    rpc_url: str = DEFAULT_RPC_URL
    rpc_url_configured: bool = False
    car_url: str = DEFAULT_CAR_URL
    log_level: str = "info"
    home: Path = Path(".iq-etl")

    @property
    def embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")

    @property
    def dsn_redacted(self) -> str:
        return redact_dsn(self.clickhouse_dsn)

    @property
    def reader_url(self) -> str:
        return self.reader_base_url.rstrip("/") + "/" + self.reader_endpoint_path.lstrip("/")

    def __repr__(self) -> str:  # never show secrets
        return (
            f"Settings(dsn={self.dsn_redacted!r}, programs={len(self.program_ids)}, "
            f"session_pdas={len(self.session_pdas)}, reader_mode={self.reader_mode!r}, threads={self.threads})"
        )


def load_settings(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Build `Settings` from `env` (default: os.environ) over `.env` in the working directory."""
    merged: dict[str, str] = dict(read_dotenv(dotenv if dotenv is not None else Path.cwd() / ".env"))
    merged.update(os.environ if env is None else env)

    program_ids = _pubkey_list(merged, "IQ_PROGRAM_ID", DEFAULT_PROGRAM_IDS)
    session_pdas = _pubkey_list(merged, "IQ_SESSION_PDA_LIST", ())

    mode = merged.get("IQ_READER_MODE", "").strip().lower() or "auto"
    if mode not in READER_MODES:
        raise SettingsError(f"IQ_READER_MODE: {mode!r} is not one of {', '.join(READER_MODES)}")

    ch_mode = merged.get("JETSTREAMER_CLICKHOUSE_MODE", "").strip().lower()
    if ch_mode and ch_mode not in ("embedded", "remote"):
        raise SettingsError(f"JETSTREAMER_CLICKHOUSE_MODE: {ch_mode!r} is not 'embedded' or 'remote'")
    if merged.get("IQ_CLICKHOUSE_DSN", "").strip():
        dsn = validate_dsn(merged["IQ_CLICKHOUSE_DSN"].strip(), "IQ_CLICKHOUSE_DSN")
    elif ch_mode == "remote":
        raw = merged.get("JETSTREAMER_CLICKHOUSE_DSN", "").strip()
        if not raw:
            raise SettingsError("JETSTREAMER_CLICKHOUSE_DSN: required when JETSTREAMER_CLICKHOUSE_MODE=remote")
        dsn = validate_dsn(raw, "JETSTREAMER_CLICKHOUSE_DSN")
    elif merged.get("JETSTREAMER_CLICKHOUSE_DSN", "").strip() and ch_mode != "embedded":
        dsn = validate_dsn(merged["JETSTREAMER_CLICKHOUSE_DSN"].strip(), "JETSTREAMER_CLICKHOUSE_DSN")
    else:
        dsn = DEFAULT_DSN

    cluster = merged.get("IQ_CLICKHOUSE_CLUSTER", "").strip() or None
    if cluster and not _IDENT.match(cluster):
        raise SettingsError(f"IQ_CLICKHOUSE_CLUSTER: {cluster!r} is not a plain identifier")

    lock_wait_raw = merged.get("IQ_WAREHOUSE_LOCK_WAIT", "").strip() or "0"
    try:
        lock_wait = float(lock_wait_raw)
        if lock_wait < 0:
            raise ValueError
    except ValueError:
        raise SettingsError(f"IQ_WAREHOUSE_LOCK_WAIT: {lock_wait_raw!r} is not a number of seconds >= 0") from None

    rpc_raw = (merged.get("IQ_RPC_URL", "") or merged.get("SOLANA_RPC_URL", "")).strip()
    rpc_url = _http_url(merged, "IQ_RPC_URL" if merged.get("IQ_RPC_URL") else "SOLANA_RPC_URL", rpc_raw) if rpc_raw else DEFAULT_RPC_URL

    base_url = merged.get("IQ_READER_BASE_URL", "").strip() or DEFAULT_READER_BASE_URL
    _http_url(merged, "IQ_READER_BASE_URL", base_url)
    endpoint = merged.get("IQ_READER_ENDPOINT_PATH", "").strip() or DEFAULT_READER_ENDPOINT_PATH

    policy = (merged.get("IQ_EXPORT_FAILURE_POLICY", "") or "fail").strip().lower()
    if policy not in EXPORT_FAILURE_POLICIES:
        raise SettingsError(f"IQ_EXPORT_FAILURE_POLICY: {policy!r} is not one of {', '.join(EXPORT_FAILURE_POLICIES)}")
    log_format = (merged.get("IQ_LOG_FORMAT", "") or "text").strip().lower()
    if log_format not in LOG_FORMATS:
        raise SettingsError(f"IQ_LOG_FORMAT: {log_format!r} is not one of {', '.join(LOG_FORMATS)}")

    log_level = (merged.get("IQ_LOG_LEVEL", "") or "info").strip().lower()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"IQ_LOG_LEVEL: {log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    return Settings(
        program_ids=program_ids,
        session_pdas=session_pdas,
        reader_mode=mode,
        export_failure_policy=policy,
        log_format=log_format,
        reader_base_url=base_url,
        reader_endpoint_path=endpoint,
        reader_token=merged.get("IQ_READER_TOKEN", "").strip() or None,
        clickhouse_dsn=dsn,
        clickhouse_cluster=cluster,
        warehouse_lock_wait_s=lock_wait,
        threads=_positive_int(merged, "JETSTREAMER_THREADS", 1),
        dask_address=check_dask_address(merged.get("IQ_DASK_ADDRESS", "").strip() or None, "IQ_DASK_ADDRESS"),
        rpc_url=rpc_url,
        rpc_url_configured=bool(rpc_raw),
        car_url=merged.get("IQ_CAR_URL", "").strip() or DEFAULT_CAR_URL,
        log_level=log_level,
        home=Path(merged.get("IQ_ETL_HOME", "").strip() or ".iq-etl"),
    )
