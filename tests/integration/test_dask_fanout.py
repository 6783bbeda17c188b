"""Ingest fan-out on a real Dask cluster through Prefect: a `dask scheduler` and two `dask worker` processes on
loopback (started with distributed's own CLI), a real Prefect API, the development chain's CAR files.

- ingest_flow with `dask_address` writes exactly the rows of a single-process ingest;
- one worker SIGKILLed mid-run: its sub-ranges run on the other worker, the rows are still the same,
  and every sub-range is recorded done once;
- the embedded warehouse is opened by the flow process only (workers hand their rows back)."""
from __future__ import annotations

import os
import signal

import pytest

from iq_etl.ingest.request import IngestParams
from tests.support.dask_cluster import start_cluster
from tests.support.prefect import build_devchain, flow_env, prefect_api, query  # noqa: F401 - fixtures

# Every column but the ones that name the run (run_id, ingested_at).
ROW_COLUMNS = ("slot, signature, tx_index, ix_index, inner_index, program_id, generation, kind, instruction, "
               "session_account, session_id, chunk_index, total_chunks, seq, payload, metadata, accounts, data, "
               "tx_status, source")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"), noise_tx_per_slot=6)


@pytest.fixture(scope="module")
def reference_rows(chain, tmp_path_factory):
    """The rows of a plain single-process ingest of the chain."""
    from iq_etl.devchain.chain import car_template
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    chain_dir, manifest = chain
    folder = tmp_path_factory.mktemp("reference")
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{folder / 'warehouse'}", "IQ_ETL_HOME": str(folder)},
                             dotenv=folder / "no.env")
    with wh.Warehouse(settings) as client:
        summary = run_ingest(settings, IngestRequest(
            slot_spec=f"{manifest.first_slot}:{manifest.last_slot}", car_url=car_template(chain_dir),
            extra_program_ids=tuple(manifest.extra_program_ids), threads=1), client=client)
        assert not summary.incomplete and summary.rows_written > 0
        return _rows(client)


def _rows(client) -> dict[str, list[tuple]]:
    return {
        "raw": client.query(f"SELECT {ROW_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY ALL").result_rows,
        "undecoded": client.query("SELECT slot, signature, ix_index, inner_index, program_id, data "
                                  "FROM iq.undecoded_instructions FINAL ORDER BY ALL").result_rows,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield c
    c.stop()


def _warehouse_rows(tmp_path) -> dict[str, list[tuple]]:
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'warehouse'}",
                              "IQ_ETL_HOME": str(tmp_path / "home")}, dotenv=tmp_path / "no.env")
    with wh.Warehouse(settings) as client:
        return _rows(client)


def test_ingest_flow_on_two_dask_workers_writes_the_rows_of_a_single_process_ingest(
        chain, reference_rows, cluster, tmp_path, monkeypatch, prefect_api):  # noqa: F811
    from iq_etl.devchain.chain import car_template
    from iq_etl.orchestration.flows import ingest_flow

    chain_dir, manifest = chain
    flow_env(monkeypatch, tmp_path)
    state = ingest_flow(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                        ingest=IngestParams(car_url=car_template(chain_dir), dask_address=cluster.address,
                                            extra_program_ids=list(manifest.extra_program_ids)),
                        publish_status=False, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert not result.incomplete and result.rows_written == len(reference_rows["raw"])
    assert result.remote_rows_written == 0   # embedded warehouse: the flow process wrote every row
    assert _warehouse_rows(tmp_path) == reference_rows
    # Both workers scanned (the scheduler spread the sub-ranges), neither opened the warehouse: no chDB
    # was loaded in them (a worker holding the folder would have made the flow's open fail anyway).
    for name in cluster.workers:
        assert "chdb" not in cluster.log(name).lower(), cluster.log(name)


# The kill test's flow lives at module level: Prefect sends the flow with every task's context, and
# the workers import it by reference (tests/support/dask_cluster.py puts the repository on their path).
# What the test wants killed is in this module-level dict, filled by the test in the flow's process.
_KILL: dict = {}


class KillWhenVictimReports:
    """Wraps the Dask fan-out: once the victim worker has delivered one sub-range, SIGKILL it."""

    def __init__(self, fanout):
        self.fanout = fanout
        self.writes_remotely = fanout.writes_remotely

    def run(self, job, todo):
        from iq_etl.ingest.fanout import SubrangeOutcome

        seen, killed, victim = _KILL["seen"], _KILL["killed"], _KILL["victim"]
        for sub, outcome in self.fanout.run(job, todo):
            if isinstance(outcome, SubrangeOutcome):
                seen.append((outcome.worker, sub.first_slot))
                if not killed and outcome.worker.endswith(f":{victim.pid}"):
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.append(len(seen))
            yield sub, outcome


def _ingest_with_kill(slot_spec: str, car_url: str, extra_program_ids: list[str], address: str) -> dict:
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration.backfill import DaskFanout
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings()
    with wh.Warehouse(settings) as client, DaskFanout(address=address) as fanout:
        return run_ingest(settings, IngestRequest(slot_spec=slot_spec, car_url=car_url,
                                                  extra_program_ids=tuple(extra_program_ids), subrange_slots=100),
                          client=client, fanout=KillWhenVictimReports(fanout)).to_json()


def test_a_worker_sigkilled_mid_run_loses_nothing(chain, reference_rows, tmp_path, monkeypatch,
                                                  prefect_api):  # noqa: F811
    """Sub-ranges of 100 slots (24 tasks) on a cluster of two workers of its own: when the first sub-range
    scanned by the worker `victim` comes back, it is SIGKILLed while it holds more. The flow still ends
    with the reference rows, every sub-range recorded done once, the tail scanned by the other worker."""
    from prefect import flow

    from iq_etl.devchain.chain import car_template

    chain_dir, manifest = chain
    flow_env(monkeypatch, tmp_path)
    cluster = start_cluster(tmp_path / "dask", workers=1)
    try:
        _kill_one_of_two(cluster, chain_dir, manifest, tmp_path, car_template, flow, reference_rows)
    finally:
        cluster.stop()


def _kill_one_of_two(cluster, chain_dir, manifest, tmp_path, car_template, flow, reference_rows) -> None:
    victim = cluster.start_worker("victim")
    cluster.wait_for_workers(len(cluster.workers))
    seen: list[tuple[str, int]] = []
    killed: list[int] = []
    _KILL.update(seen=seen, killed=killed, victim=victim)
    try:
        result = flow(name="dask-kill-test")(_ingest_with_kill)(
            f"{manifest.first_slot}:{manifest.last_slot}", car_template(chain_dir),
            list(manifest.extra_program_ids), cluster.address)
    finally:
        _KILL.clear()
        if victim.poll() is None:
            victim.kill()
        victim.wait(timeout=30)
        cluster.workers.pop("victim", None)
    assert killed, f"the victim worker never delivered a sub-range: {seen}"
    assert killed[0] < len(seen), "the victim was killed after the last sub-range: not mid-run"
    assert victim.returncode == -signal.SIGKILL
    after = {w for w, _ in seen[killed[0]:]}
    assert not any(w.endswith(f":{victim.pid}") for w in after), after
    assert not result["incomplete"]
    assert len(result["ranges"]) == len(seen) == -(-(manifest.last_slot - manifest.first_slot + 1) // 100)
    assert _warehouse_rows(tmp_path) == reference_rows
    (n_done,) = query(tmp_path, "SELECT count() FROM iq.scan_ranges FINAL WHERE status = 'done'")[0]
    assert n_done == len(seen)


@pytest.mark.remote
@pytest.mark.skipif(not os.environ.get("IQ_TEST_CLICKHOUSE_DSN"),
                    reason="IQ_TEST_CLICKHOUSE_DSN not set: no modern ClickHouse server can be installed here")
def test_remote_warehouse_tasks_insert_their_own_rows(chain, reference_rows, cluster, tmp_path, monkeypatch,
                                                      prefect_api):  # noqa: F811
    """With a remote DSN every Dask task inserts its rows with its own client; the flow only keeps the
    ledger. Same rows as the single-process ingest (read back with FINAL, this run's rows only)."""
    from iq_etl.devchain.chain import car_template
    from iq_etl.orchestration.flows import ingest_flow
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    chain_dir, manifest = chain
    flow_env(monkeypatch, tmp_path, IQ_CLICKHOUSE_DSN=os.environ["IQ_TEST_CLICKHOUSE_DSN"])
    wh.close_client()
    state = ingest_flow(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                        ingest=IngestParams(car_url=car_template(chain_dir), dask_address=cluster.address,
                                            extra_program_ids=list(manifest.extra_program_ids), resume=False),
                        publish_status=False, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result.remote_rows_written == result.rows_written == len(reference_rows["raw"])
    settings = load_settings({"IQ_CLICKHOUSE_DSN": os.environ["IQ_TEST_CLICKHOUSE_DSN"]}, dotenv=tmp_path / "none")
    try:
        client = wh.get_client(settings)
        raw = client.query(f"SELECT {ROW_COLUMNS} FROM iq.raw_instructions FINAL WHERE run_id = %(r)s ORDER BY ALL",
                           parameters={"r": result.run_id}).result_rows
    finally:
        wh.close_client()
    assert raw == reference_rows["raw"]


def test_subrange_task_runs_log_warnings_only():
    """Issue 26: one "Finished in state Completed()" line per sub-range task (217 for a mainnet epoch)
    is dropped; the same logger's warnings and errors, and every other task's lines, pass."""
    import logging

    from iq_etl.orchestration.dask_fanout import SUBRANGE_TASK, quiet_subrange_logs

    quiet_subrange_logs()
    quiet_subrange_logs()   # once per process
    logger = logging.getLogger("prefect.task_runs")
    assert len([f for f in logger.filters if type(f).__name__ == "_QuietSubranges"]) == 1

    def passes(level: int, task_name: str) -> bool:
        record = logger.makeRecord(logger.name, level, __file__, 1, "Finished in state Completed()", (), None,
                                   extra={"task_name": task_name})
        return bool(logger.filter(record))

    assert not passes(logging.INFO, SUBRANGE_TASK)
    assert passes(logging.WARNING, SUBRANGE_TASK) and passes(logging.ERROR, SUBRANGE_TASK)
    assert passes(logging.INFO, "ingest") and passes(logging.INFO, "transform")
