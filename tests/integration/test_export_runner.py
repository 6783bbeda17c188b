"""Export runs against a real loopback reader backend and a real chDB warehouse.

The rows come from a stand-in for the dbt mart (see test_export_support.create_standin_mart): a
plain table with exactly the export contract's columns and hand-made uploads.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging

import pytest

from iq_etl.devchain.servers.reader_backend import Faults
from iq_etl.errors import IQEtlError
from iq_etl.export import export_ready
from tests.support.export_rows import (
    FAST,
    SESSION_A,
    SIG_TAIL,
    insert_rows,
    ledger_rows,
    many_uploads,
    reader_settings,
    upload_row,
)

TOKEN = "tok-DO-NOT-LEAK-1234567890"




def test_every_ready_upload_is_delivered_once_with_the_right_body(settings, mart, backend):
    server = backend()
    rows = [
        upload_row(f"{SESSION_A}:00112233445566778899aabbccddeeff", b"hello g2 session"),
        upload_row("G3SessionPda1111111111111111111111111111111", base64.b64encode(b"\x89PNG" + bytes(200)),
                   generation="g3", session_id="", merkle_root="", method=None, finalize_slot=None,
                   finalize_signature="", filename="pic.png", first_slot=2000),
        upload_row(SIG_TAIL, b"linked list text", generation="g1", session_account="", session_id="",
                   merkle_root="", first_slot=3000),
    ]
    insert_rows(mart, rows)
    summary = export_ready(reader_settings(settings, server), mart, options=FAST)
    assert (summary.selected, summary.delivered, summary.failed, summary.attempts) == (3, 3, 0, 3)
    assert summary.target == server.url and summary.ok
    by_key = {b["upload_key"]: b for b in server.received}
    assert set(by_key) == {r["upload_key"] for r in rows}
    for row in rows:
        body = by_key[row["upload_key"]]
        joined = base64.b64decode(body["payload_base64"])
        assert hashlib.sha256(joined).hexdigest() == body["sha256"] == row["sha256"]
        assert body["program_id"] == row["program_id"] and body["generation"] == row["generation"]
    assert by_key[SIG_TAIL]["session_pubkey"] is None
    g3 = by_key["G3SessionPda1111111111111111111111111111111"]
    assert g3["session_id"] is None and g3["finalize_slot"] == g3["last_slot"]
    delivered = ledger_rows(mart, status="delivered")
    assert len(delivered) == 3 and {r["target"] for r in delivered} == {server.url}
    assert all(r["http_status"] == 200 and r["attempt"] == 1 and r["run_id"] == summary.run_id for r in delivered)
    assert sum(r["payload_bytes"] for r in delivered) == summary.bytes_delivered == sum(r["payload_length"] for r in rows)


def test_a_second_run_sends_nothing_and_keys_are_stable(settings, mart, backend):
    server = backend()
    insert_rows(mart, many_uploads(5))
    s = reader_settings(settings, server)
    first = export_ready(s, mart, options=FAST)
    assert first.delivered == 5
    second = export_ready(s, mart, options=FAST)
    assert (second.selected, second.delivered, second.attempts) == (0, 0, 0)
    assert len(server.requests) == 5 and len(server.received) == 5
    # A new backend (nothing delivered there): same Idempotency-Keys as the first time.
    other = backend()
    keys_first = [r.idempotency_key for r in server.requests]
    third = export_ready(reader_settings(settings, other), mart, options=FAST)
    assert third.delivered == 5
    assert sorted(r.idempotency_key for r in other.requests) == sorted(keys_first)
    assert all(k == f"{b['upload_key']}:{b['sha256']}" for k, b in
               zip([r.idempotency_key for r in server.requests if r.outcome == "stored"], server.received))


def test_the_mart_delivered_targets_column_is_respected(settings, mart, backend):
    server = backend()
    rows = many_uploads(3)
    rows[0]["delivered_targets"] = [server.url]
    insert_rows(mart, rows)
    summary = export_ready(reader_settings(settings, server), mart, options=FAST)
    assert summary.selected == 2 and {b["upload_key"] for b in server.received} == {r["upload_key"] for r in rows[1:]}


def test_500s_timeouts_and_429_then_success_deliver_once_and_the_ledger_shows_retries(settings, mart, backend):
    # The slow answer (30 s) is always cut by the 2 s attempt deadline; the other answers have 2 s,
    # not 0.3 s, to arrive, so a loaded machine does not turn a 500/429/200 into a timeout.
    server = backend(faults=Faults(reset_times=0, fail_times=1, slow_times=1, slow_seconds=30.0,
                                   rate_limit_times=1, retry_after="0"))
    insert_rows(mart, many_uploads(3))
    options = dataclasses.replace(FAST, retry=dataclasses.replace(FAST.retry, timeout_s=2.0))
    summary = export_ready(reader_settings(settings, server), mart, options=options)
    assert (summary.delivered, summary.failed) == (3, 0)
    assert summary.retries == 3 * 3 and summary.attempts == 3 * 4
    # Each upload stored once although the timed-out request was also processed later.
    assert len(server.received) == 3
    for key in {b["upload_key"] for b in server.received}:
        rows = ledger_rows(mart, session_key=key)
        assert [r["status"] for r in rows] == ["retrying", "retrying", "retrying", "delivered"]
        assert [r["attempt"] for r in rows] == [1, 2, 3, 4]
        assert [r["http_status"] for r in rows] == [500, None, 429, 200]
        assert "attempt deadline" in rows[1]["error"]


def test_connection_resets_are_retried(settings, mart, backend):
    server = backend(faults=Faults(reset_times=2))
    insert_rows(mart, many_uploads(2))
    summary = export_ready(reader_settings(settings, server), mart, options=FAST)
    assert (summary.delivered, summary.retries) == (2, 4)
    assert len(server.received) == 2


def test_transient_failures_give_up_after_max_attempts_and_the_next_run_retries(settings, mart, backend):
    server = backend(faults=Faults(fail_times=6))
    insert_rows(mart, many_uploads(1))
    s = reader_settings(settings, server)
    first = export_ready(s, mart, options=FAST)
    assert (first.delivered, first.failed, first.attempts) == (0, 1, 4)
    statuses = [r["status"] for r in ledger_rows(mart)]
    assert statuses == ["retrying"] * 3 + ["failed"]
    assert "gave up after 4 attempt(s)" in ledger_rows(mart, status="failed")[0]["error"]
    second = export_ready(s, mart, options=FAST)  # requests 5 and 6 fail, 7 succeeds
    assert (second.delivered, second.attempts) == (1, 3)
    assert len(server.received) == 1


def test_a_400_is_a_permanent_failure_recorded_with_an_excerpt_and_not_retried_in_the_run(settings, mart, backend):
    rows = many_uploads(3)
    bad = rows[1]["upload_key"]
    server = backend(faults=Faults(bad_request_keys=frozenset({bad})))
    insert_rows(mart, rows)
    s = reader_settings(settings, server)
    summary = export_ready(s, mart, options=FAST)
    assert (summary.delivered, summary.failed, summary.retries) == (2, 1, 0)
    assert summary.failures[0]["upload_key"] == bad and summary.failures[0]["http_status"] == 400
    failed = ledger_rows(mart, session_key=bad)
    assert len(failed) == 1 and failed[0]["status"] == "failed" and failed[0]["http_status"] == 400
    assert "refused by the backend" in failed[0]["response_excerpt"]
    assert len(server.requests_for(f"{bad}:{rows[1]['sha256']}")) == 1
    # The next run tries it once more (a 4xx is usually fixed by configuration), and only it.
    again = export_ready(s, mart, options=FAST)
    assert (again.selected, again.failed, again.attempts) == (1, 1, 1)
    assert len(ledger_rows(mart, session_key=bad)) == 2


def test_token_is_sent_but_never_recorded_or_logged(settings, mart, backend, caplog):
    caplog.set_level(logging.DEBUG)
    server = backend(token=TOKEN, faults=Faults(fail_times=1))
    insert_rows(mart, many_uploads(2))
    summary = export_ready(reader_settings(settings, server, token=TOKEN), mart, options=FAST)
    assert summary.delivered == 2
    assert all(r.authorized for r in server.requests)
    dump = mart.query("SELECT * FROM iq.exports").result_rows
    assert TOKEN not in repr(dump)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(summary.to_dict())


def test_wrong_token_is_a_permanent_401_without_leaking_it(settings, mart, backend, caplog):
    caplog.set_level(logging.DEBUG)
    server = backend(token="the-right-one")
    insert_rows(mart, many_uploads(1))
    summary = export_ready(reader_settings(settings, server, token=TOKEN), mart, options=FAST)
    assert (summary.failed, summary.attempts) == (1, 1)
    row = ledger_rows(mart)[0]
    assert row["http_status"] == 401 and TOKEN not in repr(row) and TOKEN not in caplog.text


def test_token_goes_only_to_the_configured_reader_origin(settings, mart, backend):
    reader = backend()
    other = backend(token=TOKEN)  # would accept the token, but must never receive it
    insert_rows(mart, many_uploads(1))
    summary = export_ready(reader_settings(settings, reader, token=TOKEN), mart, target=other.url, options=FAST)
    assert summary.failed == 1 and [r.authorized for r in other.requests] == [False]


def test_credentials_in_the_target_url_are_not_recorded(settings, mart, backend):
    server = backend()
    insert_rows(mart, many_uploads(1))
    host_port = server.base_url.split("//", 1)[1]
    target = f"http://user:pa55word@{host_port}{server.path}?api_key=zzz&x=1"
    summary = export_ready(reader_settings(settings, server), mart, target=target, options=FAST)
    assert summary.delivered == 1
    assert summary.target == f"{server.url}?api_key=***&x=1"
    assert "pa55word" not in repr(ledger_rows(mart)) and "zzz" not in repr(ledger_rows(mart))


def test_oversize_payloads_are_refused_and_recorded_not_sent(settings, mart, backend):
    server = backend()
    rows = [upload_row(f"{SESSION_A}:01", b"x" * 2000), upload_row(f"{SESSION_A}:02", b"small", first_slot=2000)]
    insert_rows(mart, rows)
    options = dataclasses.replace(FAST, max_bytes=1000)
    summary = export_ready(reader_settings(settings, server), mart, options=options)
    assert (summary.delivered, summary.refused, summary.failed) == (1, 1, 0)
    assert not summary.ok
    assert [b["upload_key"] for b in server.received] == [f"{SESSION_A}:02"]
    refused = ledger_rows(mart, status="refused")
    assert len(refused) == 1 and refused[0]["session_key"] == f"{SESSION_A}:01"
    assert refused[0]["payload_bytes"] == 2000 and "exceeds the export limit" in refused[0]["error"]
    assert refused[0]["http_status"] is None and refused[0]["attempt"] == 0


def test_dry_run_records_dry_run_and_sends_nothing(settings, mart, backend):
    server = backend()
    insert_rows(mart, many_uploads(4))
    s = reader_settings(settings, server)
    summary = export_ready(s, mart, dry_run=True, options=FAST)
    assert (summary.selected, summary.would_send, summary.delivered, summary.attempts) == (4, 4, 0, 0)
    assert server.requests == []
    assert {r["status"] for r in ledger_rows(mart)} == {"dry_run"} and len(ledger_rows(mart)) == 4
    # A dry run delivers nothing: the real run still sends everything.
    assert export_ready(s, mart, options=FAST).delivered == 4


def test_limit_sends_the_oldest_first(settings, mart, backend):
    server = backend()
    rows = many_uploads(5)
    insert_rows(mart, rows)
    summary = export_ready(reader_settings(settings, server), mart, limit=2, options=FAST)
    assert summary.delivered == 2
    assert sorted(b["upload_key"] for b in server.received) == [rows[0]["upload_key"], rows[1]["upload_key"]]


def test_concurrency_is_bounded(settings, mart, backend):
    server = backend(faults=Faults(latency_s=0.05))
    insert_rows(mart, many_uploads(24))
    s = reader_settings(settings, server)
    summary = export_ready(s, mart, concurrency=3, options=FAST)
    assert summary.delivered == 24
    assert 1 <= server.max_in_flight <= 3


def test_concurrency_one_sends_one_at_a_time(settings, mart, backend):
    server = backend(faults=Faults(latency_s=0.02))
    insert_rows(mart, many_uploads(6))
    assert export_ready(reader_settings(settings, server), mart, concurrency=1, options=FAST).delivered == 6
    assert server.max_in_flight == 1


def test_a_changed_upload_content_is_a_new_delivery(settings, mart, backend):
    server = backend()
    key = f"{SESSION_A}:0a"
    insert_rows(mart, [upload_row(key, b"version one")])
    s = reader_settings(settings, server)
    assert export_ready(s, mart, options=FAST).delivered == 1
    mart.command("TRUNCATE TABLE iq.sessions_ready_to_export")
    insert_rows(mart, [upload_row(key, b"version two")])
    assert export_ready(s, mart, options=FAST).delivered == 1
    assert [base64.b64decode(b["payload_base64"]) for b in server.received] == [b"version one", b"version two"]


def test_unreachable_backend_fails_after_retries(settings, mart, backend):
    server = backend()
    url = server.url
    server.shutdown()  # nothing listens on that port any more
    insert_rows(mart, many_uploads(1))
    summary = export_ready(settings, mart, target=url, options=FAST)
    assert (summary.failed, summary.attempts) == (1, 4)
    assert "ConnectionError" in ledger_rows(mart, status="failed")[0]["error"]


def test_missing_mart_is_a_clear_error(settings, warehouse):
    with pytest.raises(IQEtlError, match="iq-etl transform"):
        export_ready(settings, warehouse, target="file://./x", options=FAST)


def test_a_payload_not_matching_its_sha256_is_refused_not_sent(settings, mart, backend):
    server = backend()
    rows = many_uploads(2)
    rows[0]["sha256"] = "11" * 32
    insert_rows(mart, rows)
    summary = export_ready(reader_settings(settings, server), mart, options=FAST)
    assert (summary.delivered, summary.refused) == (1, 1)
    assert [b["upload_key"] for b in server.received] == [rows[1]["upload_key"]]
    refused = ledger_rows(mart, status="refused")
    assert len(refused) == 1 and "does not match its sha256" in refused[0]["error"]


def test_secrets_in_the_target_url_stay_out_of_error_texts(settings, mart, backend):
    server = backend()
    port = server.server_address[1]
    server.shutdown()  # connection refused: requests' error text names the URL
    insert_rows(mart, many_uploads(1))
    target = f"http://user:pa55word@127.0.0.1:{port}/ingest?api_key=sekrit-value"
    summary = export_ready(settings, mart, target=target, options=FAST)
    assert summary.failed == 1
    text = repr(ledger_rows(mart)) + repr(summary.to_dict())
    assert "sekrit-value" not in text and "pa55word" not in text
