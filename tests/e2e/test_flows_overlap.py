"""Two overlapping runs on one embedded warehouse: `iq-etl run` (pipeline_flow) and, while it holds the
warehouse, `iq-etl reconcile` (what a scheduled reconcile does). Real processes, a shared real Prefect
API. Both complete, one after the other: no WarehouseBusy, and no task of the second run starts
before the last task of the first has ended."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.prefect import build_devchain, prefect_api, subprocess_env  # noqa: F401 - fixture

BIN = Path(sys.executable).parent


def _holder(lock: Path) -> str:
    try:
        return json.loads(lock.read_text() or "{}").get("holder", "")
    except (OSError, ValueError):
        return ""


def _task_runs(flow_run_ids: list) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))


def _flow_runs() -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_runs()


def test_reconcile_started_during_a_pipeline_run_waits_and_completes(tmp_path, prefect_api):  # noqa: F811
    from prefect.settings import PREFECT_API_URL

    from iq_etl.devchain.chain import car_template

    chain_dir, manifest = build_devchain(tmp_path)
    env = subprocess_env(tmp_path, PREFECT_API_URL=PREFECT_API_URL.value(), IQ_CAR_URL=car_template(chain_dir))
    extra = [a for pid in manifest.extra_program_ids for a in ("--program-id", pid)]
    exports = (tmp_path / "exports").as_uri()
    lock = tmp_path / "warehouse.run.lock"

    pipeline = subprocess.Popen(
        [str(BIN / "iq-etl"), "run", f"{manifest.first_slot}:{manifest.last_slot}", "--target", exports, *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _holder(lock) != "pipeline_flow":
        assert pipeline.poll() is None, pipeline.communicate()
        assert time.monotonic() < deadline, "the pipeline run never took the warehouse"
        time.sleep(0.1)
    reconcile = subprocess.Popen(
        [str(BIN / "iq-etl"), "reconcile", "--target", exports, "--lock-timeout", "600", *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p_out, p_err = pipeline.communicate(timeout=900)
    r_out, r_err = reconcile.communicate(timeout=900)
    assert pipeline.returncode == 0, p_out[-3000:] + p_err[-3000:]
    assert reconcile.returncode == 0, r_out[-3000:] + r_err[-3000:]
    assert "WarehouseBusy" not in p_err + r_err and "in use by another process" not in p_err + r_err
    assert "waiting for the warehouse run lock" in r_err and "pipeline_flow" in r_err

    by_flow: dict[str, list] = {}
    for run in _flow_runs():
        if run.state and run.state.is_completed() and (run.parameters.get("export") or {}).get("targets") == [exports]:
            by_flow.setdefault(str(run.flow_id), []).append(run)
    assert len(by_flow) == 2 and all(len(v) == 1 for v in by_flow.values()), by_flow
    (first,), (second,) = sorted(by_flow.values(), key=lambda v: v[0].start_time)
    first_tasks = _task_runs([first.id])
    second_tasks = _task_runs([second.id])
    assert first_tasks and second_tasks
    assert max(t.end_time for t in first_tasks) <= min(t.start_time for t in second_tasks)
    # The reconcile, run after the pipeline, found the whole chain already exported.
    assert "exported: 0" in r_out
