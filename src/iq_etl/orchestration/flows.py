"""Prefect 3 flows: ingest → transform (dbt build) → export, and scheduled reconciliation.

Flows (each one is also a Prefect deployment in `prefect.yaml` and served by `iq-etl serve`):

- `ingest_flow`     a slot spec and the ingest options (`IngestParams`: source, CAR/RPC URLs, session PDAs...)
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

Parameters are typed (iq_etl.orchestration.params): the ingest options are one pydantic model
(`ingest: IngestParams`), the export options another (`export: ExportParams`); Prefect validates them
before a run and shows them as forms; `params_version` refuses a deployment of another shape. Results
are typed too (iq_etl.orchestration.results; the stages' own dataclasses).

Settings (DSN, tokens, program ids) come from the environment / `.env` of the process running the
flow, never from flow parameters: Prefect stores parameters in its database and shows them in the UI.
Each run ends by publishing a markdown artifact (key `iq-etl-status`) with the `iq-etl status` table;
pipeline and reconcile runs also write the coverage report and publish a table artifact of the
incomplete uploads and a link artifact to the report (orchestration/artifacts.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from iq_etl.errors import DeliveryFailed
from iq_etl.ingest.request import FOLLOW
from iq_etl.orchestration.artifacts import publish_report
from iq_etl.orchestration.locking import DEFAULT_TIMEOUT_S, GLOBAL_LIMIT_NAME, warehouse_session
from iq_etl.orchestration.params import (
    EXPORT,
    INGEST,
    PARAMS_VERSION,
    ExportParams,
    IngestParams,
    SlotSpec,
    check_params_version,
)
from iq_etl.orchestration.results import PipelineResult, ReconcileResult, deliveries_failed
from iq_etl.orchestration.run_context import flow_settings as _settings
from iq_etl.orchestration.run_context import run_id as _run_id
from iq_etl.orchestration.run_context import run_logger as _logger
from iq_etl.orchestration.run_context import spec_text
from iq_etl.orchestration.run_context import worth_retrying as _worth_retrying
from iq_etl.settings import Settings

if TYPE_CHECKING:  # the stages are imported by the tasks that run them
    from iq_etl.export.runner import ExportSummary
    from iq_etl.ingest.follow import FollowResult
    from iq_etl.ingest.run import IngestSummary
    from iq_etl.transform.runner import DbtResult

STATUS_ARTIFACT_KEY = "iq-etl-status"


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
def ingest_task(settings: Settings, params: IngestParams, slot_spec: str | None = None,
                ranges: Sequence[tuple[int, int]] = (), source: str | None = None,
                progress: bool = False) -> IngestSummary:
    """Idempotent: batches carry content dedup tokens and `resume` skips sub-ranges already done.
    With `params.dask_address` (or IQ_DASK_ADDRESS) or `params.dask_workers`, sub-ranges are Prefect tasks
    on a Dask cluster (iq_etl.orchestration.dask_fanout.DaskFanout) instead of `threads` local workers.
    `source` overrides the params' (reconcile's searches, a following pipeline given a slot spec)."""
    import contextlib

    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration.dask_fanout import dask_fanout

    fanout = dask_fanout(settings, params.dask_address, params.dask_workers)
    if fanout is not None:
        _logger().info("ingest: sub-ranges as tasks on %s", fanout.describe())
    request = params.request(slot_spec, ranges=ranges, source=source, run_id=_run_id().replace("-", "")[:12] or None,
                             progress=progress, on_progress=_progress_artifact())
    with fanout if fanout is not None else contextlib.nullcontext():
        summary = run_ingest(settings, request, fanout=fanout)
    _logger().info("ingest into %s: %s transactions seen, %s IQ matches, %s rows written, %s undecoded in %.1fs",
                   settings.warehouse_name, summary.transactions_seen, summary.matches, summary.rows_written,
                   summary.undecoded, summary.seconds)
    if summary.incomplete:
        _logger().warning("ingest: some sub-ranges did not finish; the next run resumes them")
    return summary


def transform_line(out: DbtResult) -> str:
    """`transform: dbt build ok in 7.4s (17 success, 60 pass)`: a line for people, not a dict repr."""
    nodes = ", ".join(f"{n} {status}" for status, n in sorted(out.counts().items())) or "no nodes"
    verdict = "ok" if out.success else "FAILED"
    line = f"transform: dbt {out.command} {verdict} in {out.elapsed_s:.1f}s ({nodes})"
    return f"{line}; every model rebuilt: {out.full_refresh_reason}" if out.full_refresh_reason else line


def export_line(out: ExportSummary) -> str:
    """`export to URL: 40 of 40 delivered, 0 failed, 0 refused; 40 attempts, 99,875 bytes`."""
    if out.dry_run:
        return f"export to {out.target} (dry run): {out.would_send} would be sent"
    return (f"export to {out.target}: {out.delivered} of {out.selected} delivered, {out.failed} failed, "
            f"{out.refused} refused; {out.attempts} attempts, {out.bytes_delivered:,} bytes")


@task(name="transform", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def transform_task(settings: Settings, select: str | None = None, full_refresh: bool = False,
                   full_tests: bool = False) -> DbtResult:
    """`dbt build`; idempotent (tables are rebuilt or merged incrementally on their keys). Data tests
    check the groups the build recomputed, or everything with `full_tests` / `full_refresh`."""
    from iq_etl.transform.runner import run_dbt

    result = run_dbt(settings, select=select, full_refresh=full_refresh, quiet=True, full_tests=full_tests)
    _logger().info("%s", transform_line(result))
    return result


@task(name="export", retries=2, retry_delay_seconds=10, retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE)
def export_task(settings: Settings, target: str | None, params: ExportParams = EXPORT,
                limit: int | None = None) -> ExportSummary:
    """Idempotent: only uploads without a delivered row for the target are sent, with a stable
    Idempotency-Key, so a retried task never delivers twice."""
    from iq_etl.export.runner import export_ready
    from iq_etl.warehouse.client import get_client

    kwargs: dict[str, Any] = {"target": target, "dry_run": params.dry_run, "limit": limit}
    if params.concurrency:
        kwargs["concurrency"] = params.concurrency
    summary = export_ready(settings, get_client(settings), **kwargs)
    _logger().info("%s", export_line(summary))
    return summary


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


def _export_all(settings: Settings, params: ExportParams, limit: int | None = None) -> list[ExportSummary]:
    return [export_task(settings, target, params, limit=limit) for target in _targets(params.targets)]


def _export_markdown(exported: Sequence[ExportSummary]) -> str:
    """This run's deliveries per target, for the status artifact."""
    if not exported:
        return ""
    lines = ["## This run's exports", "", "| target | waiting | delivered | failed | refused | attempts |",
             "|---|---|---|---|---|---|"]
    for e in exported:
        lines.append(f"| {e.target} | {e.selected} | {e.delivered}{' (dry run)' if e.dry_run else ''} | {e.failed} "
                     f"| {e.refused} | {e.attempts} |")
    for e in exported:
        for f in e.failures[:10]:   # the export runner's failure rows (plain dicts from its ledger)
            lines.append(f"- {e.target}: `{f.get('upload_key', f.get('session_key', ''))}` "
                         f"{f.get('status', '')}: {f.get('error', f.get('reason', ''))}")
    return "\n".join(lines)


def _delivery_verdict(exported: Sequence[ExportSummary]) -> str | None:
    """One line when an export failed or refused deliveries (dry runs never fail), else None."""
    bad = [e for e in exported if not e.dry_run and (e.failed or e.refused or e.not_attempted)]
    if not bad:
        return None
    return "; ".join(f"export to {e.target}: {e.delivered} of {e.selected} delivered, {e.failed} failed, "
                     f"{e.refused} refused ({e.attempts} attempts)"
                     + (f", {e.not_attempted} not attempted: {e.breaker}" if e.not_attempted else "")
                     for e in bad)


def _finish(settings: Settings, result: Any, exported: Sequence[ExportSummary]) -> Any:
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
def ingest_flow(slot_spec: SlotSpec = None, ingest: IngestParams = INGEST, lock_timeout_s: float = DEFAULT_TIMEOUT_S,
                publish_status: bool = True, progress: bool = False,
                params_version: int = PARAMS_VERSION) -> IngestSummary:
    """Ingest a slot range (`S:E`, epoch `N`, epochs `A-B`) or the window discovered for session PDAs.
    `ingest.dask_address` (or IQ_DASK_ADDRESS) / `ingest.dask_workers`: sub-ranges as tasks on a Dask cluster."""
    check_params_version("ingest_flow", params_version)
    settings = _settings()
    with warehouse_session(settings, "ingest_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        result = ingest_task(settings, ingest, spec_text(slot_spec), progress=progress)
        if publish_status:
            status_artifact_task(settings, "ingest_flow")
    return result


@flow(name="transform_flow", log_prints=True)
def transform_flow(select: str | None = None, full_refresh: bool = False,
                   lock_timeout_s: float = DEFAULT_TIMEOUT_S, full_tests: bool = False,
                   params_version: int = PARAMS_VERSION) -> DbtResult:
    """`dbt build` (optionally `--select`, `--full-refresh`, `--full-tests`: every data test over
    everything, the nightly deployment) and publish the status artifact."""
    check_params_version("transform_flow", params_version)
    settings = _settings()
    with warehouse_session(settings, "transform_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        result = transform_task(settings, select=select, full_refresh=full_refresh, full_tests=full_tests)
        status_artifact_task(settings, "transform_flow")
    return result


@flow(name="export_flow", log_prints=True)
def export_flow(export: ExportParams = EXPORT, limit: int | None = None, lock_timeout_s: float = DEFAULT_TIMEOUT_S,
                params_version: int = PARAMS_VERSION) -> list[ExportSummary]:
    """Export complete uploads not yet delivered to each target (default: the configured reader backend)."""
    check_params_version("export_flow", params_version)
    settings = _settings()
    with warehouse_session(settings, "export_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        results = _export_all(settings, export, limit)
        status_artifact_task(settings, "export_flow", extra_markdown=_export_markdown(results))
    return _finish(settings, results, results)


@task(name="follow", cache_policy=NO_CACHE)
def follow_task(settings: Settings, params: IngestParams, progress: bool = False) -> FollowResult:
    """One round of following the chain (iq_etl.ingest.follow): archived epochs from CAR, the slots
    past the archive's edge over RPC, bounded; returns the round's figures (tip, frontier, lag)."""
    from iq_etl.ingest.follow import follow_chain
    from iq_etl.warehouse.client import get_client

    result = follow_chain(settings, get_client(settings), car_url=params.car_url, rpc_url=params.rpc_url,
                          max_epochs=params.max_epochs, max_rpc_slots=params.max_rpc_slots,
                          extra_program_ids=tuple(params.extra_program_ids or ()), progress=progress)
    _logger().info("%s", result.line())
    return result


def _record_run(settings: Settings, command: str, started: Any, result: PipelineResult, verdict: str | None) -> None:
    """One row in iq.runs for this flow run (never failing the run: the history is secondary)."""
    from iq_etl.warehouse.client import get_client
    from iq_etl.warehouse.runs import RunRecord, complete_uploads, record_run

    try:
        client = get_client(settings)
        follow = result.follow
        record_run(client, RunRecord(
            run_id=_run_id() or started.strftime(f"{command}-%Y%m%dT%H%M%S"), flow_run_id=_run_id() or "",
            command=command, started_at=started, status="failed" if verdict else "ok",
            slots_covered=result.slots_covered, rows_written=result.rows_written,
            uploads_complete=complete_uploads(client), uploads_delivered=sum(e.delivered for e in result.export),
            errors=deliveries_failed(result.export) + (1 if verdict else 0),
            message=verdict or (follow.line() if follow else ""),
            tip_slot=follow.tip_slot if follow else None, tip_time=follow.tip_time if follow else None,
            frontier_slot=follow.frontier_slot if follow else None,
            frontier_time=follow.frontier_time if follow else None, warehouse=settings.warehouse_name))
    except Exception as exc:  # noqa: BLE001 - say so, keep the run's own outcome
        _logger().warning("run history not recorded: %s: %s", type(exc).__name__, exc)


def _nothing_to_ingest(settings: Settings, slot_spec: str | None, params: IngestParams) -> bool:
    """A scheduled pipeline without a slot spec and without session PDAs only transforms and exports
    (ingest may be done elsewhere, e.g. by workers each ingesting a slot range) -- unless its source
    is rpc-signatures, which then tails every IQ program from the cursors in iq.cursors."""
    if params.source == "rpc-signatures":
        return False
    return not slot_spec and not params.session_pdas and not settings.session_pdas


@flow(name="pipeline_flow", log_prints=True)
def pipeline_flow(slot_spec: SlotSpec = None, ingest: IngestParams = INGEST, export: ExportParams = EXPORT,
                  full_refresh: bool = False, lock_timeout_s: float = DEFAULT_TIMEOUT_S, progress: bool = False,
                  params_version: int = PARAMS_VERSION) -> PipelineResult:
    """Ingest → transform → export in one run, then publish the status artifact.

    `ingest.source` "follow" (or null, the default) without a slot spec: one round of following the chain
    (iq_etl.ingest.follow: archived epochs from CAR, at most `ingest.max_epochs`; the slots past the
    archive's edge over RPC, at most `ingest.max_rpc_slots`), and the run ends Failed when the lag is
    above IQ_MAX_LAG; with a slot spec, that spec is read from CAR. Every run is recorded in iq.runs.

    With another source and without `slot_spec` the window is discovered for `ingest.session_pdas` (or
    IQ_SESSION_PDA_LIST); with neither, source rpc-signatures tails the IQ programs (live tail from
    stored cursors) and any other source skips ingest: the run transforms and exports what the
    warehouse holds."""
    import datetime as dt

    check_params_version("pipeline_flow", params_version)
    spec = spec_text(slot_spec)
    settings = _settings()
    started = dt.datetime.now(dt.timezone.utc)
    followed: FollowResult | None = None
    ingested: IngestSummary | None = None
    with warehouse_session(settings, "pipeline_flow", lock_timeout_s, GLOBAL_LIMIT_NAME):
        if ingest.source in (None, FOLLOW) and not spec:
            followed = follow_task(settings, ingest, progress=progress)
        elif _nothing_to_ingest(settings, spec, ingest):
            _logger().info("ingest skipped: no slot spec and no session PDAs")
        else:
            if not ingest.session_pdas and settings.session_pdas:
                ingest = ingest.model_copy(update={"session_pdas": list(settings.session_pdas)})
            ingested = ingest_task(settings, ingest, spec, progress=progress)
        transformed = transform_task(settings, full_refresh=full_refresh)
        exported = _export_all(settings, export)
        report = status_artifact_task(settings, "pipeline_flow", extra_markdown=_export_markdown(exported))
        result = PipelineResult(transform=transformed, ingest=ingested, follow=followed, export=exported,
                                status=report)
        publish_report(settings, "pipeline_flow", result)
        lag = _lag_verdict(settings, followed)
        # inside the session: the warehouse is still this run's (and its client is closed with it)
        _record_run(settings, "pipeline_flow", started, result, _delivery_verdict(exported) or lag)
    if lag:
        _logger().error("%s", lag)
        return Failed(message=lag, data=DeliveryFailed(lag, result))
    return _finish(settings, result, exported)


def _lag_verdict(settings: Settings, followed: FollowResult | None) -> str | None:
    from iq_etl.ingest.follow import lag_verdict

    return lag_verdict(followed.lag_slots, settings.max_lag) if followed else None


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
def reconcile_flow(discovery: str = "auto", window_source: str = "car", initial_padding: int = 2_000, growth: int = 4,
                   max_padding: int = 432_000, max_scan_slots: int = 2_000_000, max_uploads: int = 1_000,
                   ingest: IngestParams = INGEST, export: ExportParams = EXPORT,
                   lock_timeout_s: float = DEFAULT_TIMEOUT_S, params_version: int = PARAMS_VERSION) -> ReconcileResult:
    """Search again for the chunks of incomplete uploads, re-transform, export what became complete
    and retry failed exports; returns (and publishes) a summary of what changed.

    discovery: `auto` (RPC discovery on session accounts when an RPC URL is configured, widening
    slot windows otherwise), `rpc` or `window`. See reconcile/plan.py for the window rules. Of `ingest`,
    the URLs, `max_signature_pages`, `extra_program_ids`, `threads` and the Dask options count: the
    source and the accounts of each search are the plan's."""
    from iq_etl.errors import IQEtlError
    from iq_etl.reconcile import plan as rc
    from iq_etl.reconcile import store
    from iq_etl.warehouse.catalog import table_exists
    check_params_version("reconcile_flow", params_version)
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
    use_rpc = discovery == "rpc" or (discovery == "auto" and bool(ingest.rpc_url or settings.rpc_url_configured))
    run_id = _run_id() or "reconcile"
    with warehouse_session(settings, "reconcile_flow", lock_timeout_s, GLOBAL_LIMIT_NAME) as client:
        if not table_exists(client, store.COMPLETENESS):
            transform_task(settings)
        before = store.read_statuses(client)
        plan = plan_reconcile_task(settings, policy, use_rpc, window_source, ingest.car_url,
                                   tuple(ingest.extra_program_ids or ()))
        rows_written, unreadable, partly_read = 0, [], False
        # One ingest per search, so that one unreadable range (an archive that ends early, an RPC
        # error) is reported and the others still count. Rows read before a failure are kept.
        searches: list[tuple[str, IngestParams, list[tuple[int, int]]]] = []
        if plan.session_pdas:
            searches.append((f"RPC discovery of {len(plan.session_pdas)} session(s)",
                             ingest.model_copy(update={"source": "rpc-signatures", "slot_padding": 0,
                                                       "session_pdas": list(plan.session_pdas)}), []))
        for first, last in plan.scan_ranges:
            searches.append((f"slots {first}:{last}", ingest.model_copy(update={"source": window_source,
                                                                                 "session_pdas": None}),
                             [(first, last)]))
        for what, params, ranges in searches:
            try:
                found = ingest_task(settings, params, ranges=ranges)
            except IQEtlError as exc:
                _logger().warning("reconcile: %s could not be read completely: %s", what, exc)
                unreadable.append({"search": what, "error": str(exc)[:500]})
                partly_read = True   # rows read before the failure were written: rebuild the models
                continue
            rows_written += found.rows_written
        store.write_states(client, plan, run_id)
        if rows_written or partly_read:
            transform_task(settings)
        exports = _export_all(settings, export)
        after = store.read_statuses(client)
        summary = rc.summarise(before, after, plan, rows_written,
                               store.delivered_in_runs(client, [e.run_id for e in exports if e.run_id]),
                               deliveries_failed(exports), unreadable)
        status_artifact_task(settings, "reconcile_flow",
                             extra_markdown=f"{summary.markdown()}\n\n{_export_markdown(exports)}")
        publish_report(settings, "reconcile_flow")
    _logger().info("reconcile: %d newly complete, %d exported, %d still incomplete", len(summary.newly_complete),
                   len(summary.exported), len(summary.still_missing))
    return _finish(settings, ReconcileResult(summary=summary, plan=plan, export=exports), exports)
