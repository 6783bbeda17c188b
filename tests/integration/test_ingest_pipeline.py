"""The ingest stage on the development chain: every source gives the same rows, reruns change
nothing, a killed run resumes to exactly the rows of an uninterrupted one, nothing is dropped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template
from iq_etl.ingest.request import IngestRequest
from iq_etl.ingest.run import run_ingest
from iq_etl.settings import load_settings
from iq_etl.warehouse import client as wh

FAST_RPC = {"rps": 5000.0, "method_rps": 5000.0, "concurrency": 8, "backoff_base": 0.01}
KEY_COLUMNS = ("slot, signature, tx_index, ix_index, inner_index, program_id, generation, kind, session_account, "
               "session_id, chunk_index, total_chunks, hex(payload), hex(data), tx_status")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    build_chain(out, seed=5, sessions=40, noise_tx_per_slot=2, slots=2400)
    return out


def env_for(warehouses, manifest, name="warehouse", **extra):
    """Warehouse `name` of the test (tests/support/warehouse.py), the chain's programs configured."""
    return warehouses.env(name, IQ_PROGRAM_ID=",".join(manifest.all_program_ids()), **extra)


def spec_of(manifest):
    return f"{manifest.first_slot}:{manifest.last_slot}"


def ingest_rows(warehouses, manifest, name, **kwargs):
    """Run one ingest into its own warehouse and return the logical rows (FINAL), sorted."""
    wh.close_client()
    settings = load_settings(env_for(warehouses, manifest, name), dotenv=warehouses.folder / "none")
    try:
        summary = run_ingest(settings, IngestRequest(rpc_options=FAST_RPC, **kwargs))
        client = wh.get_client(settings)
        rows = client.query(f"SELECT {KEY_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY slot, signature, "
                            "ix_index, inner_index").result_rows
        undecoded = client.query("SELECT signature, reason FROM iq.undecoded_instructions FINAL "
                                 "ORDER BY signature").result_rows
        return summary, rows, undecoded
    finally:
        wh.close_client()
        warehouses.release(name)   # read: a remote test server is free for the next one


def test_car_ingest_represents_every_upload(warehouses, tmp_path, chain, manifest):
    summary, rows, undecoded = ingest_rows(warehouses, manifest, "car", slot_spec=spec_of(manifest),
                                           car_url=car_template(chain))
    assert not summary.incomplete and summary.transactions_seen == manifest.tx_counts["transactions"]
    assert summary.skipped_slots == len(manifest.skipped_slots)
    signatures = {r[1] for r in rows}
    for upload in manifest.uploads:
        missing = set(upload.signatures) - signatures
        assert not missing, f"{upload.upload_key}: {len(missing)} transaction(s) not ingested"
        for failed in upload.failed_signatures:  # failed transactions are stored too, flagged
            assert {r[14] for r in rows if r[1] == failed} == {"failed"}
    # The deliberate undecodable instruction is kept with its reason; nothing else is undecoded.
    (unknown,) = manifest.hard_case("undecodable_iq_instruction").signatures
    assert [u[0] for u in undecoded] == [unknown] and undecoded[0][1]
    # Instructions that merely list IQ programs as accounts are not IQ instructions.
    for sig in manifest.hard_case("iq_program_as_account_only").signatures:
        assert sig not in signatures


def test_three_sources_give_identical_rows(warehouses, tmp_path, chain, manifest, rpc_url):
    spec = spec_of(manifest)
    _, car_rows, car_undecoded = ingest_rows(warehouses, manifest, "car", slot_spec=spec, car_url=car_template(chain))
    _, block_rows, block_undecoded = ingest_rows(warehouses, manifest, "blocks", slot_spec=spec, source="rpc-blocks",
                                                 rpc_url=rpc_url)
    assert block_rows == car_rows and block_undecoded == car_undecoded
    # Sparse: the sessions' signatures (seed discovery), compared with the CAR restricted the same way.
    pdas = sorted({u.session_account for u in manifest.uploads if u.shape == "session"})[:6]
    _, sig_rows, _ = ingest_rows(warehouses, manifest, "sigs", source="rpc-signatures", rpc_url=rpc_url,
                                 session_pdas=pdas)
    _, car_pda_rows, _ = ingest_rows(warehouses, manifest, "car-pda", slot_spec=spec, car_url=car_template(chain),
                                     session_pdas=pdas)
    assert sig_rows and sig_rows == car_pda_rows
    assert {r[8] for r in sig_rows} <= set(pdas)  # the seed's rule: only instructions touching the PDAs


def test_rerun_changes_nothing(warehouses, tmp_path, chain, manifest):
    wh.close_client()
    settings = load_settings(env_for(warehouses, manifest), dotenv=tmp_path / "none")
    try:
        first = run_ingest(settings, IngestRequest(slot_spec=spec_of(manifest), car_url=car_template(chain), subrange_slots=500))
        client = wh.get_client(settings)
        count = "SELECT count() FROM iq.raw_instructions FINAL"
        before = client.query(count).result_rows[0][0]
        again = run_ingest(settings, IngestRequest(slot_spec=spec_of(manifest), car_url=car_template(chain), subrange_slots=500))
        assert again.skipped_ranges == len(first.ranges) and again.rows_written == 0  # resume skips all
        forced = run_ingest(settings, IngestRequest(slot_spec=spec_of(manifest), car_url=car_template(chain), subrange_slots=500,
                            resume=False))
        assert forced.rows_written == first.rows_written
        assert client.query(count).result_rows[0][0] == before == first.rows_written
    finally:
        wh.close_client()


def test_killed_run_resumes_to_the_same_rows(warehouses, tmp_path, chain, manifest):
    spec = spec_of(manifest)
    _, expected, _ = ingest_rows(warehouses, manifest, "whole", slot_spec=spec, car_url=car_template(chain))
    env = {**os.environ, **env_for(warehouses, manifest, "killed")}
    args = [sys.executable, "-m", "iq_etl.cli.main", "--log-level", "debug", "ingest", spec, "--car-url", car_template(chain),
            "--subrange-slots", "20", "--batch-rows", "3", "--json"]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    done = 0
    for line in proc.stderr:
        if "sub-range" in line and " done:" in line:
            done += 1
            if done == 10:
                proc.send_signal(signal.SIGKILL)  # really killed: no handler runs
                break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = subprocess.run(args[:4] + args[4:], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    wh.close_client()
    settings = load_settings(env_for(warehouses, manifest, "killed"), dotenv=tmp_path / "none")
    try:
        client = wh.get_client(settings)
        got = client.query(f"SELECT {KEY_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY slot, signature, "
                           "ix_index, inner_index").result_rows
        ledger = client.query("SELECT countIf(status = 'done'), uniqExact(run_id) FROM iq.scan_ranges FINAL").result_rows
    finally:
        wh.close_client()
    assert got == expected
    assert ledger[0][0] == len(range(manifest.first_slot, manifest.last_slot + 1, 20))
    assert ledger[0][1] == 2  # the killed run's finished sub-ranges were kept, the rest redone


def test_threads_give_the_same_rows(warehouses, tmp_path, chain, manifest):
    spec = spec_of(manifest)
    _, one, _ = ingest_rows(warehouses, manifest, "one", slot_spec=spec, car_url=car_template(chain))
    summary, two, _ = ingest_rows(warehouses, manifest, "two", slot_spec=spec, car_url=car_template(chain), threads=2,
                                  subrange_slots=600)
    assert len(summary.ranges) == 4 and two == one


def test_bad_slot_spec_and_missing_car_are_clear_errors(warehouses, tmp_path, chain, manifest):
    from iq_etl.errors import IQEtlError, SourceError

    wh.close_client()
    settings = load_settings(env_for(warehouses, manifest), dotenv=tmp_path / "none")
    try:
        with pytest.raises(IQEtlError, match="slot spec"):
            run_ingest(settings, IngestRequest(slot_spec="12:x", car_url=car_template(chain)))
        with pytest.raises(SourceError, match="epoch-9.car"):
            run_ingest(settings, IngestRequest(slot_spec="3888000:3888010", car_url=str(chain / "{epoch}" / "epoch-{epoch}.car")))
        client = wh.get_client(settings)
        status = client.query("SELECT status, error FROM iq.scan_ranges FINAL").result_rows
        assert status and status[0][0] == "failed" and "epoch-9.car" in status[0][1]
    finally:
        wh.close_client()


def test_live_tail_ingests_only_new_signatures_across_runs(warehouses, tmp_path, chain, manifest):
    """rpc-signatures without a slot spec or PDAs tails every IQ program from cursors in iq.cursors."""
    from iq_etl.devchain.chain import iter_chain
    from iq_etl.devchain.servers.rpc import serve_rpc
    from iq_etl.devchain.servers.rpc_index import RpcChain

    middle = (manifest.first_slot + manifest.last_slot) // 2
    rpc_chain = RpcChain.from_blocks(iter_chain(chain, manifest.first_slot, middle))
    server = serve_rpc(rpc_chain)
    wh.close_client()
    settings = load_settings(env_for(warehouses, manifest), dotenv=tmp_path / "none")
    try:
        first = run_ingest(settings, IngestRequest(source="rpc-signatures", rpc_url=server.url, rpc_options=FAST_RPC))
        client = wh.get_client(settings)
        cursors = client.query("SELECT name, last_slot FROM iq.cursors FINAL ORDER BY name").result_rows
        assert {name for name, _ in cursors} == {f"rpc-signatures:{p}" for p in manifest.all_program_ids()
                                                  if any(u.program_id == p for u in manifest.uploads)}
        assert all(slot <= middle for _, slot in cursors)
        rpc_chain.add_blocks(iter_chain(chain, middle + 1, manifest.last_slot))  # the chain moves on
        second = run_ingest(settings, IngestRequest(source="rpc-signatures", rpc_url=server.url, rpc_options=FAST_RPC))
        tail_rows = client.query(f"SELECT {KEY_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY slot, signature, "
                                 "ix_index, inner_index").result_rows
        third = run_ingest(settings, IngestRequest(source="rpc-signatures", rpc_url=server.url, rpc_options=FAST_RPC))
    finally:
        wh.close_client()
        server.shutdown()
    assert first.rows_written > 0 and second.rows_written > 0 and third.rows_written == 0
    assert {r[0] for r in tail_rows if r[0] > middle}  # the second run reached past the first cursor
    # Together the runs hold exactly the rows of a dense CAR ingest of the whole chain.
    _, car_rows, _ = ingest_rows(warehouses, manifest, "car", slot_spec=spec_of(manifest), car_url=car_template(chain))
    assert tail_rows == car_rows


def test_heartbeat_says_http_rate_and_connections(warehouses, tmp_path, chain, manifest, caplog):
    """Issue 24: an ingest reading its CAR over HTTP says, in its progress line, the MB/s it fetches and
    the connections in use (here from a loopback host capping every connection at 1 MB/s)."""
    import logging
    import re

    from iq_etl.devchain.servers.files import Faults, serve_files

    srv = serve_files(chain, faults=Faults(rate=1e6))
    wh.close_client()
    settings = load_settings(env_for(warehouses, manifest, IQ_CAR_CONNECTIONS="4"), dotenv=tmp_path / "none")
    try:
        with caplog.at_level(logging.INFO, logger="iq_etl.ingest.progress"):
            summary = run_ingest(settings, IngestRequest(slot_spec=spec_of(manifest), heartbeat_s=0,
                                                         car_url=srv.url + "/{epoch}/epoch-{epoch}.car"))
    finally:
        wh.close_client()
        srv.shutdown()
    assert not summary.incomplete
    figures = [re.search(r", HTTP ([\d.,]+) MB/s over ([\d.]+) connection\(s\)", r.getMessage())
               for r in caplog.records if r.getMessage().startswith("ingest: ")]
    assert figures and all(figures), [r.getMessage() for r in caplog.records]
    assert max(float(m.group(1).replace(",", "")) for m in figures) > 0
    assert 1 < max(float(m.group(2)) for m in figures) <= 4, [r.getMessage() for r in caplog.records]
    assert summary.car_http and summary.car_http["connections_peak"] >= 2
