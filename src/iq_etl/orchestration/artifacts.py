"""Prefect artifacts of the coverage report, published by pipeline_flow and reconcile_flow next to
the markdown status artifact (flows.STATUS_ARTIFACT_KEY), so that the report's key figures are in
the Prefect UI itself (a file:// link opens nothing in a browser on another machine):

- a markdown artifact (key `iq-etl-report`): the lag (tip, covered to, behind by), coverage by source,
  uploads by status and generation, deliveries per target, and this run's figures;
- table artifacts: the incomplete uploads, worst first (`iq-etl-incomplete-uploads`), coverage by
  source (`iq-etl-coverage`) and deliveries per target (`iq-etl-deliveries`).

The full page is still written under `<iq-etl home>/report/index.html` (named in the markdown, for
whoever is on that machine; `iq-etl report` writes it anywhere). The report is secondary to the run:
if writing or publishing it fails, the flow logs a WARNING (and the task shows Failed in the UI) but
the run's own outcome does not change.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from iq_etl.settings import Settings

if TYPE_CHECKING:
    from iq_etl.orchestration.results import PipelineResult

log = logging.getLogger(__name__)

INCOMPLETE_ARTIFACT_KEY = "iq-etl-incomplete-uploads"
REPORT_ARTIFACT_KEY = "iq-etl-report"
COVERAGE_ARTIFACT_KEY = "iq-etl-coverage"
DELIVERIES_ARTIFACT_KEY = "iq-etl-deliveries"
TABLE_COLUMNS = ("upload_key", "generation", "status", "present", "expected", "missing", "missing_ranges",
                 "rescan_slots", "reason")


def incomplete_table(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the table artifact: one per incomplete upload shown in the report (plain values)."""
    return [{column: ("" if row.get(column) is None else row.get(column)) for column in TABLE_COLUMNS}
            for row in data["incomplete"]["rows"]]


def coverage_table(data: dict[str, Any], newest: dict[str, int]) -> list[dict[str, Any]]:
    """One row per scan scope in the ledger (source, programs, account filter): distinct slots done,
    sub-ranges, and the newest slot that source reached for the configured programs."""
    return [{"source": s["source"], "programs": len(s["program_ids"]) if s["known"] else "unknown",
             "accounts": ", ".join(s["session_pdas"]) or "every account", "sub-ranges": s["subranges"],
             "slots": s["slots"], "newest slot": newest.get(s["source"], "")}
            for s in data["scan"]["scopes"]]


def deliveries_table(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"target": t["target"], "delivered": t["delivered"], "failed": t["failed"], "refused": t["refused"],
             "complete, never tried": "" if t["never_tried"] is None else t["never_tried"],
             "last attempt": t["last_attempt_at"]} for t in data["deliveries"]["targets"]]


def _table(rows: list[dict[str, Any]], empty: str) -> list[str]:
    if not rows:
        return [empty]
    columns = list(rows[0])
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(r[c]).replace("|", "/") for c in columns) + " |" for r in rows)]


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "unknown (no block time)"
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def report_markdown(data: dict[str, Any], newest: dict[str, int], title: str, page: str,
                    result: PipelineResult | None = None) -> str:
    """The report's key figures as one markdown document (the `iq-etl-report` artifact)."""
    lines = [f"# Coverage report after {title}", "",
             f"Warehouse `{data['warehouse']}`, generated {data['generated_at']}.", "", "## Lag", ""]
    lag = data["history"]["lag"]
    if result is not None and result.follow is not None:
        f = result.follow
        lines.append(f"- this run: tip {f.tip_slot}, covered to {f.frontier_slot if f.frontier_slot is not None else '-'}"
                     f", behind by **{f.lag_slots:,} slots** ({_duration(f.lag_seconds)})")
    elif lag:
        lines.append(f"- as `{lag['command']}` saw it at {lag['seen_at']}: tip {lag['tip_slot']}, covered to "
                     f"{lag['frontier_slot'] if lag['frontier_slot'] is not None else '-'}, behind by **"
                     f"{'?' if lag['lag_slots'] is None else format(lag['lag_slots'], ',')} slots** "
                     f"({_duration(lag['lag_seconds'])})")
    else:
        lines.append("- no run has looked at the chain tip yet (`iq-etl follow`, or the pipeline's default source)")
    if result is not None:
        lines += ["", "## This run", "",
                  f"- slots covered: {result.slots_covered:,}; rows written: {result.rows_written:,}",
                  f"- deliveries: {sum(e.delivered for e in result.export)} delivered, "
                  f"{sum(e.failed for e in result.export)} failed, {sum(e.refused for e in result.export)} refused"]
    lines += ["", "## Coverage by source", "", *_table(coverage_table(data, newest), "Nothing scanned yet."),
              "", "## Uploads by status and generation", ""]
    lines += _table([{"status": r["status"], "generation": r["generation"], "uploads": r["uploads"],
                      "chunks present": r["chunks_present"], "chunks missing": r["chunks_missing"]}
                     for r in data["by_status_generation"]["rows"]], "No uploads (or the models are not built yet).")
    incomplete = data["incomplete"]
    lines += ["", f"Incomplete uploads: **{incomplete['total']}** (the worst {incomplete['shown']}: table artifact "
              f"`{INCOMPLETE_ARTIFACT_KEY}`).", "", "## Deliveries by target", ""]
    lines += _table(deliveries_table(data), "No exports yet.")
    lines += ["", f"The full page (scan runs and gaps per epoch, chunk maps, run history): `{page}` on the machine "
              "that ran the flow, or `iq-etl report --out DIR`."]
    return "\n".join(lines)


@task(name="publish-report", cache_policy=NO_CACHE)
def report_artifacts_task(settings: Settings, title: str, result: PipelineResult | None = None) -> dict[str, Any]:
    """Write the coverage report and publish its key tables as artifacts."""
    from iq_etl.report import default_report_dir, write_report
    from iq_etl.warehouse.client import get_client
    from iq_etl.warehouse.scan_ledger import newest_by_source

    client = get_client(settings)
    written = write_report(client, default_report_dir(settings), settings=settings)
    data = written.data
    newest = newest_by_source(client, settings.program_ids) if data["scan"]["scopes"] else {}
    incomplete = data["incomplete"]
    rows = incomplete_table(data)
    shown = f"the {len(rows)} worst of {incomplete['total']}" if incomplete["total"] > len(rows) else "all"
    create_markdown_artifact(markdown=report_markdown(data, newest, title, str(written.path), result),
                             key=REPORT_ARTIFACT_KEY, description=f"iq-etl coverage report after {title}: lag, "
                             "coverage by source, uploads by status, deliveries")
    create_table_artifact(table=rows, key=INCOMPLETE_ARTIFACT_KEY,
                          description=f"Incomplete uploads after {title} ({shown}; worst first)")
    create_table_artifact(table=coverage_table(data, newest), key=COVERAGE_ARTIFACT_KEY,
                          description=f"Scan coverage by source after {title} (iq.scan_ranges, done)")
    create_table_artifact(table=deliveries_table(data), key=DELIVERIES_ARTIFACT_KEY,
                          description=f"Deliveries per target after {title} (iq.exports, dry runs left out)")
    return {"path": str(written.path), "incomplete": incomplete["total"]}


def publish_report(settings: Settings, title: str, result: PipelineResult | None = None) -> dict[str, Any] | None:
    """`report_artifacts_task`, never failing the flow that calls it."""
    try:
        return report_artifacts_task(settings, title, result)
    except Exception as exc:  # noqa: BLE001 - the report is secondary: say so, keep the run's outcome
        try:
            logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
        except Exception:  # noqa: BLE001 - outside a run
            logger = log
        logger.warning("coverage report not published: %s: %s", type(exc).__name__, exc)
        return None
