"""Issue 21 item 5: a reader backend that is down costs a few attempts, not max_attempts per upload
for the whole backlog. After IQ_EXPORT_BREAKER consecutive attempts without an HTTP answer the run
stops sending, records the other uploads as not attempted (still pending), and is not ok."""
from __future__ import annotations

import dataclasses

from iq_etl.export import export_ready
from iq_etl.export.runner import ExportOptions
from tests.support.export_rows import FAST, insert_rows, ledger_rows, many_uploads
from tests.support.net import free_port


def _refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/ingest"


def test_a_down_backend_opens_the_breaker_and_leaves_the_rest_for_the_next_run(settings, mart, backend):
    insert_rows(mart, many_uploads(40))
    options = dataclasses.replace(FAST, breaker_after=6)
    down = _refused_url()
    summary = export_ready(settings, mart, target=down, concurrency=4, options=options)
    # before: 40 uploads x 4 attempts = 160 attempts, each upload failed
    assert summary.breaker and "did not answer 6 attempts in a row" in summary.breaker and "IQ_EXPORT_BREAKER=6" in summary.breaker
    assert summary.attempts <= 6 + 4 * options.retry.max_attempts, summary.attempts
    assert summary.not_attempted >= 40 - 4 * 2 and summary.delivered == 0 and not summary.ok
    assert summary.failed + summary.not_attempted == 40
    left = ledger_rows(mart, status="not_attempted")
    assert len(left) == summary.not_attempted and all(r["attempt"] == 0 for r in left)
    assert "did not answer" in left[0]["error"]

    # the next run, backend up: every upload is delivered, the not-attempted ones included
    server = backend(path="/ingest")
    again = export_ready(settings, mart, target=f"{server.base_url}/ingest", options=options)
    assert again.delivered == 40 and again.ok and not again.breaker


def test_answers_keep_the_breaker_closed(settings, mart, backend):
    """HTTP errors are answers: a backend answering 500 is retried per upload as before, never 'down'."""
    from iq_etl.devchain.servers.reader_backend import Faults

    insert_rows(mart, many_uploads(5))
    server = backend(path="/ingest", faults=Faults(fail_times=1000))
    summary = export_ready(settings, mart, target=f"{server.base_url}/ingest",
                           options=dataclasses.replace(FAST, breaker_after=2))
    assert not summary.breaker and summary.not_attempted == 0 and summary.failed == 5


def test_the_breaker_setting_is_read_and_checked(tmp_path):
    import pytest

    from iq_etl.errors import SettingsError

    assert ExportOptions.from_env({"IQ_EXPORT_BREAKER": "3"}, dotenv=tmp_path / "x").breaker_after == 3
    with pytest.raises(SettingsError, match="IQ_EXPORT_BREAKER"):
        ExportOptions.from_env({"IQ_EXPORT_BREAKER": "0"}, dotenv=tmp_path / "x")


def test_a_long_retry_after_storm_is_bounded_per_upload(settings, mart, backend):
    """Issue 22 item 6: 429 with a huge Retry-After cost 4 capped waits per upload; the upload budget
    ends it at the first wait that would pass it."""
    from iq_etl.devchain.servers.reader_backend import Faults

    insert_rows(mart, many_uploads(2))
    server = backend(path="/ingest", faults=Faults(rate_limit_times=1000, retry_after="3600"))
    retry = dataclasses.replace(FAST.retry, max_attempts=10, retry_after_cap_s=0.4, upload_budget_s=1.0)
    summary = export_ready(settings, mart, target=f"{server.base_url}/ingest", concurrency=1,
                           options=dataclasses.replace(FAST, retry=retry))
    assert summary.failed == 2 and summary.attempts <= 2 * 4
    assert all("IQ_EXPORT_UPLOAD_BUDGET=1 s" in f["error"] for f in summary.failures), summary.failures


def test_the_run_budget_leaves_the_rest_for_the_next_run(settings, mart, backend):
    from iq_etl.devchain.servers.reader_backend import Faults

    insert_rows(mart, many_uploads(30))
    server = backend(path="/ingest", faults=Faults(latency_s=0.2))
    summary = export_ready(settings, mart, target=f"{server.base_url}/ingest", concurrency=1,
                           options=dataclasses.replace(FAST, run_budget_s=1.0))
    assert 0 < summary.delivered < 30 and summary.delivered + summary.not_attempted == 30
    assert "IQ_EXPORT_RUN_BUDGET" in summary.breaker and not summary.ok
    again = export_ready(settings, mart, target=f"{server.base_url}/ingest", concurrency=8, options=FAST)
    assert again.delivered == 30 - summary.delivered and again.ok


def test_urllib3_header_parsing_warnings_carry_no_traceback():
    """Issue 22 item 9: one line per unparseable answer, not a traceback per slow-loris attempt."""
    import logging

    import iq_etl.export.http_target  # noqa: F401 - installs the filter

    logger = logging.getLogger("urllib3.connection")
    try:
        raise ValueError("bad header")
    except ValueError:
        import sys

        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "Failed to parse headers (url=%s): %s",
                                   ("http://127.0.0.1:9/x", "bad"), sys.exc_info())
    assert all(f.filter(record) for f in logger.filters)
    assert record.exc_info is None and logging.Formatter().format(record).count("\n") == 0
