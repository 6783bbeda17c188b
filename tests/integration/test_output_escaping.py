"""Control characters and huge values from the warehouse never reach a terminal as they are (issue 22,
item 8): `status` wrote raw ESC, NUL and bidi overrides from upload keys, and a 100 KB export target
made its table 300,000 characters wide. Human output (tables, vertical records, status markdown, the
report page) escapes and cuts; machine formats (csv, json, tsv, jsoneachrow) keep exact values; clean
upload keys, which people paste, come out unchanged."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from iq_etl.output import CELL_LIMIT, print_rows, visible
from iq_etl.report.html import render_html
from iq_etl.status import print_status, status_markdown
from tests.support.warehouse import folder_dsn

CLEAN_KEY = "7Jh5q3i7m1gYvZ4bNfW2X9yT8kLpR6sD3aQ1cE5uVxBn:" + "ab" * 16
HOSTILE_KEY = "key\x1b[2J\x00\u202eevil\u2066\x07\x9b31m\x7f"
RAW_CONTROLS = ["\x1b", "\x00", "\u202e", "\u2066", "\x07", "\x9b", "\x7f", "\u200e", "\u061c"]
BIG_TARGET = "file://" + "t" * 100_000


def assert_no_raw_controls(text: str) -> None:
    for ch in RAW_CONTROLS:
        assert ch not in text, f"raw {ch!r} in output"


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


# --- the one function every human renderer uses ----------------------------------------------------

def test_visible_escapes_controls_and_cuts_with_a_marker():
    assert visible(CLEAN_KEY) == CLEAN_KEY               # clean keys are untouched
    assert visible("naïve ünïcode → ok ✓") == "naïve ünïcode → ok ✓"
    assert visible(HOSTILE_KEY) == "key\\x1b[2J\\x00\\u202eevil\\u2066\\x07\\x9b31m\\x7f"
    assert visible("a\u200eb\u200fc\u061cd\u202ae") == "a\\u200eb\\u200fc\\u061cd\\u202ae"
    assert visible("line\nbreak\ttab\rcr") == "line\\nbreak\\ttab\\rcr"
    cut = visible("x" * 100_000)
    assert cut == "x" * CELL_LIMIT + "…(100000 chars)"
    assert visible("\x1b" * 1000, 10) == "\\x1b\\x1b…(1000 chars)"   # an escape is never cut in half
    assert visible(None) == "" and visible(42) == "42"
    assert visible("x" * 500, None) == "x" * 500


# --- sql: table, vertical vs machine formats --------------------------------------------------------

def _rows():
    return ["upload_key", "target", "markup"], [[HOSTILE_KEY, BIG_TARGET, "[/bold] [red]x"], [CLEAN_KEY, "t", None]]


@pytest.mark.parametrize("fmt", ["table", "vertical"])
def test_human_formats_escape_and_cut(fmt):
    out = io.StringIO()
    columns, rows = _rows()
    print_rows(columns, rows, fmt, file=out)
    text = out.getvalue()
    assert_no_raw_controls(text)
    assert "key\\x1b[2J\\x00\\u202eevil" in text
    assert CLEAN_KEY in text
    assert "…(100007 chars)" in text and widest(text) < 1000
    assert "[/bold] [red]x" in text                        # shown as typed, never read as markup


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_machine_formats_keep_exact_values(fmt):
    out = io.StringIO()
    columns, rows = _rows()
    print_rows(columns, rows, fmt, file=out)
    text = out.getvalue()
    if fmt == "json":
        assert json.loads(text)[0] == {"upload_key": HOSTILE_KEY, "target": BIG_TARGET, "markup": "[/bold] [red]x"}
    else:
        assert HOSTILE_KEY in text and BIG_TARGET in text


def iq(args, tmp_path):
    env = {**os.environ, "IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path), "IQ_ETL_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path, capture_output=True,
                          env=env, timeout=300)


QUERY = ("SELECT concat('key', char(27), '[2J', char(0), unhex('E280AE'), 'evil') AS k, repeat('t', 100000) AS target, "
         "{clean:String} AS clean")


@pytest.mark.parametrize("fmt", ["table", "vertical"])
def test_cli_sql_human_formats(tmp_path, fmt):
    out = iq(["sql", QUERY, "--param", f"clean={CLEAN_KEY}", "--format", fmt], tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode("utf-8")
    assert_no_raw_controls(text)
    assert "key\\x1b[2J\\x00\\u202eevil" in text and CLEAN_KEY in text
    assert "…(100000 chars)" in text and widest(text) < 1000


@pytest.mark.parametrize("fmt", ["csv", "json", "jsoneachrow", "tsv"])
def test_cli_sql_machine_formats_are_exact(tmp_path, fmt):
    out = iq(["sql", QUERY, "--param", f"clean={CLEAN_KEY}", "--format", fmt], tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode("utf-8")
    assert "t" * 100_000 in text and "…(" not in text
    exact = "key\x1b[2J\x00\u202eevil"
    if fmt == "json":
        assert json.loads(text)[0]["k"] == exact
    elif fmt == "jsoneachrow":
        assert json.loads(text.splitlines()[0])["k"] == exact
    elif fmt == "csv":
        assert text.splitlines()[1].startswith(exact + ",")
    else:
        assert "\x1b" in text and "\u202e" in text            # TSV escapes only \0 \t \n \\ and friends


# --- status: terminal tables and markdown ---------------------------------------------------------

def _status_report():
    def incomplete(key):
        return {"upload_key": key, "generation": "g3", "status": "missing_chunks",
                "status_reason": "why\x1b[31m" + "r" * 1000, "chunks_present": 1, "chunks_expected": 3,
                "chunks_missing": 2, "missing_ranges_text": "1-2\x1b", "missing_window_first_slot": 10,
                "missing_window_last_slot": 12, "first_slot": 9, "last_slot": 13}

    return {
        "models_built": True, "raw_instructions": 9, "undecoded_instructions": 0, "ready_to_export": 0,
        "totals": {"uploads": 2, "missing_chunks": 2},
        "by_status_generation": [{"status": "missing_chunks", "generation": "g3", "uploads": 2, "chunks_present": 2,
                                  "chunks_missing": 4}],
        "incomplete": [incomplete(HOSTILE_KEY), incomplete(CLEAN_KEY)],
        "delivery": [{"target": BIG_TARGET, "delivered": 1, "never_delivered": 0, "failed_attempts": 0,
                      "refused_attempts": 0, "retried_attempts": 0}],
        "scan": {"scanned": [], "gaps": [], "gaps_total": 0},
    }


def test_status_terminal_escapes_and_cuts():
    out = io.StringIO()
    print_status(_status_report(), file=out)
    text = out.getvalue()
    assert_no_raw_controls(text)
    assert "key\\x1b[2J\\x00\\u202eevil" in text
    assert CLEAN_KEY in text                                 # pasted by people: unchanged
    assert "…(100007 chars)" in text and widest(text) < 2000  # was 300,000 characters wide


def test_status_markdown_escapes_and_cuts():
    text = status_markdown(_status_report())
    assert_no_raw_controls(text)
    assert "key\\x1b[2J\\x00\\u202eevil" in text
    assert f"| {CLEAN_KEY} |" in text
    assert "…(100007 chars)" in text and widest(text) < 3000


# --- the report page -------------------------------------------------------------------------------

def test_report_page_escapes_and_cuts():
    data = {
        "generated_at": "now", "limits": {"cells": 4}, "models_built": True, "raw_instructions": 1,
        "scan": {"built": True, "epochs": [], "runs_total": 0, "runs_read": 0, "cut_from": None},
        "by_status_generation": {"rows": [{"status": "missing_chunks", "generation": "g3", "uploads": 1,
                                           "chunks_present": 1, "chunks_missing": 0}], "generations": ["g3"],
                                 "verification": None},
        "incomplete": {"rows": [], "total": 2, "shown": 0},
        "chunk_maps": {"maps": [{"upload_key": key, "upload_shape": "linked_list", "generation": "g3",
                                 "status": "missing_chunks", "reason": "why\u202e\x1b", "expected": None,
                                 "present": 1, "missing": 0, "missing_piece_signature": "sig\x00", "indexes": 1,
                                 "cells": ["present"], "cells_cut": 0, "counts": {"present": 1}}
                                for key in (HOSTILE_KEY, CLEAN_KEY)],
                       "incomplete_total": 2, "cut_uploads": 0},
        "deliveries": {"targets": [{"target": BIG_TARGET, "delivered": 1, "failed": 0, "refused": 0, "never_tried": 0,
                                    "last_attempt_at": "2026-01-01T00:00:00+00:00"}], "targets_total": 1, "ready": 1},
    }
    page = render_html(data)
    assert_no_raw_controls(page)
    assert "key\\x1b[2J\\x00\\u202eevil" in page
    assert f'data-upload="{CLEAN_KEY}"' in page
    assert "…(100007 chars)" in page and len(page) < 50_000
