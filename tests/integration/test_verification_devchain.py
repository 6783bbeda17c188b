"""Verification (docs/protocol.md, "Verification") on a real chDB warehouse: G1 lists are checked
against the Merkle root in db_code_in `offset`; a tampered piece is a 'mismatch' in the marts, in
`iq-etl status`, refused by export (the loopback reader backend receives nothing for it) and listed
as refused with its reason; everything else is 'unverifiable' with the reason."""
from __future__ import annotations

import json

import pytest

from iq_etl.cli import main as cli
from iq_etl.export import export_ready
from iq_etl.settings import G1_PROGRAM_ID
from iq_etl.status import print_status, status_report
from iq_etl.warehouse.rows import RAW_COLUMNS
from tests.support.export_rows import FAST, reader_settings
from tests.support.merkle import g1_root as root
from tests.support.raw_rows import Chain, account, insert_rows, query_dicts, raw_row, sig


def g1_list(c: Chain, name: str, pieces: list[bytes], *, offset: str | None = None,
            tamper: int | None = None) -> tuple[str, list[list]]:
    """Raw rows of one G1 linked list (pieces sent in order) and its db_code_in; `offset` defaults
    to the real root of `pieces`; `tamper` changes that piece's bytes on chain after the root was
    committed."""
    sigs = [sig(f"{name}{i}") for i in range(len(pieces))]
    rows = []
    for i, piece in enumerate(pieces):
        sent = piece[:-1] + (b"B" if piece[-1:] == b"A" else b"A") if i == tamper else piece
        rows.append(c.linked_piece("g1", sigs[i], "Genesis" if i == 0 else sigs[i - 1], sent))
    rows.append(raw_row(slot=c.next_slot(), kind="linked_index", generation="g1", program_id=G1_PROGRAM_ID,
                        instruction="db_code_in", handle=name, tail_tx=sigs[-1], type_field="text/plain",
                        offset=root(pieces) if offset is None else offset))
    return sigs[-1], rows


def test_g1_roots_verify_and_a_tampered_piece_is_refused(settings, settings_env, warehouse, backend, tmp_path,
                                                         monkeypatch, capsys):
    from iq_etl.transform.runner import run_dbt

    c = Chain()
    rows: list[list] = []
    good: dict[str, list[bytes]] = {}
    for count in (1, 2, 3, 5, 8):
        pieces = [f"piece {k} of list {count} ".encode() * 3 for k in range(count)]
        key, list_rows = g1_list(c, f"good{count}", pieces)
        good[key] = pieces
        rows += list_rows
    tampered_key, list_rows = g1_list(c, "tampered", [b"first piece A", b"second piece A", b"third piece A"], tamper=1)
    rows += list_rows
    not_a_root, list_rows = g1_list(c, "noroot", [b"x" * 10, b"y" * 10], offset="12345")
    rows += list_rows
    broken_pieces = [b"p0", b"p1", b"p2"]
    broken_key, list_rows = g1_list(c, "broken", broken_pieces)
    rows += [r for r in list_rows if r[RAW_COLUMNS.index("signature")] != sig("broken1")]  # piece 1 never lands
    g2_acct, g2_sid = account("g2verif"), "cd" * 16
    rows += [c.g2_chunk(g2_acct, g2_sid, 0, b"hello "), c.g2_chunk(g2_acct, g2_sid, 1, b"world"),
             c.g2_finalize(g2_acct, g2_sid, 2, root="ab" * 32)]
    insert_rows(warehouse, rows)
    run_dbt(settings, quiet=True)

    marts = {r["upload_key"]: r for r in query_dicts(
        warehouse, "SELECT upload_key, status, verification, verification_reason, committed_root, computed_root "
                   "FROM iq.session_completeness")}
    for key, pieces in good.items():
        row = marts[key]
        assert (row["status"], row["verification"]) == ("complete", "verified"), row
        assert row["computed_root"] == row["committed_root"] == root(pieces)
        assert f"of {len(pieces)} piece(s) equals db_code_in offset" in row["verification_reason"]
    bad = marts[tampered_key]
    assert (bad["status"], bad["verification"]) == ("complete", "mismatch")
    assert bad["committed_root"] in bad["verification_reason"] and bad["computed_root"] in bad["verification_reason"]
    assert (marts[not_a_root]["verification"], marts[not_a_root]["status"]) == ("unverifiable", "complete")
    assert "12345 is not a base58 sha256 Merkle root" in marts[not_a_root]["verification_reason"]
    assert marts[broken_key]["verification"] == "unverifiable"
    assert marts[broken_key]["verification_reason"] == "upload is missing_chunks: the G1 Merkle root covers every piece"
    g2 = marts[f"{g2_acct}:{g2_sid}"]
    assert g2["verification"] == "unverifiable" and "not public" in g2["verification_reason"]
    for mart in ("upload_payloads", "session_payloads", "sessions_ready_to_export"):
        got = query_dicts(warehouse, f"SELECT verification FROM iq.{mart} WHERE upload_key = {{k:String}}",
                          {"k": tampered_key})
        assert [r["verification"] for r in got] == ["mismatch"], mart

    # Export: the mismatch never leaves, is refused with its reason (ledger and summary); the rest go.
    server = backend()
    s = reader_settings(settings, server)
    summary = export_ready(s, warehouse, options=FAST)
    exportable = {k for k, r in marts.items() if r["status"] == "complete" and r["verification"] != "mismatch"}
    assert (summary.delivered, summary.refused, summary.failed) == (len(exportable), 1, 0)
    assert {b["upload_key"] for b in server.received} == exportable
    assert all(b["upload_key"] != tampered_key for b in server.received)
    assert {b["verification"] for b in server.received if b["upload_key"] in good} == {"verified"}
    [refusal] = summary.failures
    assert refusal["upload_key"] == tampered_key and refusal["status"] == "refused"
    assert refusal["error"].startswith("verification mismatch: G1 Merkle root of the 3 piece(s)")
    ledger = query_dicts(warehouse, "SELECT status, error FROM iq.exports WHERE session_key = {k:String}",
                         {"k": tampered_key})
    assert [r["status"] for r in ledger] == ["refused"] and "never exported" in ledger[0]["error"]
    again = export_ready(s, warehouse, options=FAST)   # refused again, still never sent
    assert (again.delivered, again.refused) == (0, 1) and len(server.received) == len(exportable)
    dry = export_ready(s, warehouse, dry_run=True, options=FAST)
    assert dry.refused == 1 and dry.failures[0]["upload_key"] == tampered_key

    # Status: counted and listed, and not "ready to export".
    report = status_report(warehouse)
    assert report["verification"]["totals"]["mismatch"] == 1
    assert report["verification"]["totals"]["verified"] == len(good)
    assert [m["upload_key"] for m in report["verification"]["mismatches"]] == [tampered_key]
    assert report["ready_to_export"] == 0
    # The coverage report names it too (issue 22 item 9: it only counted it)
    from iq_etl.report import report_data
    from iq_etl.report.html import render_html

    data = report_data(warehouse)
    assert [m["upload_key"] for m in data["by_status_generation"]["verification"]["mismatches"]] == [tampered_key]
    page = render_html(data)
    assert 'id="verification-refused"' in page and tampered_key in page
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli.main(["status", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["verification"]["mismatches"][0]["upload_key"] == tampered_key
    assert cli.main(["status"]) == 0
    text = capsys.readouterr().out
    assert "1 verification mismatch (never exported)" in text and "Verification mismatches" in text


@pytest.mark.slow  # end to end (a flow or the CLI over a whole dev chain): CI runs it with the slow suite
def test_devchain_g1_uploads_verify_until_a_piece_is_tampered(settings, warehouse, backend, tmp_path):
    from iq_etl.devchain.build import CATALOGUE_UPLOADS, build_chain
    from iq_etl.devchain.chain import car_template
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.transform.runner import run_dbt

    manifest = build_chain(tmp_path / "chain", seed=11, sessions=CATALOGUE_UPLOADS + 2, noise_tx_per_slot=0)
    run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}", source="car",
               car_url=car_template(tmp_path / "chain"), extra_program_ids=tuple(manifest.extra_program_ids)))
    run_dbt(settings, quiet=True)
    verdicts = {r["upload_key"]: r for r in query_dicts(
        warehouse, "SELECT upload_key, generation, status, verification, verification_reason "
                   "FROM iq.session_completeness")}
    g1_complete = [u for u in manifest.uploads if u.generation == "g1" and u.expected_status == "complete"]
    assert g1_complete
    for u in g1_complete:
        assert verdicts[u.upload_key]["verification"] == "verified", verdicts[u.upload_key]
    assert {r["verification"] for r in verdicts.values() if r["generation"] != "g1"} == {"unverifiable"}

    # One piece of the first complete G1 list now carries other bytes (same length, still base64 text).
    target = g1_complete[0].upload_key
    [piece] = query_dicts(warehouse, "SELECT chosen_signature FROM iq.int_session_chunks "
                                     "WHERE upload_key = {k:String} AND chunk_index = 1", {"k": target})
    warehouse.command(
        "INSERT INTO iq.raw_instructions SELECT * REPLACE ("
        " concat(substring(payload, 1, 4), if(substring(payload, 5, 1) = 'A', 'B', 'A'), substring(payload, 6)) AS payload,"
        " ingested_at + INTERVAL 1 SECOND AS ingested_at)"
        " FROM iq.raw_instructions FINAL WHERE signature = {s:String} AND kind = 'linked_piece'",
        parameters={"s": piece["chosen_signature"]})
    run_dbt(settings, quiet=True, full_refresh=True)
    [row] = query_dicts(warehouse, "SELECT status, verification, verification_reason FROM iq.session_completeness "
                                   "WHERE upload_key = {k:String}", {"k": target})
    assert (row["status"], row["verification"]) == ("complete", "mismatch"), row

    server = backend()
    summary = export_ready(reader_settings(settings, server), warehouse, options=FAST)
    received = {b["upload_key"] for b in server.received}
    complete = {u.upload_key for u in manifest.uploads if u.expected_status == "complete"}
    assert target not in received and received == complete - {target}
    assert summary.refused == 1 and summary.failures[0]["upload_key"] == target
    assert "verification mismatch" in summary.failures[0]["error"]
    report = status_report(warehouse)
    assert [m["upload_key"] for m in report["verification"]["mismatches"]] == [target]
    import io

    out = io.StringIO()
    print_status(report, file=out)
    assert "Verification mismatches (never exported)" in out.getvalue()
