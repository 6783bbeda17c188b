"""The coverage report (iq_etl.report, `iq-etl report`) on a real warehouse built from the development
chain: the four views hold what the warehouse holds (a scan gap, the uploads per status and
generation, chunk maps with missing / conflicting cells, three targets in three delivery states),
limits cut and say so, chain text is escaped, and the page loads nothing from anywhere.
(Rendering in a real browser: tests/e2e/test_report_chromium.py.)"""
from __future__ import annotations

import re

import pytest

from iq_etl.report import write_report
from iq_etl.report.data import Limits, report_data
from iq_etl.report.html import render_html
from iq_etl.warehouse import client as wh
from tests.support.prefect import prefect_api  # noqa: F401 - fixture
from tests.support.report_chain import FAILING_LIMIT, build_report_chain, elements, four_views


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    built = build_report_chain(tmp_path_factory.mktemp("report"))
    try:
        yield built
    finally:
        wh.close_client()


@pytest.fixture(scope="module")
def page(chain, tmp_path_factory):
    written = write_report(chain.client, tmp_path_factory.mktemp("report-out"))
    assert written.path.name == "index.html" and written.url.startswith("file:///")
    return written.path.read_text(encoding="utf-8")


def test_scan_timeline_shows_the_hole_between_the_two_ingests(chain, page):
    views = four_views(page)
    gaps = [(int(e["data-first"]), int(e["data-last"])) for e in views["scan"] if e["data-kind"] == "gap"]
    assert chain.gap in gaps
    scanned = [(int(e["data-first"]), int(e["data-last"])) for e in views["scan"] if e["data-kind"] == "scanned"]
    assert (chain.manifest.first_slot, chain.gap[0] - 1) in scanned
    assert (chain.gap[1] + 1, chain.manifest.last_slot) in scanned
    epochs = [e for e in elements(page) if e["tag"] == "div" and "data-epoch" in e]
    assert [int(e["data-epoch"]) for e in epochs] == [chain.manifest.first_slot // 432_000]
    assert int(epochs[0]["data-gap-slots"]) == chain.gap[1] - chain.gap[0] + 1


def test_status_by_generation_matches_the_mart(chain, page):
    counts = {(g, s): n for s, g, n in chain.client.query(
        "SELECT status, toString(generation), count() FROM iq.session_completeness GROUP BY 1, 2").result_rows}
    cells = {(e["data-generation"], e["data-status"]): int(e["data-uploads"]) for e in four_views(page)["status"]}
    assert {k: v for k, v in cells.items() if v} == counts
    assert {"complete", "missing_chunks", "conflicting_chunks"} <= {s for _, s in counts}


def test_chunk_maps_show_missing_and_conflicting_cells(chain, page):
    maps = {e["data-upload"]: e for e in elements(page) if e["tag"] == "article"}
    assert 0 < len(maps) <= Limits().chunk_maps
    by_scenario = {u.scenario: u for u in chain.manifest.uploads}
    data = report_data(chain.client)
    cells = {m["upload_key"]: m["cells"] for m in data["chunk_maps"]["maps"]}
    conflict = by_scenario["g2_conflict"].upload_key
    assert conflict in maps and "conflicting" in cells[conflict]
    missing = by_scenario["g2_missing"].upload_key
    assert missing in maps and {"missing", "failed_only"} & set(cells[missing])
    # the rendered grid has one rect per cell, each with its state
    states = [e["data-state"] for e in four_views(page)["chunks"]]
    assert len(states) == sum(len(c) for c in cells.values())
    assert {"present", "conflicting"} <= set(states) and {"missing", "failed_only"} & set(states)


def test_delivery_per_target(chain, page):
    rows = {e["data-target"]: e for e in four_views(page)["delivery"]}
    assert set(rows) == set(chain.targets.values())
    files, small, down = (rows[chain.targets[k]] for k in ("files", "small", "down"))
    assert int(files["data-delivered"]) == chain.exported["files"].delivered > 0
    assert int(files["data-failed"]) == int(files["data-refused"]) == 0
    assert int(small["data-refused"]) == chain.exported["small"].refused > 0
    assert int(small["data-delivered"]) == chain.exported["small"].delivered > 0
    assert int(down["data-failed"]) == FAILING_LIMIT and int(down["data-delivered"]) == 0
    target = next(t for t in report_data(chain.client)["deliveries"]["targets"] if t["target"] == chain.targets["down"])
    assert target["never_tried"] == chain.exported["files"].delivered - FAILING_LIMIT


def test_the_page_is_self_contained(page):
    # nothing fetched, nothing run: no script, stylesheet link, image source, import or url()
    for pattern in (r"<script", r"<link", r"\ssrc=", r"\shref=", r"@import", r"url\(", r"<iframe", r"<object"):
        assert not re.search(pattern, page, re.IGNORECASE), pattern
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_limits_cut_and_say_so(chain):
    data = report_data(chain.client, Limits(chunk_maps=1, cells=2, epochs=1, incomplete_rows=2, scan_runs=1))
    assert data["scan"]["runs_read"] == 1 and data["scan"]["cut_from"] == chain.gap[0]   # the scanned run before the gap
    maps = data["chunk_maps"]
    assert len(maps["maps"]) == 1 and maps["cut_uploads"] == maps["incomplete_total"] - 1 > 0
    assert all(len(m["cells"]) <= 2 for m in maps["maps"])
    assert len(data["incomplete"]["rows"]) == 2 and data["incomplete"]["total"] > 2
    page = render_html(data)
    cuts = {e["data-cut"] for e in elements(page) if "data-cut" in e}
    assert {"uploads", "scan"} <= cuts
    if maps["maps"][0]["cells_cut"]:
        assert "cells" in cuts
    with pytest.raises(ValueError):
        Limits(cells=0)


def test_chain_text_is_escaped():
    evil = '<script>alert(1)</script>"onmouseover="x'
    data = {
        "generated_at": "now", "limits": {"cells": 4}, "models_built": True, "raw_instructions": 1,
        "scan": {"built": True, "epochs": [], "runs_total": 0, "runs_read": 0, "cut_from": None},
        "by_status_generation": {"rows": [{"status": evil, "generation": evil, "uploads": 1, "chunks_present": 1,
                                           "chunks_missing": 0}], "generations": [evil], "verification": None},
        "incomplete": {"rows": [], "total": 1, "shown": 0},
        "chunk_maps": {"maps": [{"upload_key": evil, "upload_shape": "linked_list", "generation": "g1",
                                 "status": "missing_chunks", "reason": evil, "expected": None, "present": 1,
                                 "missing": 0, "missing_piece_signature": evil, "indexes": 1, "cells": ["present"],
                                 "cells_cut": 0, "counts": {"present": 1}}],
                       "incomplete_total": 1, "cut_uploads": 0},
        "deliveries": {"targets": [{"target": evil, "delivered": 1, "failed": 0, "refused": 0, "never_tried": 0,
                                    "last_attempt_at": evil}], "targets_total": 1, "ready": 1},
    }
    page = render_html(data)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover=&quot;x" in page
    els = elements(page)
    assert not any("onmouseover" in e for e in els)
    assert any(e.get("data-upload") == evil for e in els)   # the attribute round-trips as text


def test_cli_report_writes_the_page(chain, tmp_path, monkeypatch, capsys):
    from iq_etl.cli import main as cli

    monkeypatch.setenv("IQ_CLICKHOUSE_DSN", chain.settings.clickhouse_dsn)
    monkeypatch.setenv("IQ_ETL_HOME", str(chain.settings.home))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--out", str(tmp_path / "out"), "--max-uploads", "2", "--max-cells", "8"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out" / "index.html").as_uri() in out
    page = (tmp_path / "out" / "index.html").read_text()
    assert len([e for e in elements(page) if e["tag"] == "article"]) == 2
    assert cli.main(["report", "--max-cells", "0"]) == 1
    assert "cells must be at least 1" in capsys.readouterr().err
    # the default folder: beside the warehouse it describes, whatever the current folder
    assert cli.main(["report"]) == 0
    assert (chain.settings.warehouse_path.parent / "report" / "index.html").is_file()
    assert not (tmp_path / ".iq-etl").exists()


def test_flow_publishes_the_report_tables_as_artifacts(chain, tmp_path, prefect_api):  # noqa: F811
    import dataclasses
    import json

    from prefect import flow

    from iq_etl.orchestration.artifacts import INCOMPLETE_ARTIFACT_KEY, REPORT_ARTIFACT_KEY, publish_report
    from tests.support.prefect import artifacts_of

    settings = dataclasses.replace(chain.settings, home=tmp_path / "home")

    @flow(name="report-artifacts-test")
    def publish(settings):
        return publish_report(settings, "a test run")

    state = publish(settings, return_state=True)
    assert state.is_completed(), state
    published = state.result()
    page = settings.warehouse_path.parent / "report" / "index.html"   # beside its warehouse
    assert published["path"] == str(page) and page.is_file()
    arts = {a.key: a for a in artifacts_of(state.state_details.flow_run_id)}
    from iq_etl.orchestration.artifacts import COVERAGE_ARTIFACT_KEY, DELIVERIES_ARTIFACT_KEY

    assert set(arts) == {INCOMPLETE_ARTIFACT_KEY, REPORT_ARTIFACT_KEY, COVERAGE_ARTIFACT_KEY, DELIVERIES_ARTIFACT_KEY}
    # The key figures are in the UI itself (no file:// link): lag, coverage by source, incomplete uploads.
    data = report_data(chain.client)
    markdown = arts[REPORT_ARTIFACT_KEY].data
    assert "](file://" not in markdown and str(page) in markdown
    assert "## Lag" in markdown and "## Coverage by source" in markdown and "## Deliveries by target" in markdown
    assert f"Incomplete uploads: **{data['incomplete']['total']}**" in markdown and data["incomplete"]["total"] > 0
    coverage = json.loads(arts[COVERAGE_ARTIFACT_KEY].data)
    assert coverage and sum(row["slots"] for row in coverage) == sum(s["slots"] for s in data["scan"]["scopes"]) > 0
    assert {row["source"] for row in coverage} == {s["source"] for s in data["scan"]["scopes"]}
    table = json.loads(arts[INCOMPLETE_ARTIFACT_KEY].data)
    assert [row["upload_key"] for row in table] == [r["upload_key"] for r in report_data(chain.client)["incomplete"]["rows"]]
    assert {"status", "missing_ranges", "rescan_slots", "reason"} <= set(table[0])

    # A report that cannot be written does not fail the run: a WARNING says so.
    import shutil

    report_dir = chain.settings.warehouse_path.parent / "report"   # where the report goes: beside the warehouse
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.write_text("")   # a file where the folder should be
    broken = chain.settings
    # A handler of our own on the flow-run logger, not the terminal: Prefect's console handler keeps
    # the stderr of whichever test configured it, and its loggers do not always propagate to caplog.
    import logging

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(f"{record.levelname} {record.getMessage()}")

    keep, flow_runs = Keep(), logging.getLogger("prefect.flow_runs")
    flow_runs.addHandler(keep)
    try:
        state = publish(broken, return_state=True)
    finally:
        flow_runs.removeHandler(keep)
        report_dir.unlink()
    assert state.is_completed() and state.result() is None
    assert any(m.startswith("WARNING coverage report not published: FileExistsError") for m in keep.messages), keep.messages


def test_before_the_first_transform(warehouse, tmp_path):
    # last in this module: the `warehouse` fixture closes the shared client the module's chain uses
    written = write_report(warehouse, tmp_path)
    assert written.data["models_built"] is False
    text = written.path.read_text()
    assert "not built yet" in text
    four_views(text)   # the four sections are there, empty
