"""Issue 21, silent loss: the scan ledger knows what each scan looked for. A run narrowed to one
session PDA or to fewer programs must not mark slots done for a wider request; counts shown to an
operator are deduplicated; status names its warehouse and the coverage of the configured programs.

Each test is a reproduction from the issue: before the fix the second, wider run skipped every
sub-range ("0 (N already done, skipped)") and kept only the narrowed run's rows."""
from __future__ import annotations

import pytest

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template
from iq_etl.ingest.request import IngestRequest
from iq_etl.ingest.run import run_ingest
from iq_etl.settings import load_settings
from iq_etl.status import status_report
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.scan_ledger import ScanScope
from tests.support.warehouse import folder_dsn

FAST_RPC = {"rps": 5000.0, "method_rps": 5000.0, "concurrency": 8, "backoff_base": 0.01}
KEY = "slot, signature, ix_index, inner_index, program_id, kind, hex(payload)"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("scope-chain")
    build_chain(out, seed=21, sessions=40, noise_tx_per_slot=1, slots=2400)
    return out


def _settings(folder, programs, **extra):
    # one warehouse at a time per test (each read before the next is made): the factory's folder DSN
    return load_settings({"IQ_CLICKHOUSE_DSN": folder_dsn(folder, "wh"), "IQ_ETL_HOME": str(folder / "home"),
                          "IQ_PROGRAM_ID": ",".join(programs), **extra}, dotenv=folder / "none")


def _ingest(settings, **kwargs):
    wh.close_client()
    try:
        return run_ingest(settings, IngestRequest(rpc_options=FAST_RPC, subrange_slots=200, **kwargs))
    finally:
        wh.close_client()


def _rows(settings):
    wh.close_client()
    try:
        return wh.get_client(settings).query(f"SELECT {KEY} FROM iq.raw_instructions FINAL ORDER BY {KEY}").result_rows
    finally:
        wh.close_client()


def _clean(tmp_path, manifest, chain):
    settings = _settings(tmp_path / "clean", manifest.all_program_ids())
    summary = _ingest(settings, slot_spec=f"{manifest.first_slot}:{manifest.last_slot}", car_url=car_template(chain))
    assert not summary.incomplete and summary.rows_written > 0
    return _rows(settings)


def _one_session_pda(manifest):
    return next(u.session_account for u in manifest.uploads if u.session_account and u.signatures)


def test_a_pda_narrowed_run_does_not_mark_slots_done_for_everyone(tmp_path, chain, manifest):
    clean = _clean(tmp_path, manifest, chain)
    spec, car = f"{manifest.first_slot}:{manifest.last_slot}", car_template(chain)
    narrowed = _settings(tmp_path / "w", manifest.all_program_ids(), IQ_SESSION_PDA_LIST=_one_session_pda(manifest))
    first = _ingest(narrowed, slot_spec=spec, car_url=car)
    assert 0 < first.rows_written < len(clean)
    wide = _settings(tmp_path / "w", manifest.all_program_ids())
    second = _ingest(wide, slot_spec=spec, car_url=car)
    assert second.skipped_ranges == 0, "the narrowed run's sub-ranges were taken as covering every account"
    assert _rows(wide) == clean
    # the narrowed request itself is covered now (a superset scan ran): a third narrowed run skips all
    third = _ingest(narrowed, slot_spec=spec, car_url=car)
    assert third.rows_written == 0 and third.skipped_ranges == len(first.ranges)


def test_a_shorter_program_list_does_not_cover_a_longer_one(tmp_path, chain, manifest):
    clean = _clean(tmp_path, manifest, chain)
    spec, car = f"{manifest.first_slot}:{manifest.last_slot}", car_template(chain)
    programs = sorted(manifest.all_program_ids())
    one = _settings(tmp_path / "w", programs[:1])
    _ingest(one, slot_spec=spec, car_url=car)
    everything = _settings(tmp_path / "w", programs)
    again = _ingest(everything, slot_spec=spec, car_url=car)
    assert again.skipped_ranges == 0 and _rows(everything) == clean


@pytest.mark.embedded_only("names the embedded folder")
def test_status_coverage_is_per_program_set_and_names_the_warehouse(tmp_path, chain, manifest):
    spec, car = f"{manifest.first_slot}:{manifest.last_slot}", car_template(chain)
    narrowed = _settings(tmp_path / "w", manifest.all_program_ids(), IQ_SESSION_PDA_LIST=_one_session_pda(manifest))
    _ingest(narrowed, slot_spec=spec, car_url=car)
    wide = _settings(tmp_path / "w", manifest.all_program_ids())
    wh.close_client()
    try:
        report = status_report(wh.get_client(wide), warehouse=wide.warehouse_name, program_ids=wide.program_ids)
    finally:
        wh.close_client()
    assert report["warehouse"] == f"embedded chDB at {(tmp_path / 'w' / 'wh').resolve()}"
    # before: the narrowed scan counted as coverage ("0 gap(s)", every slot scanned)
    assert report["scan"]["scanned_slots"] == 0 and report["scan"]["scanned"] == []
    [scope] = report["scan"]["scopes"]
    assert scope["session_pdas"] == [_one_session_pda(manifest)] and scope["slots"] == manifest.last_slot - manifest.first_slot + 1
    from iq_etl.status import status_markdown

    text = status_markdown(report)
    assert str((tmp_path / "w" / "wh").resolve()) in text and "narrower or unknown scan scope(s) not counted" in text


def test_rpc_session_pda_run_then_the_tail_reads_everything(tmp_path, chain, manifest, rpc_url):
    programs = manifest.all_program_ids()
    # a clean tail: every IQ program's signatures from the start
    clean_settings = _settings(tmp_path / "clean", programs)
    _ingest(clean_settings, source="rpc-signatures", rpc_url=rpc_url, max_signature_pages=100)
    clean = _rows(clean_settings)
    narrowed = _settings(tmp_path / "w", programs)
    _ingest(narrowed, source="rpc-signatures", rpc_url=rpc_url, session_pdas=[_one_session_pda(manifest)],
            slot_padding=0)
    tail = _ingest(narrowed, source="rpc-signatures", rpc_url=rpc_url, max_signature_pages=100)
    assert tail.skipped_ranges == 0
    assert _rows(narrowed) == clean and len(clean) > 0


def test_counts_shown_are_deduplicated(tmp_path, chain, manifest):
    """A rescan (--no-resume) stores every row again until ClickHouse merges: status counts FINAL."""
    spec, car = f"{manifest.first_slot}:{manifest.last_slot}", car_template(chain)
    settings = _settings(tmp_path / "w", manifest.all_program_ids())
    _ingest(settings, slot_spec=spec, car_url=car)
    _ingest(settings, slot_spec=spec, car_url=car, resume=False)
    wh.close_client()
    try:
        client = wh.get_client(settings)
        final = client.query("SELECT count() FROM iq.raw_instructions FINAL").result_rows[0][0]
        report = status_report(client, warehouse=settings.warehouse_name, program_ids=settings.program_ids)
    finally:
        wh.close_client()
    assert report["raw_instructions"] == final > 0


def test_scope_rule():
    every = ScanScope.of("car", ["A", "B"])
    assert every.covers(ScanScope.of("car", ["A"])) and every.covers(ScanScope.of("car", ["B", "A"], ["X"]))
    assert not every.covers(ScanScope.of("car", ["A", "B", "C"]))
    assert not every.covers(ScanScope.of("rpc-blocks", ["A"]))
    narrowed = ScanScope.of("car", ["A", "B"], ["X", "Y"])
    assert narrowed.covers(ScanScope.of("car", ["A"], ["X"]))
    assert not narrowed.covers(ScanScope.of("car", ["A"]))
    assert not narrowed.covers(ScanScope.of("car", ["A"], ["Z"]))


def test_a_rebuilt_archive_makes_its_ranges_stale_and_the_next_ingest_rescans_them(tmp_path, chain, manifest):
    """Issue 24 item 4: a regenerated epoch (rebuilt in place) was never rescanned: iq.scan_ranges
    recorded no archive identity."""
    import os
    import shutil

    archive = tmp_path / "archive"
    shutil.copytree(chain, archive)
    spec, car = f"{manifest.first_slot}:{manifest.last_slot}", car_template(archive)
    settings = _settings(tmp_path / "w", manifest.all_program_ids())
    first = _ingest(settings, slot_spec=spec, car_url=car)
    before = _rows(settings)
    again = _ingest(settings, slot_spec=spec, car_url=car)
    assert again.skipped_ranges == len(first.ranges) and again.rows_written == 0   # same archive: nothing to do
    for path in archive.rglob("epoch-*.car"):   # the archive is rebuilt in place (same bytes, new file)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    wh.close_client()
    try:
        client = wh.get_client(settings)
        from iq_etl.ingest.run import plan_ingest

        plan_ingest(settings, IngestRequest(slot_spec=spec, car_url=car, subrange_slots=200), client)
        report = status_report(client, warehouse=settings.warehouse_name, program_ids=settings.program_ids)
    finally:
        wh.close_client()
    assert report["scan"]["stale_total"] == len(first.ranges) and report["scan"]["scanned_slots"] == 0
    assert "STALE" in __import__("iq_etl.status", fromlist=["status_markdown"]).status_markdown(report)
    rescan = _ingest(settings, slot_spec=spec, car_url=car)
    assert rescan.skipped_ranges == 0 and len(rescan.ranges) == len(first.ranges)
    assert _rows(settings) == before   # replaced, not doubled
    wh.close_client()
    try:
        report = status_report(wh.get_client(settings), warehouse=settings.warehouse_name,
                               program_ids=settings.program_ids)
    finally:
        wh.close_client()
    assert report["scan"]["stale_total"] == 0 and report["scan"]["gaps_total"] == 0
