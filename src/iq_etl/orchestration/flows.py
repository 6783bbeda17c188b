"""Prefect 3 flows: ingest → transform (dbt build) → export, and scheduled reconciliation.

Flows (each one is also a Prefect deployment in `prefect.yaml` and served by `iq-etl serve`):

- `ingest_flow`     the `iq-etl ingest` parameters (slot spec, source, CAR/RPC URLs, session PDAs...)
- `transform_flow`  `dbt build` of the models in `dbt_project/`
- `export_flow`     uploads in `iq.sessions_ready_to_export` → each target, bounded concurrency,
                    every attempt recorded in `iq.exports`
- `pipeline_flow`   ingest → transform → export in one run
- `reconcile_flow`  finds the chunks of incomplete uploads again (see `iq_etl.reconcile.plan`), re-ingests,
                    re-transforms, exports what became complete and retries failed exports
- `backfill_flow`   (in `iq_etl.orchestration.backfill`) an epoch range, sub-ranges as Prefect tasks on a
                    Dask cluster; `dask_address` / `dask_workers` give ingest_flow and pipeline_flow the same

Every flow run holds the warehouse for its whole length through `iq_etl.orchestration.locking.warehouse_session`
(run lock next to the embedded warehouse, optional Prefect global concurrency limit): overlapping
runs wait for each other instead of failing with WarehouseBusy, and the client is closed at the end so
the chDB folder is free between runs. The stages are tasks so that each gets its own state, logs
and retries in the Prefect UI; only the idempotent ones retry (ingest: dedup tokens + resume; dbt
build; export: delivered uploads are never re-sent and attempts carry an Idempotency-Key).

Settings (DSN, tokens, program ids) come from the environment / `.env` of the process running the
flow, never from flow parameters: Prefect stores parameters in its database and shows them in the UI.
Each run ends by publishing a markdown artifact (key `iq-etl-status`) with the `iq-etl status` table;
pipeline and reconcile runs also write the coverage report and publish a table artifact of the
incomplete uploads and a link artifact to the report (orchestration/artifacts.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from iq_etl.errors import DeliveryFailed
from iq_etl.ingest.request import DEFAULTS
from iq_etl.orchestration.artifacts import publish_report
from iq_etl.orchestration.locking import DEFAULT_TIMEOUT_S, GLOBAL_LIMIT_NAME, warehouse_session
from iq_etl.orchestration.run_context import flow_settings as _settings
from iq_etl.orchestration.run_context import run_id as _run_id
from iq_etl.orchestration.run_context import run_logger as _logger
from iq_etl.orchestration.run_context import spec_text
from iq_etl.orchestration.run_context import worth_retrying as _worth_retrying
from iq_etl.settings import Settings

STATUS_ARTIFACT_KEY = "iq-etl-status"


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    for method in ("to_json", "to_dict"):
        if hasattr(value, method):
            return getattr(value, method)()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return dict(value)


# --- tasks ------------------------------------------------------------------------------------

PROGRESS_ARTIFACT_KEY = "iq-etl-ingest-progress"


def _progress_artifact():
    """An ingest progress callback that keeps one Prefect progress artifact up to date (percent of slots,
    the heartbeat line as its description)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact: list[Any] = []

    def publish(report: Any) -> None:
        percent, line = round(100.0 * report.fraction, 1), report.line()
        if artifact:
            update_progress_artifact(artifact[0], percent, description=line)
        else:
            artifact.append(create_progress_artifact(percent, key=PROGRESS_ARTIFACT_KEY, description=line))

    return publish


@task(name="ingest", retries=2, retry_delay_seconds=10, retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE)
def ingest_task(settings: Settings, *, slot_spec: str | None = None, ranges: Sequence[tuple[int, int]] | None = None,
                source: str = DEFAULTS.source, car_url: str | None = None, rpc_url: str | None = None,
                session_pdas: Sequence[str] | None = None, slot_padding: int = DEFAULTS.slot_padding,
                max_signature_pages: int = DEFAULTS.max_signature_pages, threads: int | None = None,
                resume: bool = DEFAULTS.resume, extra_program_ids: Sequence[str] = (),
                progress: bool = False, dask_address: str | None = None,
                dask_workers: int | None = None) -> dict[str, Any]:
    """Idempotent: batches carry content dedup tokens and `resume` skips sub-ranges already done.
    With `dask_address` (or IQ_DASK_ADDRESS) or `dask_workers`, sub-ranges are Prefect tasks on a Dask
    cluster (iq_etl.orchestration.dask_fanout.DaskFanout) instead of `threads` local workers."""
    import contextlib

    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration.dask_fanout import dask_fanout
    from iq_etl.solana.slots import SlotRange

    fanout = dask_fanout(settings, dask_address, dask_workers)
    if fanout is not None:
        _logger().info("ingest: sub-ranges as tasks on %s", fanout.describe())
    with fanout if fanout is not None else contextlib.nullcontext():
        summary = run_ingest(
            settings, IngestRequest(slot_spec=slot_spec, ranges=[SlotRange(a, b) for a, b in ranges] if ranges else None,
            source=source, car_url=car_url, rpc_url=rpc_url, session_pdas=list(session_pdas) if session_pdas else None,
            slot_padding=slot_padding, max_signature_pages=max_signature_pages, threads=threads, resume=resume,
            run_id=_run_id().replace("-", "")[:12] or None, progress=progress, extra_program_ids=tuple(extra_program_ids),
            on_progress=_progress_artifact()), fanout=fanout,
        )
    result = _as_dict(summary)
    _logger().info("ingest into %s: %s transactions seen, %s IQ matches, %s rows written, %s undecoded in %.1fs",
                   settings.warehouse_name, result.get("transactions_seen"), result.get("matches"),
                   result.get("rows_written"), result.get("undecoded"), result.get("seconds") or 0.0)
    if result.get("incomplete"):
        _logger().warning("ingest: some sub-ranges did not finish; the next run resumes them")
    return result


def transform_line(out: dict[str, Any]) -> str:
    """`transform: dbt build ok in 7.4s (17 success, 60 pass)`: a line for people, not a dict repr."""
    counts = out.get("counts") or {}
    nodes = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no nodes"
    verdict = "ok" if out.get("success") else "FAILED"
    return f"transform: dbt {out.get('command', 'build')} {verdict} in {out.get('elapsed_s', 0):.1f}s ({nodes})"


def export_line(out: dict[str, Any]) -> str:
    """`export to URL: 40 of 40 delivered, 0 failed, 0 refused; 40 attempts, 99,875 bytes`."""
    if out.get("dry_run"):
        return f"export to {out.get('target')} (dry run): {out.get('would_send', 0)} would be sent"
    return (f"export to {out.get('target')}: {out.get('delivered', 0)} of {out.get('selected', 0)} delivered, "
            f"{out.get('failed', 0)} failed, {out.get('refused', 0)} refused; {out.get('attempts', 0)} attempts, "
            f"{out.get('bytes_delivered', 0):,} bytes")


@task(name="transform", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def transform_task(settings: Settings, select: str | None = None, full_refresh: bool = False,
                   full_tests: bool = False) -> dict[str, Any]:
    """`dbt build`; idempotent (tables are rebuilt or merged incrementally on their keys). Data tests
    check the groups the build recomputed, or everything with `full_tests` / `full_refresh`."""
    from iq_etl.transform.runner import run_dbt

    result = run_dbt(settings, select=select, full_refresh=full_refresh, quiet=True, full_tests=full_tests)
    out = _as_dict(result)
    _logger().info("%s", transform_line(out))
    return out


@task(name="export", retries=2, retry_delay_seconds=10, retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE)
def export_task(settings: Settings, target: str | None, dry_run: bool = False, concurrency: int | None = None,
                limit: int | None = None) -> dict[str, Any]:
    """Idempotent: only uploads without a delivered row for the target are sent, with a stable
    Idempotency-Key, so a retried task never delivers twice."""
    from iq_etl.export.runner import export_ready
    from iq_etl.warehouse.client import get_client

    kwargs: dict[str, Any] = {"target": target, "dry_run": dry_run, "limit": limit}
    if concurrency:
        kwargs["concurrency"] = concurrency
    summary = export_ready(settings, get_client(settings), **kwargs)
    out = _as_dict(summary)
    _logger().info("%s", export_line(out))
    return out


@task(name="publish-status", retries=1, cache_policy=NO_CACHE)
def status_artifact_task(settings: Settings, title: str, extra_markdown: str = "") -> dict[str, Any]:
    """Publish the `iq-etl status` table as a markdown artifact; returns the report."""
    from iq_etl.status import status_markdown, status_report
    from iq_etl.warehouse.client import get_client

    report = status_report(get_client(settings), warehouse=settings.warehouse_name, program_ids=settings.program_ids)
    markdown = f"# {title}\n\n{extra_markdown}\n\n{status_markdown(report)}" if extra_markdown else \
        f"# {title}\n\n{status_markdown(report)}"
    create_markdown_artifact(markdown=markdown, key=STATUS_ARTIFACT_KEY, description=f"iq-etl status after {title}")
    return report


# --- stage bodies shared by the flows ---------------------------------------------------------

def _targets(targets: Sequence[str] | None) -> list[str | None]:
    """Export targets: the given URLs, or the configured reader backend (None → the runner's default)."""
    return list(dict.fromkeys(targets)) if targets else [None]


def _export_all(settings: Settings, targets: Sequence[str] | None, dry_run: bool, concurrency: int | None,
                limit: int | None) -> list[dict[str, Any]]:
    return [export_task(settings, target, dry_run=dry_run, concurrency=concurrency, limit=limit)
            for target in _targets(targets)]


def _export_markdown(exported: Sequence[dict[str, Any]]) -> str:
    """This run's deliveries per target, for the status artifact."""
    if not exported:
        return ""
    lines = ["## This run's exports", "", "| target | waiting | delivered | failed | refused | attempts |",
             "|---|---|---|---|---|---|"]
    for e in exported:
        lines.append(f"| {e.get('target')} | {e.get('selected', 0)} | {e.get('delivered', 0)}"
                     f"{' (dry run)' if e.get('dry_run') else ''} | {e.get('failed', 0)} | {e.get('refused', 0)} "
                     f"| {e.get('attempts', 0)} |")
    for e in exported:
        for f in (e.get("failures") or [])[:10]:
            lines.append(f"- {e.get('target')}: `{f.get('upload_key', f.get('session_key', ''))}` "
                         f"{f.get('status', '')}: {f.get('error', f.get('reason', ''))}")
    return "\n".join(lines)


def _delivery_verdict(exported: Sequence[dict[str, Any]]) -> str | None:
    """One line when an export failed or refused deliveries (dry runs never fail), else None."""
    bad = [e for e in exported if not e.get("dry_run") and (e.get("failed") or e.get("refused")
                                                             or e.get("not_attempted"))]
    if not bad:
        return None
    return "; ".join(f"export to {e.get('target')}: {e.get('delivered', 0)} of {e.get('selected', 0)} delivered, "
                     f"{e.get('failed', 0)} failed, {e.get('refused', 0)} refused ({e.get('attempts', 0)} attempts)"
                     + (f", {e.get('not_attempted')} not attempted: {e.get('breaker')}" if e.get("not_attempted") else "")
                     for e in bad)


def _finish(settings: Settings, result: Any, exported: Sequence[dict[str, Any]]) -> Any:
    """The flow's return: its result, or, when deliveries failed and IQ_EXPORT_FAILURE_POLICY is `fail`
    (the default), a Failed state whose message says what failed: that is what pages an operator.
    The figures stay available: the state's data is a DeliveryFailed carrying the result."""
    verdict = _delivery_verdict(exported)
    if verdict is None:
        return result
    _logger().warning("%s", verdict)
    if settings.export_failure_policy == "warn":
        return result
    return Failed(message=verdict, data=DeliveryFailed(verdict, result))


# --- flows ------------------------------------------------------------------------------------

@flow(name="ingest_flow", log_prints=True)
def ingest_flow(slot_spec: str | int | None = None, source: str = DEFAULTS.source, car_url: str | None = None,
                rpc_url: str | None = None, session_pdas: list[str] | None = None,
                slot_padding: int = DEFAULTS.slot_padding, max_signature_pages: int = DEFAULTS.max_signature_pages,
                threads: int | None = None, resume: bool = DEFAULTS.resume,
                extra_program_ids: list[str] | None = None, lock_timeout_s: float = DEFAULT_TIMEOUT_S,
                publish_status: bool = True, progress: bool = False, dask_address: str | None = None,
                dask_workers: int | None = None) -> dict[str, Any]:
    """Ingest a slot range (`S:E`, epoch `N`, epochs `A-B`) or the window discovered for session PDAs.
    `dask_address` (or IQ_DASK_ADDRESS) / `dask_workers`: sub-ranges as tasks on a Dask cluster."""
    slot_spec = spec_text(slot_spec)   # `-p slot_spec=923` arrives as a number
    settings = _settings()
    with warehouse_session(settings, "ingest_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        result = ingest_task(settings, slot_spec=slot_spec, source=source, car_url=car_url, rpc_url=rpc_url,
                             session_pdas=session_pdas, slot_padding=slot_padding,
                             max_signature_pages=max_signature_pages, threads=threads, resume=resume,
                             extra_program_ids=extra_program_ids or (), progress=progress,
                             dask_address=dask_address, dask_workers=dask_workers)
        if publish_status:
            status_artifact_task(settings, "ingest_flow")
    return result


@flow(name="transform_flow", log_prints=True)
def transform_flow(select: str | None = None, full_refresh: bool = False,
                   lock_timeout_s: float = DEFAULT_TIMEOUT_S, full_tests: bool = False) -> dict[str, Any]:
    """`dbt build` (optionally `--select`, `--full-refresh`, `--full-tests`: every data test over
    everything, the nightly deployment) and publish the status artifact."""
    settings = _settings()
    with warehouse_session(settings, "transform_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        result = transform_task(settings, select=select, full_refresh=full_refresh, full_tests=full_tests)
        status_artifact_task(settings, "transform_flow")
    return result


@flow(name="export_flow", log_prints=True)
def export_flow(targets: list[str] | None = None, dry_run: bool = False, concurrency: int | None = None,
                limit: int | None = None, lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
    """Export complete uploads not yet delivered to each target (default: the configured reader backend)."""
    settings = _settings()
    with warehouse_session(settings, "export_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        results = _export_all(settings, targets, dry_run, concurrency, limit)
        status_artifact_task(settings, "export_flow", extra_markdown=_export_markdown(results))
    return _finish(settings, results, results)


@task(name="follow", cache_policy=NO_CACHE)
def follow_task(settings: Settings, *, car_url: str | None = None, rpc_url: str | None = None,
                max_epochs: int | None = None, max_rpc_slots: int | None = None,
                extra_program_ids: Sequence[str] = (), progress: bool = False) -> dict[str, Any]:
    """One round of following the chain (iq_etl.ingest.follow): archived epochs from CAR, the slots
    past the archive's edge over RPC, bounded; returns the round's figures (tip, frontier, lag)."""
    from iq_etl.ingest.follow import DEFAULT_MAX_EPOCHS, DEFAULT_MAX_RPC_SLOTS, follow_chain
    from iq_etl.warehouse.client import get_client

    result = follow_chain(settings, get_client(settings), car_url=car_url, rpc_url=rpc_url,
                          max_epochs=DEFAULT_MAX_EPOCHS if max_epochs is None else max_epochs,
                          max_rpc_slots=DEFAULT_MAX_RPC_SLOTS if max_rpc_slots is None else max_rpc_slots,
                          extra_program_ids=tuple(extra_program_ids), progress=progress)
    _logger().info("%s", result.line())
    return {**result.to_json(), "line": result.line()}


def _record_run(settings: Settings, command: str, started: Any, result: dict[str, Any], verdict: str | None) -> None:
    """One row in iq.runs for this flow run (never failing the run: the history is secondary)."""
    import datetime as dt

    from iq_etl.warehouse.client import get_client
    from iq_etl.warehouse.runs import RunRecord, complete_uploads, record_run

    try:
        client = get_client(settings)
        ingested, follow = result.get("ingest") or {}, result.get("follow") or {}
        exported = result.get("export") or []

        def when(value: Any) -> Any:
            return dt.datetime.fromisoformat(value) if isinstance(value, str) else value

        record_run(client, RunRecord(
            run_id=_run_id() or started.strftime(f"{command}-%Y%m%dT%H%M%S"), flow_run_id=_run_id() or "",
            command=command, started_at=started, status="failed" if verdict else "ok",
            slots_covered=int(follow.get("slots_covered") or sum(
                r["last_slot"] - r["first_slot"] + 1 for r in ingested.get("ranges", []) if r.get("status") == "done")),
            rows_written=int(follow.get("rows_written") or ingested.get("rows_written") or 0),
            uploads_complete=complete_uploads(client),
            uploads_delivered=sum(int(e.get("delivered") or 0) for e in exported),
            errors=sum(int(e.get("failed") or 0) + int(e.get("refused") or 0) for e in exported) + (1 if verdict else 0),
            message=verdict or follow.get("line", ""), tip_slot=follow.get("tip_slot"),
            tip_time=when(follow.get("tip_time")), frontier_slot=follow.get("frontier_slot"),
            frontier_time=when(follow.get("frontier_time")), warehouse=settings.warehouse_name))
    except Exception as exc:  # noqa: BLE001 - say so, keep the run's own outcome
        _logger().warning("run history not recorded: %s: %s", type(exc).__name__, exc)


def _nothing_to_ingest(settings: Settings, slot_spec: str | None, session_pdas: Sequence[str] | None,
                       source: str = "car") -> bool:
    """A scheduled pipeline without a slot spec and without session PDAs only transforms and exports
    (ingest may be done elsewhere, e.g. by workers each ingesting a slot range) -- unless its source
    is rpc-signatures, which then tails every IQ program from the cursors in iq.cursors."""
    if source == "rpc-signatures":
        return False
    return not slot_spec and not session_pdas and not settings.session_pdas


@flow(name="pipeline_flow", log_prints=True)
def pipeline_flow(slot_spec: str | int | None = None, source: str = DEFAULTS.source, car_url: str | None = None,
                  rpc_url: str | None = None, session_pdas: list[str] | None = None,
                  slot_padding: int = DEFAULTS.slot_padding, max_signature_pages: int = DEFAULTS.max_signature_pages,
                  threads: int | None = None, resume: bool = DEFAULTS.resume,
                  extra_program_ids: list[str] | None = None, targets: list[str] | None = None,
                  export_concurrency: int | None = None, dry_run: bool = False, full_refresh: bool = False,
                  lock_timeout_s: float = DEFAULT_TIMEOUT_S, progress: bool = False,
                  dask_address: str | None = None, dask_workers: int | None = None,
                  max_epochs: int | None = None, max_rpc_slots: int | None = None) -> dict[str, Any]:
    """Ingest → transform → export in one run, then publish the status artifact.

    `source="follow"` (the scheduled deployment's default) without a slot spec: one round of following
    the chain (iq_etl.ingest.follow: archived epochs from CAR, at most `max_epochs`; the slots past the
    archive's edge over RPC, at most `max_rpc_slots`), and the run ends Failed when the lag is above
    IQ_MAX_LAG. Every run is recorded in iq.runs.

    Without `slot_spec` the window is discovered for `session_pdas` (or IQ_SESSION_PDA_LIST); with
    neither, source rpc-signatures tails the IQ programs (live tail from stored cursors) and any
    other source skips ingest: the run transforms and exports what the warehouse holds."""
    slot_spec = spec_text(slot_spec)   # `-p slot_spec=923` arrives as a number
    import datetime as dt

    settings = _settings()
    started = dt.datetime.now(dt.timezone.utc)
    followed: dict[str, Any] | None = None
    with warehouse_session(settings, "pipeline_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        if source == "follow" and not slot_spec:
            followed = follow_task(settings, car_url=car_url, rpc_url=rpc_url, max_epochs=max_epochs,
                                   max_rpc_slots=max_rpc_slots, extra_program_ids=extra_program_ids or (),
                                   progress=progress)
            ingested = None
        elif _nothing_to_ingest(settings, slot_spec, session_pdas, source):
            _logger().info("ingest skipped: no slot spec and no session PDAs")
            ingested = None
        else:
            source = "car" if source == "follow" else source   # a slot spec given: read it from the archive
            ingested = ingest_task(settings, slot_spec=slot_spec, source=source, car_url=car_url, rpc_url=rpc_url,
                                   session_pdas=session_pdas or list(settings.session_pdas) or None,
                                   slot_padding=slot_padding, max_signature_pages=max_signature_pages,
                                   threads=threads, resume=resume, extra_program_ids=extra_program_ids or (),
                                   progress=progress, dask_address=dask_address, dask_workers=dask_workers)
        transformed = transform_task(settings, full_refresh=full_refresh)
        exported = _export_all(settings, targets, dry_run, export_concurrency, None)
        report = status_artifact_task(settings, "pipeline_flow", extra_markdown=_export_markdown(exported))
        publish_report(settings, "pipeline_flow")
        result = {"ingest": ingested, "follow": followed, "transform": transformed, "export": exported,
                  "status": report}
        lag = _lag_verdict(settings, followed)
        # inside the session: the warehouse is still this run's (and its client is closed with it)
        _record_run(settings, "pipeline_flow", started, result, _delivery_verdict(exported) or lag)
    if lag:
        _logger().error("%s", lag)
        return Failed(message=lag, data=DeliveryFailed(lag, result))
    return _finish(settings, result, exported)


def _lag_verdict(settings: Settings, followed: dict[str, Any] | None) -> str | None:
    from iq_etl.ingest.follow import lag_verdict

    return lag_verdict(int(followed["lag_slots"]), settings.max_lag) if followed else None


# --- reconcile --------------------------------------------------------------------------------

def _car_epoch_available(car_url: str):
    """epoch → whether its CAR archive exists at `car_url`: asked once per epoch, with one quick try
    (the CAR preflight: no retries). The first failure that is not "not found" (refused, DNS, timeout)
    means the host is down: it is said once and no other epoch is asked (each used to cost six retries
    per neighbouring epoch, a minute of a run that could not search anyway)."""
    from functools import lru_cache

    from iq_etl.errors import SourceError, SourceMissing
    from iq_etl.ingest.sources.car.source import CarSource
    from iq_etl.solana.slots import epoch_bounds

    source = CarSource(car_url)
    host_down: list[str] = []

    @lru_cache(maxsize=None)
    def available(epoch: int) -> bool:
        if host_down:
            return False
        try:
            source.preflight(epoch_bounds(epoch).first_slot if source.is_template else None)
            return True
        except SourceMissing:
            return False
        except SourceError as exc:
            host_down.append(str(exc))
            _logger().warning("reconcile: the CAR archives cannot be reached (%s); no slot window is searched "
                              "from them this run", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - an unreadable archive is reported, then skipped
            _logger().warning("reconcile: cannot check the CAR archive of epoch %d: %s", epoch, exc)
            return False

    return available


@task(name="plan-reconcile", retries=1, cache_policy=NO_CACHE)
def plan_reconcile_task(settings: Settings, policy: Any, use_rpc: bool, window_source: str,
                        car_url: str | None = None, extra_program_ids: Sequence[str] = ()) -> Any:
    from iq_etl.reconcile import plan as rc
    from iq_etl.reconcile import store
    from iq_etl.warehouse.client import get_client
    from iq_etl.warehouse.scan_ledger import ScanScope, covered_ranges
    client = get_client(settings)
    # Slots count as searched only where a scan of every program this search keeps covered them.
    scope = ScanScope.of(window_source, set(settings.program_ids) | set(extra_program_ids), settings.session_pdas)
    available = _car_epoch_available(car_url or settings.car_url) if window_source == "car" else None
    plan = rc.plan_reconcile(store.read_incomplete(client), store.read_states(client),
                             covered_ranges(client, scope), policy, use_rpc=use_rpc,
                             epoch_available=available)
    _logger().info("reconcile plan: %d upload(s) to search (%d over budget, %d not searchable); slot ranges %s; "
                   "%d session(s) over RPC", len(plan.uploads), len(plan.deferred), len(plan.skipped),
                   plan.scan_ranges or "none", len(plan.session_pdas))
    return plan


@flow(name="reconcile_flow", log_prints=True)
def reconcile_flow(discovery: str = "auto", window_source: str = "car", car_url: str | None = None,
                   rpc_url: str | None = None, initial_padding: int = 2_000, growth: int = 4,
                   max_padding: int = 432_000, max_scan_slots: int = 2_000_000, max_uploads: int = 1_000,
                   max_signature_pages: int = DEFAULTS.max_signature_pages, extra_program_ids: list[str] | None = None,
                   targets: list[str] | None = None, export_concurrency: int | None = None,
                   lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Search again for the chunks of incomplete uploads, re-transform, export what became complete
    and retry failed exports; returns (and publishes) a summary of what changed.

    discovery: `auto` (RPC discovery on session accounts when an RPC URL is configured, widening
    slot windows otherwise), `rpc` or `window`. See reconcile/plan.py for the window rules."""
    from iq_etl.errors import IQEtlError
    from iq_etl.reconcile import plan as rc
    from iq_etl.reconcile import store
    from iq_etl.warehouse.catalog import table_exists
    if discovery not in ("auto", "rpc", "window"):
        raise IQEtlError(f"reconcile discovery {discovery!r}: use auto, rpc or window")
    if window_source not in ("car", "rpc-blocks"):
        raise IQEtlError(f"reconcile window_source {window_source!r}: use car or rpc-blocks")
    try:
        policy = rc.Policy(initial_padding=initial_padding, growth=growth, max_padding=max_padding,
                           max_scan_slots=max_scan_slots, max_uploads=max_uploads)
    except ValueError as exc:
        raise IQEtlError(str(exc)) from None
    settings = _settings()
    use_rpc = discovery == "rpc" or (discovery == "auto" and bool(rpc_url or settings.rpc_url_configured))
    run_id = _run_id() or "reconcile"
    with warehouse_session(settings, "reconcile_flow", lock_timeout_s, GLOBAL_LIMIT_NAME) as client:
        if not table_exists(client, store.COMPLETENESS):
            transform_task(settings)
        before = store.read_statuses(client)
        plan = plan_reconcile_task(settings, policy, use_rpc, window_source, car_url, tuple(extra_program_ids or ()))
        rows_written, unreadable, partly_read = 0, [], False
        # One ingest per search, so that one unreadable range (an archive that ends early, an RPC
        # error) is reported and the others still count. Rows read before a failure are kept.
        searches: list[tuple[str, dict[str, Any]]] = []
        if plan.session_pdas:
            searches.append((f"RPC discovery of {len(plan.session_pdas)} session(s)",
                             dict(source="rpc-signatures", rpc_url=rpc_url, session_pdas=plan.session_pdas,
                                  max_signature_pages=max_signature_pages, slot_padding=0)))
        for first, last in plan.scan_ranges:
            searches.append((f"slots {first}:{last}", dict(ranges=[(first, last)], source=window_source,
                                                           car_url=car_url, rpc_url=rpc_url)))
        for what, kwargs in searches:
            try:
                found = ingest_task(settings, extra_program_ids=extra_program_ids or (), **kwargs)
            except IQEtlError as exc:
                _logger().warning("reconcile: %s could not be read completely: %s", what, exc)
                unreadable.append({"search": what, "error": str(exc)[:500]})
                partly_read = True   # rows read before the failure were written: rebuild the models
                continue
            rows_written += int(found.get("rows_written") or 0)
        store.write_states(client, plan, run_id)
        if rows_written or partly_read:
            transform_task(settings)
        exports = _export_all(settings, targets, False, export_concurrency, None)
        after = store.read_statuses(client)
        summary = rc.summarise(before, after, plan, rows_written,
                               store.delivered_in_runs(client, [e["run_id"] for e in exports if e.get("run_id")]),
                               sum(int(e.get("failed") or 0) + int(e.get("refused") or 0) for e in exports),
                               unreadable)
        status_artifact_task(settings, "reconcile_flow",
                             extra_markdown=f"{summary.markdown()}\n\n{_export_markdown(exports)}")
        publish_report(settings, "reconcile_flow")
    _logger().info("reconcile: %d newly complete, %d exported, %d still incomplete", len(summary.newly_complete),
                   len(summary.exported), len(summary.still_missing))
    return _finish(settings, {"summary": summary.to_json(), "plan": plan.to_json(), "export": exports}, exports)
