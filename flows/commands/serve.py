"""`iq-etl serve`: serve `pipeline_flow` (on an interval) and `reconcile_flow` (on a cron schedule)
from this one process, with `prefect.serve`, for setups without a Prefect work pool.

The process registers two deployments, `pipeline_flow/iq-etl-pipeline-served` and
`reconcile_flow/iq-etl-reconcile-served` (names distinct from prefect.yaml's work-pool deployments:
a served deployment must not inherit a work-pool deployment's pull steps), polls the Prefect API for
their scheduled (or manually triggered) runs and executes each run in a subprocess. `--limit 1`
(the default) runs one flow at a time in this process; runs from elsewhere (`iq-etl run` in another
terminal) are serialised by the warehouse run lock. Point PREFECT_API_URL at a `prefect server start` to see the runs in the UI; without it a
temporary local API lives as long as this process. Ctrl-C stops serving (schedules are paused).
Deployments with a work pool instead: see prefect.yaml.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from ingest.errors import IQEtlError
from ingest.settings import load_settings

PIPELINE_DEPLOYMENT = "iq-etl-pipeline-served"
RECONCILE_DEPLOYMENT = "iq-etl-reconcile-served"


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve pipeline_flow (interval) and reconcile_flow (cron) from one process",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline-interval", type=float, default=3600.0, metavar="SECONDS",
                   help="seconds between scheduled pipeline runs (default 3600; 0 = no schedule, manual runs only)")
    p.add_argument("--reconcile-cron", default="15 * * * *", metavar="CRON",
                   help="cron schedule of reconcile runs, UTC (default '15 * * * *': hourly; '' = no schedule)")
    p.add_argument("--pipeline-params", default="{}", metavar="JSON",
                   help="default parameters of pipeline_flow, e.g. '{\"slot_spec\": \"N\", \"targets\": [...]}'")
    p.add_argument("--reconcile-params", default="{}", metavar="JSON", help="default parameters of reconcile_flow")
    p.add_argument("--limit", type=int, default=1, help="flow runs executed at once by this process (default 1)")
    p.set_defaults(handler=run)


def _params(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise IQEtlError(f"{option}: not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise IQEtlError(f"{option}: expected a JSON object of flow parameters")
    return value


def build_deployments(pipeline_interval: float, reconcile_cron: str, pipeline_params: dict[str, Any],
                      reconcile_params: dict[str, Any]) -> list[Any]:
    """The two runner deployments (`prefect.serve` registers and runs them)."""
    from flows.pipeline import pipeline_flow, reconcile_flow

    for name, flow_obj, params in (("--pipeline-params", pipeline_flow, pipeline_params),
                                   ("--reconcile-params", reconcile_flow, reconcile_params)):
        unknown = sorted(set(params) - set(flow_obj.parameters.properties))
        if unknown:
            raise IQEtlError(f"{name}: unknown parameter(s) {', '.join(unknown)} of {flow_obj.name}")
    pipeline = pipeline_flow.to_deployment(
        name=PIPELINE_DEPLOYMENT, parameters=pipeline_params, tags=["iq-etl"],
        interval=dt.timedelta(seconds=pipeline_interval) if pipeline_interval > 0 else None,
        description="ingest → transform → export (served by iq-etl serve)",
    )
    reconcile = reconcile_flow.to_deployment(
        name=RECONCILE_DEPLOYMENT, parameters=reconcile_params, tags=["iq-etl"],
        cron=reconcile_cron or None, description="find missing chunks of incomplete uploads, re-export (iq-etl serve)",
    )
    return [pipeline, reconcile]


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise IQEtlError(f"--limit must be at least 1, got {args.limit}")
    if args.pipeline_interval < 0:
        raise IQEtlError("--pipeline-interval must be >= 0")
    settings = load_settings()
    from flows.commands.run import prepare_prefect

    prepare_prefect(settings)
    if args.reconcile_cron:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=args.reconcile_cron, timezone="UTC")
        except ValueError:
            raise IQEtlError(f"--reconcile-cron: {args.reconcile_cron!r} is not a valid cron expression") from None
    deployments = build_deployments(args.pipeline_interval, args.reconcile_cron,
                                    _params(args.pipeline_params, "--pipeline-params"),
                                    _params(args.reconcile_params, "--reconcile-params"))
    from prefect import serve

    serve(*deployments, limit=args.limit)
    return 0
