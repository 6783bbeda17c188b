"""`iq-etl serve`: serve `pipeline_flow` (on an interval) and `reconcile_flow` (on a cron schedule)
from this one process, with `prefect.serve`, for setups without a Prefect work pool.

The process registers two deployments, `pipeline_flow/iq-etl-pipeline-served` and
`reconcile_flow/iq-etl-reconcile-served` (names distinct from prefect.yaml's work-pool deployments:
a served deployment must not inherit a work-pool deployment's pull steps), polls the Prefect API for
their scheduled (or manually triggered) runs and executes each run in a subprocess. `--limit 1`
(the default) runs one flow at a time in this process; runs from elsewhere (`iq-etl run` in another
terminal) are serialised by the warehouse run lock.

Schedules need a real Prefect server (its scheduler service creates the runs; Prefect's temporary
API has none). With PREFECT_API_URL set, that server is used. Without it, this command starts one
on loopback (`prefect server start --host 127.0.0.1 --port 4200`, state and log under
IQ_ETL_HOME/prefect, UI at http://127.0.0.1:4200) and stops it on exit; a server already answering
on that port is reused. Ctrl-C stops serving (schedules are paused). Deployments with a work pool
instead: see prefect.yaml.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings

log = logging.getLogger(__name__)

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
                   help="default parameters of pipeline_flow, e.g. '{\"slot_spec\": \"N\", \"export\": {\"targets\": [...]}}' (orchestration/params.py)")
    p.add_argument("--reconcile-params", default="{}", metavar="JSON", help="default parameters of reconcile_flow")
    p.add_argument("--limit", type=int, default=1, help="flow runs executed at once by this process (default 1)")
    p.add_argument("--server-port", type=int, default=4200,
                   help="without PREFECT_API_URL: port of the local Prefect server started on 127.0.0.1 (default 4200)")
    p.set_defaults(handler=run)


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def local_prefect_server(port: int, home: Path, startup_timeout_s: float = 180.0) -> Iterator[str]:
    """A `prefect server start` on 127.0.0.1:`port` for as long as the context lasts; yields its API URL.
    A server already answering there is used as it is (and left running)."""
    api = f"http://127.0.0.1:{port}/api"
    if _healthy(api):
        log.info("using the Prefect server already running at %s", api)
        yield api
        return
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    with open(log_path, "ab") as out:
        from iq_etl.orchestration.shutdown import preexec_die_with_parent

        # Its own session (a terminal's Ctrl-C stops `serve`, which then stops the server), and SIGKILLed
        # with this process: nothing outlives `iq-etl serve`, nothing else holds its stdout.
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec_die_with_parent())
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(api):
            if proc.poll() is not None:
                raise IQEtlError(f"the local Prefect server on port {port} exited with {proc.returncode} "
                                 f"(port in use? try --server-port); see {log_path}")
            if time.monotonic() > deadline:
                raise IQEtlError(f"the local Prefect server did not answer on {api} within {startup_timeout_s:.0f}s; "
                                 f"see {log_path}")
            time.sleep(0.5)
        print(f"Prefect server (UI and API): http://127.0.0.1:{port}  (log: {log_path})", flush=True)
        yield api
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _params(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise IQEtlError(f"{option}: not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise IQEtlError(f"{option}: expected a JSON object of flow parameters")
    return value


def check_params(pipeline_params: dict[str, Any], reconcile_params: dict[str, Any]) -> None:
    """Reject parameters the flows do not have (a typo would otherwise fail every scheduled run)."""
    from iq_etl.orchestration.flows import pipeline_flow, reconcile_flow

    for name, flow_obj, params in (("--pipeline-params", pipeline_flow, pipeline_params),
                                   ("--reconcile-params", reconcile_flow, reconcile_params)):
        unknown = sorted(set(params) - set(flow_obj.parameters.properties))
        if unknown:
            raise IQEtlError(f"{name}: unknown parameter(s) {', '.join(unknown)} of {flow_obj.name}")


def build_deployments(pipeline_interval: float, reconcile_cron: str, pipeline_params: dict[str, Any],
                      reconcile_params: dict[str, Any]) -> list[Any]:
    """The two runner deployments (`prefect.serve` registers and runs them)."""
    from iq_etl.orchestration.flows import pipeline_flow, reconcile_flow

    check_params(pipeline_params, reconcile_params)
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
    if not 0 < args.server_port < 65536:
        raise IQEtlError(f"--server-port {args.server_port} is not a TCP port")
    settings = load_settings()
    from iq_etl.cli.flow_commands import prepare_prefect

    prepare_prefect(settings)
    if args.reconcile_cron:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=args.reconcile_cron, timezone="UTC")
        except ValueError:
            raise IQEtlError(f"--reconcile-cron: {args.reconcile_cron!r} is not a valid cron expression") from None
    pipeline_params = _params(args.pipeline_params, "--pipeline-params")
    reconcile_params = _params(args.reconcile_params, "--reconcile-params")
    check_params(pipeline_params, reconcile_params)
    with contextlib.ExitStack() as stack:
        if not os.environ.get("PREFECT_API_URL"):
            from prefect.settings import PREFECT_API_URL, temporary_settings

            api = stack.enter_context(local_prefect_server(args.server_port, Path(os.environ["PREFECT_HOME"])))
            # This process's Prefect settings were read at import; flow-run subprocesses read the env.
            os.environ["PREFECT_API_URL"] = api
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api}))
        deployments = build_deployments(args.pipeline_interval, args.reconcile_cron, pipeline_params,
                                        reconcile_params)
        from prefect import serve

        serve(*deployments, limit=args.limit)
    return 0
