"""Run the dbt project (dbt_project/) in-process against the configured warehouse.

`run_dbt(settings)` runs `dbt build` through `dbt.cli.main.dbtRunner`:
- embedded (`chdb://`): target `embedded`, through the process's shared chDB engine
  (transform/chdb_seam.py), one thread;
- remote (`http(s)://`): target `remote`; the DSN is split into IQ_DBT_HOST/PORT/USER/PASSWORD/
  SECURE for profiles.yml for the duration of the run (in this process's environment only, never
  logged).
dbt's target/ and logs go under the iq-etl home (`<home>/dbt`), never into the repo. A failed run
raises `TransformError` with dbt's own message for each failing node; a query stopped at the memory
cap (IQ_TRANSFORM_MAX_MEMORY) raises `TransformMemoryError`, one line naming the model and the cap.

Scale (issue 27): every query of the build runs under `max_memory_usage` = IQ_TRANSFORM_MAX_MEMORY
with group-bys and sorts spilling to disk past half of it and joins switching to a merge join past
half of it (`memory_vars`, passed to profiles.yml as vars, so the remote target gets them too). An
incremental build runs its data tests on the groups it recomputed (var iq_test_scope='changed',
dbt_project/macros/changed_scope.sql) and leaves out the staging views' tests; `full_tests=True`
(`iq-etl transform --full-tests`, the nightly deployment) and `--full-refresh` test everything.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from iq_etl.errors import IQEtlError
from iq_etl.settings import Settings
from iq_etl.warehouse.serial import DBT_BUILD, serial


def find_dbt_project() -> Path:
    """The dbt project: a checkout's `dbt_project/` first (what a developer edits), else the copy built
    into the package (`pip install` of a wheel carries it as package data; see setup.py)."""
    checkout = Path(__file__).resolve().parents[3] / "dbt_project"
    if (checkout / "dbt_project.yml").is_file():
        return checkout
    packaged = Path(__file__).resolve().parent / "dbt_project"
    if (packaged / "dbt_project.yml").is_file():
        return packaged
    raise IQEtlError(f"dbt project not found: neither {checkout} nor {packaged} holds dbt_project.yml")


DBT_PROJECT_DIR = find_dbt_project()
COMMANDS = ("build", "run", "test", "compile", "parse", "ls", "debug", "source freshness")

log = logging.getLogger("iq_etl.transform")
_run_lock = threading.Lock()  # dbtRunner is not re-entrant: one invocation per process at a time


class TransformError(IQEtlError):
    """dbt failed: a model, test or the project itself. The message carries dbt's own words."""


class TransformMemoryError(TransformError):
    """A query of the build needed more memory than IQ_TRANSFORM_MAX_MEMORY allows (ClickHouse stopped
    it: MEMORY_LIMIT_EXCEEDED), instead of the process being killed."""


# Tests a scoped (incremental) build leaves out: they re-read every raw row (FINAL) or a whole
# table whatever changed: the staging views' and the sources' tests, and those of int_finalizes (a
# view over the raw finalizes) and int_linked_pieces (rebuilt whole each run); full-refresh and
# full-test runs (the nightly deployment) keep them.
SCOPED_TEST_EXCLUDE = ("resource_type:test,path:models/staging",
                       "resource_type:test,path:models/intermediate/int_finalizes.yml",
                       "resource_type:test,path:models/intermediate/int_linked_pieces.yml")


# Group-bys, sorts and joins spill past 1/SPILL_SHARE of the cap: a query's own state is not all it
# holds (several aggregations and join tables at once, read buffers, merges of spilled blocks), and
# the embedded engine shares its process with dbt. 3M raw rows, full build, default 4G cap (bench
# 4b): spill at 1/2 peaked at 4.4 GB RSS, at 1/4 at 2.9 GB (int_uploads).
SPILL_SHARE = 8


def memory_vars(max_memory: int) -> dict[str, Any]:
    """profiles.yml vars bounding one query's memory: the cap, the spill threshold of group-bys and
    sorts (an eighth of it), the size past which a join leaves its hash table for a merge join, and
    the size of the blocks an INSERT ... SELECT sorts and writes at once."""
    if max_memory <= 0:
        return {}
    spill = max_memory // SPILL_SHARE
    return {"iq_max_memory_usage": max_memory, "iq_max_bytes_before_spill": spill,
            "iq_max_bytes_in_join": spill, "iq_join_algorithm": "auto",
            # insert blocks: 64 MB at the default 4G cap (ClickHouse's default is 256 MB)
            "iq_insert_block_bytes": max(16 << 20, max_memory // 64), "iq_insert_block_rows": 65536,
            # int_uploads builds its groups in passes of about this many raw rows (512k at the 4G
            # cap). 3M raw rows, full build: one pass stopped at the cap, 2 passes peaked at 2.9-3.1 GB,
            # 5 at 2.3 GB, 10 at 2.3 GB (docs/transform-scale.md)
            "iq_rows_per_pass": max(100_000, max_memory // 8192),
            # upload_payloads builds its upload groups in passes of about this many chunk bytes
            # (256 MB at the 4G cap): one INSERT over 10M raw rows stopped at the cap
            "iq_payload_bytes_per_pass": max(16 << 20, max_memory // 16)}


def _size_text(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


@dataclass(frozen=True)
class NodeResult:
    name: str
    resource_type: str  # model | test | unit_test | ...
    status: str  # success | error | fail | warn | pass | skipped | ...
    message: str
    seconds: float
    failures: int | None = None


@dataclass
class DbtResult:
    success: bool
    command: str
    target: str
    elapsed_s: float
    nodes: list[NodeResult] = field(default_factory=list)
    # set when a plain build ran as a full refresh because the model tables could not be trusted
    # (transform/build_state.py): why, in words
    full_refresh_reason: str | None = None

    def counts(self) -> dict[str, int]:
        """Node count by status, e.g. {'success': 12, 'pass': 30, 'warn': 1}."""
        out: dict[str, int] = {}
        for node in self.nodes:
            out[node.status] = out.get(node.status, 0) + 1
        return out

    def problems(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status in ("error", "fail", "runtime error")]

    def warnings(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == "warn"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "command": self.command,
            "target": self.target,
            "elapsed_s": round(self.elapsed_s, 3),
            "counts": self.counts(),
            "full_refresh_reason": self.full_refresh_reason,
            "nodes": [n.__dict__ for n in self.nodes],
        }


def dbt_home(settings: Settings) -> Path:
    """Where dbt's target/ and logs/ go: `<iq-etl home>/dbt` (the IQ_DBT_HOME setting overrides)."""
    return settings.dbt_home if settings.dbt_home is not None else (Path(settings.home) / "dbt").resolve()


def remote_target_env(dsn: str, cluster: str | None = None) -> dict[str, str]:
    """profiles.yml `remote` variables from an http(s):// DSN. Holds the password: never log it."""
    parts = urlsplit(dsn)
    secure = parts.scheme in ("https", "clickhouses")
    return {
        "IQ_DBT_TARGET": "remote",
        "IQ_DBT_HOST": parts.hostname or "localhost",
        "IQ_DBT_PORT": str(parts.port or (8443 if secure else 8123)),
        "IQ_DBT_USER": unquote(parts.username) if parts.username else "default",   # `p%40ss` in a URL is `p@ss`
        "IQ_DBT_PASSWORD": unquote(parts.password) if parts.password else "",
        "IQ_DBT_SECURE": "true" if secure else "false",
        "IQ_DBT_CLUSTER": cluster or "",
    }


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def dbt_args(settings: Settings, command: str, select: Sequence[str] | str | None, full_refresh: bool,
             vars: Mapping[str, Any] | None, exclude: Sequence[str] | str | None) -> list[str]:
    home = dbt_home(settings)
    args = [
        *command.split(),   # "source freshness" is two words
        "--project-dir", str(DBT_PROJECT_DIR),
        "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(home / "target"),
        "--log-path", str(home / "logs"),
        "--target", "embedded" if settings.embedded else "remote",
    ]
    for flag, values in (("--select", select), ("--exclude", exclude)):
        if values:
            items = [values] if isinstance(values, str) else list(values)
            args += [flag, *[part for item in items for part in item.split()]]
    if full_refresh:
        if command not in ("build", "run"):
            raise TransformError(f"--full-refresh applies to build or run, not {command}")
        args.append("--full-refresh")
    if vars:
        import json

        args += ["--vars", json.dumps(dict(vars))]
    return args


def _node_results(run_result: Any) -> list[NodeResult]:
    nodes: list[NodeResult] = []
    results = getattr(run_result, "results", None) or []
    for item in results:
        node = getattr(item, "node", None)
        status = getattr(item, "status", "")
        nodes.append(NodeResult(
            name=getattr(node, "name", "?") if node is not None else "?",
            resource_type=str(getattr(node, "resource_type", "")) if node is not None else "",
            status=str(getattr(status, "value", status)),
            message=(getattr(item, "message", None) or "").strip(),
            seconds=float(getattr(item, "execution_time", 0.0) or 0.0),
            failures=getattr(item, "failures", None),
        ))
    return nodes


def run_dbt(settings: Settings, select: Sequence[str] | str | None = None, full_refresh: bool = False,
            command: str = "build", *, vars: Mapping[str, Any] | None = None,
            exclude: Sequence[str] | str | None = None, unit_tests: bool = False,
            quiet: bool = False, full_tests: bool = False) -> DbtResult:
    """Run one dbt command in-process and summarise it; raise TransformError when dbt fails.

    Unit tests (fixed fixtures, no warehouse data) are left out unless `unit_tests` is set: they
    prove the SQL, not the data, so the test suite runs them and production runs skip their cost.
    A `build` without `full_refresh` or `full_tests` tests only the groups it recomputed."""
    if command not in COMMANDS:
        raise TransformError(f"unsupported dbt command {command!r}; use one of {', '.join(COMMANDS)}")
    # A whole build or run (no --select/--exclude) checks that the model tables are whole before it
    # trusts them incrementally, and records them when it succeeds (build_state.py).
    whole = command in ("build", "run") and not select and not exclude
    reason = None
    if whole:
        from iq_etl.transform import build_state
        from iq_etl.warehouse.client import get_client
        from iq_etl.warehouse.schema import migrate

        client = get_client(settings)
        migrate(client, settings.clickhouse_cluster)   # iq.dbt_builds, and the sources dbt reads
        reason = None if full_refresh else build_state.read_state(client).full_refresh_reason()
        if reason is not None:
            full_refresh = True
            (log.info if reason.startswith("first build") else log.warning)(
                "transform: every model rebuilt (--full-refresh): %s", reason)
        build_state.record_started(client, full_refresh)
    # Embedded: one process holds the chDB folder and every ingest has finished before a transform
    # starts, so no insert can still be in flight: incremental models need no look-back window.
    run_vars: dict[str, Any] = {"iq_lookback_seconds": 0} if settings.embedded else {}
    run_vars.update(memory_vars(settings.transform_max_memory))
    scoped = command == "build" and not full_refresh and not full_tests
    run_vars["iq_test_scope"] = "changed" if scoped else "all"
    run_vars.update(vars or {})
    if scoped and run_vars.get("iq_test_scope") == "changed":
        exclude = [*([exclude] if isinstance(exclude, str) else list(exclude or ())), *SCOPED_TEST_EXCLUDE]
    args = dbt_args(settings, command, select, full_refresh, run_vars, exclude)
    if command in ("build", "test") and not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if quiet:
        args.insert(0, "--quiet")
    env = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PARTIAL_PARSE": "true"}
    if settings.embedded:
        env["IQ_DBT_TARGET"] = "embedded"
    else:
        env.update(remote_target_env(settings.clickhouse_dsn, settings.clickhouse_cluster))
    home = dbt_home(settings)
    home.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    outcome = invoke_dbt(settings, env, args)
    elapsed = time.monotonic() - started

    result = DbtResult(success=bool(outcome.success), command=command,
                       target="embedded" if settings.embedded else "remote", elapsed_s=elapsed,
                       nodes=_node_results(outcome.result), full_refresh_reason=reason)
    if whole and build_state.build_left_tables_whole(result.nodes, full_refresh):
        from dbt_common.invocation import get_invocation_id

        build_state.record_finished(client, get_invocation_id(), full_refresh)
    if not result.success:
        memory = _memory_failure(result, outcome, settings)
        if memory:
            raise TransformMemoryError(memory)
        raise TransformError(_failure_message(result, outcome, settings))
    return result


def _memory_failure(result: DbtResult, outcome: Any, settings: Settings) -> str | None:
    """One line when a query was stopped at the memory cap (ClickHouse MEMORY_LIMIT_EXCEEDED)."""
    texts = [(n.name, n.message) for n in result.problems()]
    if outcome.exception is not None:
        texts.append(("dbt", str(outcome.exception)))
    for name, text in texts:
        if "MEMORY_LIMIT_EXCEEDED" in text or "Code: 241" in text or "Limit for JOIN exceeded" in text:
            cap = _size_text(settings.transform_max_memory)
            return (f"transform stopped: {name} needed more memory than IQ_TRANSFORM_MAX_MEMORY={cap} allows "
                    f"(ClickHouse MEMORY_LIMIT_EXCEEDED); raise IQ_TRANSFORM_MAX_MEMORY or build on a bigger "
                    f"server (see dbt_project/README.md, \"Scale\")")
    return None


def _failure_message(result: DbtResult, outcome: Any, settings: Settings) -> str:
    lines: list[str] = []
    if outcome.exception is not None:
        lines.append(f"dbt {result.command} could not run: {str(outcome.exception).strip()}")
    for node in result.problems():
        lines.append(f"{node.resource_type} {node.name} {node.status}: {node.message}")
    if not lines:
        lines.append(f"dbt {result.command} failed (see {dbt_home(settings) / 'logs' / 'dbt.log'})")
    text = "; ".join(line.replace("\n", " ") for line in lines)
    password = urlsplit(settings.clickhouse_dsn).password if not settings.embedded else None
    for secret in {password, unquote(password)} - {None, ""} if password else ():   # as typed, and decoded
        text = text.replace(secret, "***")
    return text[:4000]


def invoke_dbt(settings: Settings, env: dict[str, str], args: list[str]) -> Any:
    """One in-process dbt invocation with `env` set, through the chDB seam for the embedded warehouse;
    one at a time per process (dbt's globals are not reentrant)."""
    from dbt.cli.main import dbtRunner

    if not _run_lock.acquire(blocking=False):
        raise TransformError("a dbt run is already in progress in this process")
    try:
        # remote: one dbt invocation per warehouse at a time (embedded chDB is one process already)
        with serial(settings, DBT_BUILD), _environment(env):
            if settings.embedded:
                from iq_etl.transform.chdb_seam import embedded_engine

                with embedded_engine(settings):
                    outcome = dbtRunner().invoke(args)
            else:
                outcome = dbtRunner().invoke(args)
    finally:
        _run_lock.release()
    return outcome
