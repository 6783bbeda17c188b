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
from typing import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from iq_etl.errors import SettingsError

# Known IQ programs of every generation that holds user files (docs/protocol.md §1).
G1_PROGRAM_ID = "FG5nDUjz4S1FBs2rZrXsKsa7J34e21WF17F8nFL9uwWi"
G2_PROGRAM_ID = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3_PROGRAM_ID = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
DEFAULT_PROGRAM_IDS: tuple[str, ...] = (G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID)
# The first slot of each generation, where it is known (docs/protocol.md §1): where `follow` starts
# by default. G1 and G2 started before; their first slots are not public (set IQ_START_SLOT).
ERA_FIRST_SLOTS: dict[str, int] = {G3_PROGRAM_ID: 398_615_411}

READER_MODES = ("pinocchio", "legacy", "passthrough", "auto")
# A flow run whose export failed or refused deliveries: `fail` the run (it pages someone) or only `warn`.
EXPORT_FAILURE_POLICIES = ("fail", "warn")
LOG_FORMATS = ("text", "json")
# The iq-etl home: warehouse, reports, Prefect state and dbt files live under it. One absolute folder
# (IQ_ETL_HOME, else ~/.iq-etl), never the current folder: cron, systemd and workers started elsewhere
# must open the same warehouse, not a fresh empty one.
HOME_ENV = "IQ_ETL_HOME"
DEFAULT_HOME = "~/.iq-etl"
LEGACY_HOME = ".iq-etl"   # the default before issue 21: relative to the current folder
DEFAULT_DSN = "chdb://<IQ_ETL_HOME>/warehouse"
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
    """The DSN with any password (and query-string secrets) replaced by `***`. A `chdb://PATH` keeps its
    form (urlunsplit would drop the `//` of an empty host)."""
    if dsn.startswith("chdb://"):
        path, sep, query = dsn.partition("?")
        return path + sep + re.sub(r"(?i)(password|token|secret|key)=[^&]*", r"\1=***", query)
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
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at_line = data.count(b"\n", 0, exc.start) + 1
        raise SettingsError(f"{path}:{at_line}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                            "save the .env file as UTF-8") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
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


MAX_THREADS = 256   # ingest workers: more is a typo (each is a process with its own memory)


def _positive_int(env: Mapping[str, str], name: str, default: int, maximum: int = 1 << 31) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise SettingsError(f"{name}: {raw!r} is not a whole number (ASCII digits)")
    value = int(raw)
    if value < 1 or value > maximum:
        raise SettingsError(f"{name}: must be between 1 and {maximum}, got {value}")
    return value


_BYTE_SIZE = re.compile(r"^([0-9]+)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
DEFAULT_TRANSFORM_MAX_MEMORY = 4 << 30   # IQ_TRANSFORM_MAX_MEMORY default: 4 GiB per dbt query


def _byte_size(env: Mapping[str, str], name: str, default: int, minimum: int = 64 << 20) -> int:
    """A size in bytes: ASCII digits with an optional K/M/G/T suffix (binary: 4G = 4 GiB). Refuses
    fractions, NaN/inf, non-ASCII digits and sizes below `minimum`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = _BYTE_SIZE.match(raw) if raw.isascii() else None
    if match is None:
        raise SettingsError(f"{name}: {raw!r} is not a size (ASCII digits with an optional K, M, G or T suffix, e.g. 4G)")
    value = int(match.group(1)) << (10 * " kmgt".index(match.group(2).lower() or " "))
    if value < minimum:
        raise SettingsError(f"{name}: {raw!r} is below the minimum of {minimum >> 20} MiB")
    return value


def _http_url(env: Mapping[str, str], name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port   # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise SettingsError(f"{name}: {redact_dsn(value)!r} is not a valid URL ({exc})") from None
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
                                "(two slashes), e.g. chdb:///srv/iq-etl/warehouse")
        if not dsn[len("chdb://"):].split("?", 1)[0]:
            raise SettingsError(f"{name}: chdb:// DSN needs a folder, e.g. chdb:///srv/iq-etl/warehouse")
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


def absolute_chdb_dsn(dsn: str) -> str:
    """`chdb://PATH[?query]` with PATH made absolute (relative paths are read from the current folder
    once, here, and never again: messages and worker processes see one folder)."""
    path, sep, query = dsn[len("chdb://"):].partition("?")
    return f"chdb://{Path(path).expanduser().resolve()}{sep}{query}"


# Every name iq-etl reads (settings, export limits, the scanner, logging, dbt, tests and benchmarks).
# Any other IQ_* / JETSTREAMER_* name in the environment or .env is most likely a typo: warned once.
KNOWN_NAMES = frozenset({
    "IQ_ETL_HOME", "IQ_CLICKHOUSE_DSN", "IQ_CLICKHOUSE_CLUSTER", "IQ_WAREHOUSE_LOCK_WAIT", "IQ_PROGRAM_ID",
    "IQ_SESSION_PDA_LIST", "IQ_READER_MODE", "IQ_READER_BASE_URL", "IQ_READER_ENDPOINT_PATH", "IQ_READER_TOKEN",
    "IQ_RPC_URL", "IQ_CAR_URL", "IQ_CAR_PATIENCE", "IQ_CAR_CONNECTIONS", "IQ_START_SLOT", "IQ_MAX_LAG", "IQ_EXPORT_MAX_BYTES", "IQ_EXPORT_MAX_ATTEMPTS", "IQ_EXPORT_TIMEOUT",
    "IQ_EXPORT_BACKOFF", "IQ_EXPORT_RETRY_AFTER_CAP", "IQ_EXPORT_CONCURRENCY", "IQ_EXPORT_FAILURE_POLICY",
    "IQ_EXPORT_BREAKER", "IQ_EXPORT_UPLOAD_BUDGET", "IQ_EXPORT_RUN_BUDGET",
    "IQ_SCANNER", "IQ_DASK_ADDRESS", "IQ_LOG_LEVEL", "IQ_LOG_FORMAT", "IQ_DBT_HOME", "IQ_TRANSFORM_MAX_MEMORY",
    # set by iq-etl itself for dbt's profile (transform/runner.py)
    "IQ_DBT_TARGET", "IQ_DBT_HOST", "IQ_DBT_PORT", "IQ_DBT_USER", "IQ_DBT_PASSWORD", "IQ_DBT_SECURE",
    "IQ_DBT_CLUSTER", "IQ_DBT_SCHEMA", "IQ_DBT_DATABASE",
    # tests, CI and benchmarks
    "IQ_TEST_CLICKHOUSE_DSN", "IQ_REQUIRE_NATIVE", "IQ_BENCH_CACHE", "IQ_PROPERTY_EXAMPLES", "IQ_FUZZ_EXAMPLES",
    "IQ_ERA_FIRST_SLOT", "IQ_ERA_FIRST_TIME",
    # the seed Jetstreamer plugin's names
    "JETSTREAMER_CLICKHOUSE_MODE", "JETSTREAMER_CLICKHOUSE_DSN", "JETSTREAMER_THREADS", "JETSTREAMER_ARCHIVE_BASE",
    "JETSTREAMER_HTTP_BASE_URL", "JETSTREAMER_COMPACT_INDEX_BASE_URL", "JETSTREAMER_NETWORK_CAPACITY_MB",
})
_WARNED_UNKNOWN: set[str] = set()


def unknown_names(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """(name, nearest known name or None) for every IQ_* / JETSTREAMER_* name iq-etl does not read."""
    import difflib

    out = []
    for name in sorted(set(names)):
        if name.startswith(("IQ_", "JETSTREAMER_")) and name not in KNOWN_NAMES:
            near = difflib.get_close_matches(name, sorted(KNOWN_NAMES), n=1, cutoff=0.6)
            out.append((name, near[0] if near else None))
    return out


def warn_unknown_names(env: Mapping[str, str], dotenv_names: Iterable[str] = (), dotenv: Path | None = None) -> None:
    """Log one WARNING per unknown name per process (a misspelt variable is otherwise ignored silently)."""
    import logging

    in_dotenv = set(dotenv_names)
    for name, near in unknown_names(set(env) | in_dotenv):
        if name in _WARNED_UNKNOWN:
            continue
        _WARNED_UNKNOWN.add(name)
        where = f"in {dotenv}" if name in in_dotenv and dotenv is not None else "in the environment"
        hint = f"; did you mean {near}?" if near else ""
        logging.getLogger("iq_etl.settings").warning("unknown setting %s %s is ignored%s", name, where, hint)


def _finite_number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """A finite number >= minimum (NaN and inf are refused: they pass every comparison test)."""
    import math

    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name}: {raw!r} is not a finite number >= {minimum:g}")
    return value


def _car_url(env: Mapping[str, str]) -> str:
    """IQ_CAR_URL, else the seed's JETSTREAMER_ARCHIVE_BASE / JETSTREAMER_HTTP_BASE_URL (an HTTP base:
    the Old Faithful layout `{base}/{epoch}/epoch-{epoch}.car` under it), else Old Faithful."""
    for name in ("IQ_CAR_URL", "JETSTREAMER_ARCHIVE_BASE", "JETSTREAMER_HTTP_BASE_URL"):
        raw = env.get(name, "").strip()
        if not raw:
            continue
        # IQ_CAR_URL may name mirrors, separated by `|` (ingest/sources/car/source.py): check each
        for part in (raw.split("|") if name == "IQ_CAR_URL" else [raw]):
            part = part.strip()
            scheme = part.split("://", 1)[0].lower() if "://" in part else ""
            if scheme and scheme not in ("http", "https", "file"):
                raise SettingsError(f"{name}: {scheme}:// locations are not supported ({redact_dsn(part)!r}); "
                                    "use an http(s):// URL, a file:// URL or a local path"
                                    + ("" if name == "IQ_CAR_URL" else " in IQ_CAR_URL"))
        if name == "IQ_CAR_URL":
            parts = [p.strip() for p in raw.split("|") if p.strip()]
            if len(parts) > 1 and not all("{epoch}" in p for p in parts):
                raise SettingsError("IQ_CAR_URL: mirrors (separated by |) must all be templates with {epoch}")
            return raw
        if scheme not in ("http", "https"):
            raise SettingsError(f"{name}: {raw!r} is not an http(s):// base URL; for a local archive set "
                                "IQ_CAR_URL to a path template with {epoch}")
        return raw.rstrip("/") + "/{epoch}/epoch-{epoch}.car"
    return DEFAULT_CAR_URL


def home_from(env: Mapping[str, str]) -> Path:
    """The iq-etl home: IQ_ETL_HOME (made absolute) or ~/.iq-etl."""
    return Path(env.get(HOME_ENV, "").strip() or DEFAULT_HOME).expanduser().resolve()


@dataclass(frozen=True)
class ExportLimits:
    """The export settings (IQ_EXPORT_*), parsed and checked with the rest; the export stage turns them
    into its ExportOptions / RetryPolicy. The defaults live here and only here."""

    max_bytes: int = 50 * 1024 * 1024     # IQ_EXPORT_MAX_BYTES: payload (joined bytes) above this is refused
    max_attempts: int = 5                 # IQ_EXPORT_MAX_ATTEMPTS: attempts per upload within a run
    timeout_s: float = 60.0               # IQ_EXPORT_TIMEOUT: wall-clock deadline of one attempt
    backoff_s: float = 0.5                # IQ_EXPORT_BACKOFF: delay before attempt 2 (doubles)
    retry_after_cap_s: float = 60.0       # IQ_EXPORT_RETRY_AFTER_CAP: a backend's Retry-After honoured up to this
    upload_budget_s: float = 120.0        # IQ_EXPORT_UPLOAD_BUDGET: one upload's attempts and waits together
    run_budget_s: float = 3600.0          # IQ_EXPORT_RUN_BUDGET: one export run
    breaker_after: int = 10               # IQ_EXPORT_BREAKER: attempts in a row without an answer: target down
    concurrency: int = 8                  # IQ_EXPORT_CONCURRENCY: uploads sent at once


SCANNERS = ("auto", "python", "native")   # IQ_SCANNER: the CAR section walker (ingest/sources/car/scanner.py)


def _export_limits(env: Mapping[str, str]) -> ExportLimits:
    base = ExportLimits()

    def whole(name: str, default: int, minimum: int, maximum: int = 1 << 62) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        if not (raw.isascii() and raw.isdigit()):
            raise SettingsError(f"{name}: {raw!r} is not a whole number")
        if not minimum <= int(raw) <= maximum:
            raise SettingsError(f"{name}: must be between {minimum} and {maximum}, got {raw}")
        return int(raw)

    return ExportLimits(
        max_bytes=whole("IQ_EXPORT_MAX_BYTES", base.max_bytes, 1),
        max_attempts=whole("IQ_EXPORT_MAX_ATTEMPTS", base.max_attempts, 1),
        timeout_s=_finite_number(env, "IQ_EXPORT_TIMEOUT", base.timeout_s, 0.001),
        backoff_s=_finite_number(env, "IQ_EXPORT_BACKOFF", base.backoff_s),
        retry_after_cap_s=_finite_number(env, "IQ_EXPORT_RETRY_AFTER_CAP", base.retry_after_cap_s),
        upload_budget_s=_finite_number(env, "IQ_EXPORT_UPLOAD_BUDGET", base.upload_budget_s, 1.0),
        run_budget_s=_finite_number(env, "IQ_EXPORT_RUN_BUDGET", base.run_budget_s, 1.0),
        breaker_after=whole("IQ_EXPORT_BREAKER", base.breaker_after, 1),
        concurrency=whole("IQ_EXPORT_CONCURRENCY", base.concurrency, 1, 256),
    )


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
    car_patience_s: float = 180.0          # IQ_CAR_PATIENCE (minutes in the environment): an HTTP CAR stream's patience
    car_connections: int = 16              # IQ_CAR_CONNECTIONS: parallel ranged GETs per HTTP CAR stream (1-64)
    scanner: str = "auto"                  # IQ_SCANNER: auto | python | native (the CAR section walker)
    dbt_home: Path | None = None           # IQ_DBT_HOME: dbt's target/ and logs/ (None: <home>/dbt)
    start_slot: int | None = None          # IQ_START_SLOT: where `follow` starts (None: the oldest known era)
    max_lag: int | None = None             # IQ_MAX_LAG: slots; a follow run lagging more ends Failed
    export: ExportLimits = field(default_factory=ExportLimits)   # IQ_EXPORT_*
    transform_max_memory: int = DEFAULT_TRANSFORM_MAX_MEMORY     # IQ_TRANSFORM_MAX_MEMORY: bytes per dbt query
    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser().resolve())

    def __post_init__(self) -> None:
        # One absolute home and warehouse path, whatever the current folder (see DEFAULT_HOME).
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        if self.clickhouse_dsn == DEFAULT_DSN:
            object.__setattr__(self, "clickhouse_dsn", f"chdb://{self.home / 'warehouse'}")
        elif self.clickhouse_dsn.startswith("chdb://"):
            object.__setattr__(self, "clickhouse_dsn", absolute_chdb_dsn(self.clickhouse_dsn))

    @property
    def embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")

    @property
    def dsn_redacted(self) -> str:
        return redact_dsn(self.clickhouse_dsn)

    @property
    def warehouse_path(self) -> Path | None:
        """The embedded warehouse's folder (absolute), or None for a remote one."""
        return Path(self.clickhouse_dsn[len("chdb://"):].split("?", 1)[0]) if self.embedded else None

    @property
    def warehouse_name(self) -> str:
        """What every figure shown to an operator names as its source: the embedded folder (absolute)
        or the remote DSN without its password."""
        path = self.warehouse_path
        return f"embedded chDB at {path}" if path is not None else f"ClickHouse at {self.dsn_redacted}"

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
    dotenv_path = dotenv if dotenv is not None else Path.cwd() / ".env"
    from_file = read_dotenv(dotenv_path)
    merged: dict[str, str] = dict(from_file)
    merged.update(os.environ if env is None else env)
    warn_unknown_names(os.environ if env is None else env, from_file, dotenv_path)
    home = home_from(merged)

    program_ids = _pubkey_list(merged, "IQ_PROGRAM_ID", DEFAULT_PROGRAM_IDS)
    session_pdas = _pubkey_list(merged, "IQ_SESSION_PDA_LIST", ())

    mode = merged.get("IQ_READER_MODE", "").strip().lower() or "auto"
    if mode not in READER_MODES:
        raise SettingsError(f"IQ_READER_MODE: {mode!r} is not one of {', '.join(READER_MODES)}")

    # The seed's modes: auto (the DSN if one is set, else embedded), remote (the DSN, required), local
    # (Jetstreamer spawns a local server; here: the embedded warehouse), embedded (iq-etl's name for
    # local). `off` (no ClickHouse) cannot work: every stage reads and writes the warehouse.
    ch_mode = merged.get("JETSTREAMER_CLICKHOUSE_MODE", "").strip().lower()
    if ch_mode == "local":
        ch_mode = "embedded"
    if ch_mode == "off":
        raise SettingsError("JETSTREAMER_CLICKHOUSE_MODE: 'off' is not possible with iq-etl: every stage reads and "
                            "writes its ClickHouse warehouse; unset it (embedded) or set a DSN (remote)")
    if ch_mode and ch_mode not in ("auto", "embedded", "remote"):
        raise SettingsError(f"JETSTREAMER_CLICKHOUSE_MODE: {ch_mode!r} is not one of auto, local, embedded, remote")
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
        dsn = f"chdb://{home / 'warehouse'}"
    if dsn.startswith("chdb://"):
        dsn = absolute_chdb_dsn(dsn)
        _warn_legacy_warehouse(dsn, merged)

    cluster = merged.get("IQ_CLICKHOUSE_CLUSTER", "").strip() or None
    if cluster and not _IDENT.match(cluster):
        raise SettingsError(f"IQ_CLICKHOUSE_CLUSTER: {cluster!r} is not a plain identifier")

    lock_wait = _finite_number(merged, "IQ_WAREHOUSE_LOCK_WAIT", 0.0)

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
        threads=_positive_int(merged, "JETSTREAMER_THREADS", 1, MAX_THREADS),
        dask_address=check_dask_address(merged.get("IQ_DASK_ADDRESS", "").strip() or None, "IQ_DASK_ADDRESS"),
        rpc_url=rpc_url,
        rpc_url_configured=bool(rpc_raw),
        car_url=_car_url(merged),
        log_level=log_level,
        car_patience_s=_finite_number(merged, "IQ_CAR_PATIENCE", 3.0, 0.1) * 60.0,
        car_connections=_positive_int(merged, "IQ_CAR_CONNECTIONS", 16, 64),
        scanner=_scanner(merged),
        dbt_home=Path(merged["IQ_DBT_HOME"].strip()).expanduser().resolve() if merged.get("IQ_DBT_HOME", "").strip() else None,
        start_slot=_slot_or_none(merged, "IQ_START_SLOT"),
        max_lag=_slot_or_none(merged, "IQ_MAX_LAG"),
        export=_export_limits(merged),
        transform_max_memory=_byte_size(merged, "IQ_TRANSFORM_MAX_MEMORY", DEFAULT_TRANSFORM_MAX_MEMORY),
        home=home,
    )


def _warn_legacy_warehouse(dsn: str, env: Mapping[str, str]) -> None:
    """Before issue 21 the default warehouse was ./.iq-etl/warehouse in the current folder. When one is
    here and this process opens another, say so once: reports of `0 uploads` would otherwise look real."""
    import logging

    legacy = (Path.cwd() / LEGACY_HOME / "warehouse").resolve()
    if env.get(HOME_ENV, "").strip() or env.get("IQ_CLICKHOUSE_DSN", "").strip() or "legacy" in _WARNED_UNKNOWN:
        return
    if legacy.is_dir() and absolute_chdb_dsn(f"chdb://{legacy}") != dsn.split("?", 1)[0]:
        _WARNED_UNKNOWN.add("legacy")
        logging.getLogger("iq_etl.settings").warning(
            "a warehouse from an earlier iq-etl is in %s, but the default is now %s: set IQ_ETL_HOME=%s to keep "
            "using it", legacy, dsn[len("chdb://"):], legacy.parent)


def _scanner(env: Mapping[str, str]) -> str:
    value = env.get("IQ_SCANNER", "").strip().lower() or "auto"
    if value not in SCANNERS:
        raise SettingsError(f"IQ_SCANNER={value!r}: expected one of {', '.join(SCANNERS)}")
    return value


def _slot_or_none(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip().replace("_", "")
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise SettingsError(f"{name}: {raw!r} is not a slot number (ASCII digits)")
    return int(raw)


def logging_settings(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> tuple[str, str]:
    """(level, format) of the log: IQ_LOG_LEVEL (else the seed's RUST_LOG, its first level word) and
    IQ_LOG_FORMAT, from the environment over `.env`. Read before the rest of the settings: logging must
    be up to report what they say."""
    merged = dict(read_dotenv(dotenv if dotenv is not None else Path.cwd() / ".env"))
    merged.update(os.environ if env is None else env)
    level = (merged.get("IQ_LOG_LEVEL", "") or "").strip().lower()
    if level and level not in LOG_LEVELS:
        raise SettingsError(f"IQ_LOG_LEVEL: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    if not level:
        rust = re.split(r"[,=\s]", (merged.get("RUST_LOG", "") or "").strip().lower())[0]
        level = rust if rust in LOG_LEVELS else "info"
    fmt = (merged.get("IQ_LOG_FORMAT", "") or "text").strip().lower()
    if fmt not in LOG_FORMATS:
        raise SettingsError(f"IQ_LOG_FORMAT: {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    return level, fmt
