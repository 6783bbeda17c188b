"""Issue 26: follow the chain. A development chain over an epoch boundary; its "archive" serves the
first epoch only while its RPC server serves the whole chain. Rounds of `follow` read the archived
epoch from CAR and the rest over RPC, bounded per round; when the archive edge advances, nothing is
read twice; coverage ends continuous, rows equal one full ingest, the lag figures are right."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template
from iq_etl.ingest.follow import follow_chain
from iq_etl.ingest.request import IngestParams, IngestRequest
from iq_etl.ingest.run import run_ingest
from iq_etl.solana.slots import SlotRange, epoch_bounds
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.scan_ledger import covered_by_any_source
from tests.support.prefect import prefect_api  # noqa: F401 - fixture

FAST_RPC = {"rps": 0, "method_rps": 0, "concurrency": 8, "backoff_base": 0.01}
KEY = "slot, signature, ix_index, inner_index, program_id, kind, hex(payload), hex(data)"
EDGE = epoch_bounds(924).first_slot     # the chain starts 1,200 slots before it


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("follow-chain")
    build_chain(out, seed=26, sessions=40, noise_tx_per_slot=1, slots=2400, first_slot=EDGE - 1200)
    return out


def _settings(warehouses, manifest, name="warehouse"):
    return warehouses.settings(name, IQ_PROGRAM_ID=",".join(manifest.all_program_ids()))


def _archive(tmp_path, chain, epochs):
    root = tmp_path / "archive"
    for epoch in epochs:
        if not (root / str(epoch)).exists():
            shutil.copytree(chain / str(epoch), root / str(epoch))
    return car_template(root)


def _rows(client):
    return client.query(f"SELECT {KEY} FROM iq.raw_instructions FINAL ORDER BY {KEY}").result_rows


def test_follow_rounds_meet_without_a_hole_as_the_archive_edge_advances(tmp_path, warehouses, chain, manifest,
                                                                        rpc_url):
    first, tip = manifest.first_slot, manifest.last_slot
    # one full ingest of the chain, for the rows to compare with
    wh.close_client()
    full = _settings(warehouses, manifest, "full")
    try:
        run_ingest(full, IngestRequest(slot_spec=f"{first}:{tip}", car_url=car_template(chain)))
        expected = _rows(wh.get_client(full))
    finally:
        wh.close_client()
        warehouses.release("full")
    assert expected

    settings = _settings(warehouses, manifest, "w")
    car_url = _archive(tmp_path, chain, [923])     # the archive serves epoch 923 only
    wh.close_client()
    client = wh.get_client(settings)
    try:
        rpc_part = tip - EDGE + 1
        one = follow_chain(settings, client, car_url=car_url, rpc_url=rpc_url, start_slot=first, max_epochs=1,
                           max_rpc_slots=rpc_part - 300, rpc_options=FAST_RPC)
        assert one.tip_slot == tip and one.archive_epochs == [923] and one.unarchived_epochs == [924]
        assert one.car_ranges == [(first, EDGE - 1)] and one.rpc_ranges == [(EDGE, tip - 300)]
        assert one.left_rpc_slots == 300 and one.frontier_slot == tip - 300 and one.lag_slots == 300
        assert one.lag_seconds is not None and one.lag_seconds > 0

        two = follow_chain(settings, client, car_url=car_url, rpc_url=rpc_url, start_slot=first,
                           max_rpc_slots=rpc_part, rpc_options=FAST_RPC)
        assert two.car_ranges == [] and two.rpc_ranges == [(tip - 299, tip)]
        assert two.frontier_slot == tip and two.lag_slots == 0 and two.lag_seconds == 0

        # The archive publishes epoch 924: its slots were covered over RPC, nothing is read again.
        car_url = _archive(tmp_path, chain, [923, 924])
        three = follow_chain(settings, client, car_url=car_url, rpc_url=rpc_url, start_slot=first,
                             rpc_options=FAST_RPC)
        assert three.car_ranges == [] and three.rpc_ranges == [] and three.rows_written == 0

        assert covered_by_any_source(client, settings.program_ids) == [SlotRange(first, tip)]
        assert _rows(client) == expected
        from iq_etl.status import status_report

        report = status_report(client, warehouse=settings.warehouse_name, program_ids=settings.program_ids)
        assert report["scan"]["scanned_slots"] == tip - first + 1 and report["scan"]["gaps_total"] == 0
    finally:
        wh.close_client()


def test_follow_command_records_the_round_and_fails_over_max_lag(tmp_path, warehouses, chain, manifest, rpc_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "JETSTREAMER_"))}
    env.update({**warehouses.env(), "IQ_PROGRAM_ID": ",".join(manifest.all_program_ids()), "IQ_MAX_LAG": "100",
                "IQ_CAR_URL": _archive(tmp_path, chain, [923]), "IQ_RPC_URL": rpc_url,
                "IQ_START_SLOT": str(manifest.first_slot)})
    out = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "follow", "--max-rpc-slots", "500"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "more than IQ_MAX_LAG=100" in out.stderr and "Traceback" not in out.stderr
    assert "lag 700 slots" in out.stdout
    status = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "status", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    import json

    lag = json.loads(status.stdout)["lag"]
    assert (lag["tip_slot"], lag["lag_slots"], lag["command"]) == (manifest.last_slot, 700, "follow")
    # the report's time axis: the round, and the lag it saw
    report = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "report", "--out", str(tmp_path / "r")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'id="view-history"' in page and 'data-lag-slots="700"' in page and "<td class=\"l\">follow</td>" in page


@pytest.mark.slow  # end to end (a flow or the CLI over a whole dev chain): CI runs it with the slow suite
def test_the_pipeline_flow_follows_by_default_and_records_its_run(tmp_path, warehouses, chain, manifest, rpc_url,
                                                                  monkeypatch, prefect_api):  # noqa: F811
    """The pipeline deployment's default (source follow): a round, transform, export; one iq.runs row
    with the tip and the frontier; the run ends Failed past IQ_MAX_LAG."""
    from iq_etl.orchestration.flows import pipeline_flow
    from iq_etl.orchestration.params import ExportParams

    for key, value in {**warehouses.env(), "IQ_PROGRAM_ID": ",".join(manifest.all_program_ids()), "IQ_RPC_URL": rpc_url,
                       "IQ_CAR_URL": _archive(tmp_path, chain, [923]), "IQ_START_SLOT": str(manifest.first_slot),
                       "IQ_MAX_LAG": "100"}.items():
        monkeypatch.setenv(key, value)
    wh.close_client()
    export = ExportParams(targets=[(tmp_path / "exports").as_uri()])
    state = pipeline_flow(ingest=IngestParams(source="follow", max_rpc_slots=500), export=export, return_state=True)
    assert state.is_failed() and "more than IQ_MAX_LAG=100" in state.message
    state = pipeline_flow(ingest=IngestParams(max_rpc_slots=5000), export=export, return_state=True)  # follow: default
    assert state.is_completed(), state.message
    client = wh.get_client(_settings(warehouses, manifest))
    try:
        runs = client.query("SELECT command, status, tip_slot, frontier_slot, rows_written > 0 FROM iq.runs "
                            "ORDER BY finished_at").result_rows
    finally:
        wh.close_client()
    assert runs == [("pipeline_flow", "failed", manifest.last_slot, manifest.last_slot - 700, True),
                    ("pipeline_flow", "ok", manifest.last_slot, manifest.last_slot, True)]


@pytest.mark.slow  # end to end (a flow or the CLI over a whole dev chain): CI runs it with the slow suite
def test_iq_etl_run_source_follow(tmp_path, warehouses, chain, manifest, rpc_url):
    """The CLI's `run --source follow`: a round, transform, export, and the round's line printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "JETSTREAMER_", "PREFECT_API"))}
    env.update({**warehouses.env(), "IQ_PROGRAM_ID": ",".join(manifest.all_program_ids()), "IQ_RPC_URL": rpc_url,
                "IQ_CAR_URL": _archive(tmp_path, chain, [923]), "IQ_START_SLOT": str(manifest.first_slot),
                "IQ_READER_BASE_URL": "http://127.0.0.1:9"})
    out = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "run", "--source", "follow", "--max-rpc-slots",
                          "5000", "--target", (tmp_path / "exports").as_uri()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"follow: tip {manifest.last_slot}, covered to {manifest.last_slot}, lag 0 slots" in out.stdout


def test_source_freshness_of_the_raw_tables(warehouses, chain, manifest):
    """Issue 26 item 2: dbt source freshness on the raw tables: the last finished scan is fresh, the
    development chain's block times (its slots' era) are days old: an error naming the source."""
    from iq_etl.transform.runner import TransformError, run_dbt

    settings = _settings(warehouses, manifest)
    wh.close_client()
    try:
        run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                                           car_url=car_template(chain)), client=wh.get_client(settings))
        with pytest.raises(TransformError) as caught:
            run_dbt(settings, command="source freshness", quiet=True)
        ok = run_dbt(settings, command="source freshness", select="source:iq.scan_ranges", quiet=True)
    finally:
        wh.close_client()
    assert "raw_instructions" in str(caught.value)
    assert ok.success and [n.status for n in ok.nodes] == ["pass"]
