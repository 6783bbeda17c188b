"""The export tests' stand-in mart has exactly the contract's columns, and file bytes follow the gateway rule."""
from __future__ import annotations

import base64

from iq_etl.export.body import UPLOAD_COLUMNS
from tests.support.export_rows import COLUMN_NAMES, create_standin_mart, file_bytes


def test_standin_has_exactly_the_contract_columns_the_runner_reads(warehouse):
    create_standin_mart(warehouse)
    described = [row[0] for row in warehouse.query("DESCRIBE TABLE iq.sessions_ready_to_export").result_rows]
    assert described == COLUMN_NAMES
    # The runner reads every contract column except delivered_targets (it filters on it in SQL).
    assert set(UPLOAD_COLUMNS) == set(COLUMN_NAMES) - {"delivered_targets"}


def test_file_bytes_follows_the_gateway_rule():
    raw = b"hello world" * 20
    assert file_bytes(base64.b64encode(raw)) == (raw, "base64")
    assert file_bytes(b"data:text/plain;base64," + base64.b64encode(b"hi")) == (b"hi", "data_url")
    assert file_bytes(b"short text") == (b"short text", "text")
