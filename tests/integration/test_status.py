"""iq_etl.status and `iq-etl status` without dbt runs: before the first transform, and rendering.
(The report on built marts is checked in test_dbt_models.py, which shares its transform.)"""
from __future__ import annotations

import json

from iq_etl.cli import main as cli
from iq_etl.status import print_status, render_status, status_markdown, status_report
from iq_etl.warehouse import client as wh


def test_report_before_the_first_transform(warehouse):
    report = status_report(warehouse)
    assert report["models_built"] is False and report["raw_instructions"] == 0
    assert "run `iq-etl transform`" in status_markdown(report)


def test_markdown_escapes_chain_text_and_lists_sections():
    report = {
        "models_built": True, "raw_instructions": 9, "undecoded_instructions": 1, "ready_to_export": 1,
        "totals": {"uploads": 2, "complete": 1, "missing_chunks": 1},
        "by_status_generation": [{"status": "complete", "generation": "g3", "uploads": 1, "chunks_present": 2,
                                  "chunks_missing": 0}],
        "incomplete": [{"upload_key": "evil|key\nwith newline", "generation": "g3", "status": "missing_chunks",
                        "status_reason": "1 of 3 chunk(s) missing: 1", "chunks_present": 2, "chunks_expected": 3,
                        "chunks_missing": 1, "missing_ranges_text": "1", "missing_window_first_slot": 10,
                        "missing_window_last_slot": 12, "first_slot": 9, "last_slot": 13}],
        "scan": {"scanned": [{"first_slot": 1, "last_slot": 5, "slots": 5, "sources": ["car"]}],
                 "gaps": [{"first_slot": 6, "last_slot": 8, "slots": 3}], "gaps_total": 1},
    }
    markdown = status_markdown(report)
    assert "| evil\\|key with newline | g3 | missing_chunks | 2/3 | 1 | 10:12 | 1 of 3 chunk(s) missing: 1 |" in markdown  # S:E: pasteable into `iq-etl ingest`
    assert "| 6 | 8 | 3 |" in markdown and "2 uploads: 1 complete, 1 missing chunks" in markdown
    assert json.loads(render_status(report, "json"))["incomplete"][0]["missing_window_last_slot"] == 12
    import io

    out = io.StringIO()
    print_status(report, file=out)
    assert "Scan coverage gaps" in out.getvalue() and "10:12" in out.getvalue()


def test_cli_status_json_on_an_empty_warehouse(settings_env, tmp_path, monkeypatch, capsys):
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    wh.close_client()
    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models_built"] is False and report["totals"] == {}
    assert cli.main(["status"]) == 0
    assert "not built yet" in capsys.readouterr().out
