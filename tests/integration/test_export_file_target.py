"""The file:// target through the real runner: one folder per upload with the decoded file and
upload.json; hostile names stay inside the folder; writes are atomic and recorded only when done."""
from __future__ import annotations

import base64
import hashlib
import json
import os

from iq_etl.export import export_ready
from iq_etl.export.file_target import FileTarget, write_atomic
from tests.support.export_rows import (
    FAST,
    SESSION_A,
    SIG_TAIL,
    create_standin_mart,
    insert_rows,
    ledger_rows,
    upload_row,
)


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_file_target_writes_file_bytes_and_upload_json(settings, warehouse, tmp_path):
    create_standin_mart(warehouse)
    png = b"\x89PNG\r\n" + bytes(range(256)) * 2
    g2_key = f"{SESSION_A}:00112233445566778899aabbccddeeff"
    rows = [
        upload_row(g2_key, base64.b64encode(png), filename="picture.png", filetype="png"),
        upload_row(SIG_TAIL, b"plain text from a linked list", generation="g1", filename="", filetype="txt",
                   session_account="", first_slot=3000),
    ]
    insert_rows(warehouse, rows)
    out = tmp_path / "exports"
    summary = export_ready(settings, warehouse, target=f"file://{out}", options=FAST)
    assert (summary.delivered, summary.failed) == (2, 0)
    assert summary.target == out.as_uri()
    g2_dir = out / g2_key.replace(":", "_")
    assert _tree(out) == sorted([f"{g2_dir.name}/picture.png", f"{g2_dir.name}/upload.json",
                                 f"{SIG_TAIL}/upload.txt", f"{SIG_TAIL}/upload.json"])
    assert (g2_dir / "picture.png").read_bytes() == png
    meta = json.loads((g2_dir / "upload.json").read_text())
    assert "payload_base64" not in meta
    assert meta["sha256"] == rows[0]["sha256"] and meta["file_sha256"] == hashlib.sha256(png).hexdigest()
    assert meta["upload_key"] == g2_key and meta["session_pubkey"] == SESSION_A
    assert (out / SIG_TAIL / "upload.txt").read_bytes() == b"plain text from a linked list"
    delivered = ledger_rows(warehouse, status="delivered")
    assert {r["target"] for r in delivered} == {out.as_uri()}
    assert {r["response_excerpt"] for r in delivered} == {f"{g2_dir.name}/picture.png", f"{SIG_TAIL}/upload.txt"}
    # Second run: nothing to do.
    again = export_ready(settings, warehouse, target=f"file://{out}", options=FAST)
    assert (again.selected, again.delivered) == (0, 0)


def test_relative_file_url_is_recorded_as_an_absolute_target(settings, warehouse, tmp_path, monkeypatch):
    create_standin_mart(warehouse)
    insert_rows(warehouse, [upload_row(f"{SESSION_A}:01", b"one")])
    monkeypatch.chdir(tmp_path)
    summary = export_ready(settings, warehouse, target="file://./exports", options=FAST)
    assert summary.delivered == 1 and summary.target == (tmp_path / "exports").as_uri()
    # The same folder named absolutely is the same target: nothing is sent again.
    assert export_ready(settings, warehouse, target=f"file://{tmp_path}/exports", options=FAST).selected == 0


def test_hostile_names_from_chain_metadata_stay_inside_the_folder(settings, warehouse, tmp_path):
    create_standin_mart(warehouse)
    hostile = ["../../escape.txt", "/etc/passwd", "..", "CON", "a\x00b.txt", "-rf", "upload.json",
               "x" * 500 + ".txt", "..\\..\\win.ini"]
    rows = [upload_row(f"{SESSION_A}:{i:02x}", f"content {i}".encode(), filename=name, first_slot=1000 + i)
            for i, name in enumerate(hostile)]
    insert_rows(warehouse, rows)
    out = tmp_path / "box" / "exports"
    summary = export_ready(settings, warehouse, target=f"file://{out}", options=FAST)
    assert summary.delivered == len(hostile)
    assert [p for p in (tmp_path / "box").iterdir()] == [out]  # nothing written beside the folder
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(hostile)
    for path in files:
        assert path.resolve().parent.parent == out.resolve()
        assert len(path.name.encode()) <= 120
    # A file called "upload.json" on chain does not overwrite the metadata file.
    folder = out / f"{SESSION_A}_06"
    assert sorted(p.name for p in folder.iterdir()) == ["file-upload.json", "upload.json"]
    assert (folder / "file-upload.json").read_bytes() == b"content 6"
    assert json.loads((folder / "upload.json").read_text())["filename"] == "upload.json"


def test_a_failed_write_is_recorded_as_failed_and_leaves_no_half_file(settings, warehouse, tmp_path):
    create_standin_mart(warehouse)
    key = f"{SESSION_A}:0b"
    insert_rows(warehouse, [upload_row(key, b"payload", filename="doc.txt")])
    out = tmp_path / "exports"
    # A directory where the file should go: the final rename fails (a real OS error).
    (out / f"{SESSION_A}_0b" / "doc.txt").mkdir(parents=True)
    summary = export_ready(settings, warehouse, target=f"file://{out}", options=FAST)
    assert (summary.delivered, summary.failed) == (0, 1)
    assert [r["status"] for r in ledger_rows(warehouse)] == ["failed"]
    leftovers = [p.name for p in (out / f"{SESSION_A}_0b").iterdir()]
    assert leftovers == ["doc.txt"]  # no temporary file, no upload.json
    # Once the obstacle is gone the next run delivers it.
    (out / f"{SESSION_A}_0b" / "doc.txt").rmdir()
    assert export_ready(settings, warehouse, target=f"file://{out}", options=FAST).delivered == 1
    assert (out / f"{SESSION_A}_0b" / "doc.txt").read_bytes() == b"payload"


def test_file_bytes_not_matching_their_hash_are_refused(settings, warehouse, tmp_path):
    create_standin_mart(warehouse)
    row = upload_row(f"{SESSION_A}:0c", b"payload")
    row["file_sha256"] = "00" * 32
    insert_rows(warehouse, [row])
    summary = export_ready(settings, warehouse, target=f"file://{tmp_path / 'out'}", options=FAST)
    assert summary.refused == 1 and not (tmp_path / "out").exists()
    assert "do not match file_sha256" in ledger_rows(warehouse)[0]["error"]


def test_write_atomic_replaces_whole_content(tmp_path):
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")
    write_atomic(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_file_target_paths_for_hostile_key(tmp_path):
    target = FileTarget(f"file://{tmp_path}")
    from iq_etl.export.body import ReadyUpload
    from tests.support.export_rows import COLUMN_NAMES

    row = upload_row("../../etc", b"x", filename="../../passwd")
    upload = ReadyUpload.from_row(COLUMN_NAMES, [row[c] for c in COLUMN_NAMES])
    data_path, meta_path = target.paths_for(upload)
    assert data_path.parent == meta_path.parent and data_path.parent.parent == tmp_path
    assert ".." not in data_path.parent.name
