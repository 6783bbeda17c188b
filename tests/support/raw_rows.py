"""Hand-built `iq.raw_instructions` rows: a chain of upload scenarios (every generation and shape,
complete and broken) with the outcome each should have in the marts."""
from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from iq_etl.settings import G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID
from iq_etl.warehouse.rows import RAW_COLUMNS

LEGACY_PROGRAM_ID = "Legacy1111111111111111111111111111111111111"


_counter = itertools.count(1)


def sig(name: str) -> str:
    """A signature-like string (88 characters, like base58 of 64 bytes) unique to `name`."""
    return (name + "_" + hashlib.sha256(name.encode()).hexdigest() * 2)[:88]


def account(name: str) -> str:
    return (name + hashlib.sha256(name.encode()).hexdigest())[:44]


def raw_row(*, slot: int, kind: str, generation: str, program_id: str, instruction: str, signature: str | None = None,
            tx_index: int = 0, ix_index: int = 0, inner_index: int = -1, ok: bool = True, **fields: Any) -> list[Any]:
    """One iq.raw_instructions row with defaults for what the instruction does not carry."""
    values: dict[str, Any] = {
        "slot": slot, "block_time": 1_770_000_000 + slot, "signature": signature or sig(f"tx{next(_counter)}"),
        "tx_index": tx_index, "ix_index": ix_index, "inner_index": inner_index, "stack_height": None,
        "program_id": program_id, "generation": generation, "kind": kind, "instruction": instruction,
        "session_account": "", "session_id": "", "chunk_index": None, "total_chunks": None, "seq": None,
        "method": None, "decode_break": None, "merkle_root": "", "payload": b"", "on_chain_path": "",
        "metadata": "", "before_tx": "", "handle": "", "tail_tx": "", "type_field": "", "offset": "",
        "accounts": [], "data": b"", "tx_status": "ok" if ok else "failed",
        "tx_error": "" if ok else "custom program error: 0x1770", "source": "car", "run_id": "test",
    }
    for key, value in fields.items():
        if key not in values:
            raise KeyError(key)
        values[key] = value
    for key in ("payload", "data"):
        if isinstance(values[key], str):
            values[key] = values[key].encode()
    return [values[c] for c in RAW_COLUMNS]


def insert_rows(client, rows: list[list[Any]]) -> None:
    # clickhouse-connect wants one Python type per String column within an insert: bytes for all.
    text_cols = {i for i, c in enumerate(RAW_COLUMNS) if c in (
        "signature", "program_id", "generation", "kind", "instruction", "session_account", "session_id",
        "merkle_root", "on_chain_path", "metadata", "before_tx", "handle", "tail_tx", "type_field", "offset",
        "tx_status", "tx_error", "source", "run_id")}
    fixed = [[v.encode() if i in text_cols and isinstance(v, str) else v for i, v in enumerate(r)] for r in rows]
    client.insert("iq.raw_instructions", fixed, column_names=list(RAW_COLUMNS))


@dataclass
class Upload:
    """What a scenario expects: the key, the status, and (complete) the bytes it joins to."""
    key: str
    status: str
    joined: bytes | None = None
    file_bytes: bytes | None = None
    decode_rule: str | None = None
    rows: list[list[Any]] = field(default_factory=list)


class Chain:
    """Builds the raw rows of the scenarios; slots increase as rows are added."""

    def __init__(self, start_slot: int = 400_000_000):
        self.slot = start_slot
        self.uploads: dict[str, Upload] = {}

    def next_slot(self, step: int = 1) -> int:
        self.slot += step
        return self.slot

    # G2 --------------------------------------------------------------------------------------
    def g2_chunk(self, acct: str, sid: str, index: int, payload: bytes, *, slot: int | None = None, ok: bool = True,
                 generation: str = "g2_pinocchio", signature: str | None = None, ix_index: int = 0) -> list[Any]:
        return raw_row(slot=slot or self.next_slot(), kind="chunk", generation=generation,
                       program_id=G2_PROGRAM_ID if generation == "g2_pinocchio" else LEGACY_PROGRAM_ID,
                       instruction="chunk" if generation == "g2_pinocchio" else "post_hybrid_chunk",
                       session_account=acct, session_id=sid, chunk_index=index, method=0, payload=payload, ok=ok,
                       signature=signature, ix_index=ix_index)

    def g2_finalize(self, acct: str, sid: str, total: int, *, slot: int | None = None, root: str = "",
                    generation: str = "g2_pinocchio", bundle: bool = False) -> list[Any]:
        instruction = "finalize_bundle" if bundle else ("finalize" if generation == "g2_pinocchio" else "finalize_hybrid_session")
        return raw_row(slot=slot or self.next_slot(), kind="finalize", generation=generation,
                       program_id=G2_PROGRAM_ID if generation == "g2_pinocchio" else LEGACY_PROGRAM_ID,
                       instruction=instruction, session_account=acct, session_id="" if bundle else sid,
                       total_chunks=total, merkle_root=root)

    # G3 --------------------------------------------------------------------------------------
    def g3_create(self, pda: str, seq: int = 0) -> list[Any]:
        return raw_row(slot=self.next_slot(), kind="create_session", generation="g3", program_id=G3_PROGRAM_ID,
                       instruction="create_session", session_account=pda, seq=seq)

    def g3_chunk(self, pda: str, index: int, text: bytes, *, ok: bool = True, slot: int | None = None) -> list[Any]:
        return raw_row(slot=slot or self.next_slot(), kind="chunk", generation="g3", program_id=G3_PROGRAM_ID,
                       instruction="post_chunk", session_account=pda, chunk_index=index, method=0, decode_break=0,
                       payload=text, ok=ok)

    def g3_code_in(self, *, on_chain_path: str, metadata: str, total: int | None = None, session: str = "",
                   payload: bytes = b"", signature: str | None = None, ok: bool = True) -> list[Any]:
        tail = on_chain_path if len(on_chain_path) >= 80 else ""
        return raw_row(slot=self.next_slot(), kind="finalize", generation="g3", program_id=G3_PROGRAM_ID,
                       instruction="user_inventory_code_in", session_account=session, total_chunks=total,
                       on_chain_path=on_chain_path, metadata=metadata, payload=payload, tail_tx=tail,
                       signature=signature, ok=ok)

    def linked_piece(self, generation: str, signature: str, before: str, piece: bytes) -> list[Any]:
        return raw_row(slot=self.next_slot(), kind="linked_piece", generation=generation,
                       program_id=G1_PROGRAM_ID if generation == "g1" else G3_PROGRAM_ID, instruction="send_code",
                       signature=signature, before_tx=before, payload=piece, method=0, decode_break=0)

    def g1_index(self, tail: str, handle: str = "alice") -> list[Any]:
        return raw_row(slot=self.next_slot(), kind="linked_index", generation="g1", program_id=G1_PROGRAM_ID,
                       instruction="db_code_in", handle=handle, tail_tx=tail, type_field="image/png", offset="root")

    def add(self, upload: Upload, rows: list[list[Any]]) -> Upload:
        upload.rows.extend(rows)
        self.uploads[upload.key] = upload
        return upload


def metadata(filename: str, total: int, filetype: str = "image/png", data: str | None = None) -> str:
    import json

    meta: dict[str, Any] = {"filetype": filetype, "method": 0, "filename": filename, "total_chunks": total}
    if data is not None:
        meta["data"] = data
    return json.dumps(meta, separators=(",", ":"))


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def file_bytes(seed: str, size: int) -> bytes:
    out = b""
    while len(out) < size:
        out += hashlib.sha256((seed + str(len(out))).encode()).digest()
    return b"\x89PNG\r\n\x1a\n" + out[: size - 8]


def build_scenarios() -> Chain:
    """Every status and hard case the models must handle, as raw rows."""
    c = Chain()
    # G2 duplicate (same bytes) + out of order ------------------------------------------------
    acct, sid = account("g2dup"), "aa" * 16
    parts = split(file_bytes("g2dup", 100), 40)
    c.add(Upload(f"{acct}:{sid}", "complete", joined=b"".join(parts)), [
        c.g2_chunk(acct, sid, 2, parts[2]), c.g2_chunk(acct, sid, 0, parts[0]), c.g2_chunk(acct, sid, 1, parts[1]),
        c.g2_chunk(acct, sid, 1, parts[1]), c.g2_finalize(acct, sid, 3, root="ab" * 32)])
    # G2 conflicting duplicate -----------------------------------------------------------------
    acct, sid = account("g2conflict"), "bb" * 16
    parts = split(file_bytes("g2conflict", 90), 30)
    c.add(Upload(f"{acct}:{sid}", "conflicting_chunks"), [
        c.g2_chunk(acct, sid, 0, parts[0]), c.g2_chunk(acct, sid, 1, parts[1]), c.g2_chunk(acct, sid, 2, parts[2]),
        c.g2_chunk(acct, sid, 2, parts[2][::-1]), c.g2_finalize(acct, sid, 3)])
    # G2 failed chunk re-sent ------------------------------------------------------------------
    acct, sid = account("g2failed"), "cc" * 16
    parts = split(file_bytes("g2failed", 90), 30)
    c.add(Upload(f"{acct}:{sid}", "complete", joined=b"".join(parts)), [
        c.g2_chunk(acct, sid, 1, b"garbage from a failed tx", ok=False), c.g2_chunk(acct, sid, 0, parts[0]),
        c.g2_chunk(acct, sid, 2, parts[2]), c.g2_chunk(acct, sid, 1, parts[1]), c.g2_finalize(acct, sid, 3)])
    # G2 finalize before its chunks ------------------------------------------------------------
    acct, sid = account("g2finfirst"), "dd" * 16
    parts = split(file_bytes("g2finfirst", 80), 20)
    c.add(Upload(f"{acct}:{sid}", "complete", joined=b"".join(parts)), [
        c.g2_chunk(acct, sid, 0, parts[0]), c.g2_finalize(acct, sid, 4),
        *[c.g2_chunk(acct, sid, i, parts[i]) for i in (1, 2, 3)]])
    # G2 missing chunk (never lands) -----------------------------------------------------------
    acct, sid = account("g2missing"), "ee" * 16
    parts = split(file_bytes("g2missing", 100), 20)
    c.add(Upload(f"{acct}:{sid}", "missing_chunks"), [
        *[c.g2_chunk(acct, sid, i, parts[i]) for i in (0, 1, 3, 4)], c.g2_finalize(acct, sid, 5)])
    # G2 failed chunk never re-sent ------------------------------------------------------------
    acct, sid = account("g2failonly"), "ef" * 16
    parts = split(file_bytes("g2failonly", 60), 20)
    c.add(Upload(f"{acct}:{sid}", "missing_chunks"), [
        c.g2_chunk(acct, sid, 0, parts[0]), c.g2_chunk(acct, sid, 1, parts[1], ok=False),
        c.g2_chunk(acct, sid, 2, parts[2]), c.g2_finalize(acct, sid, 3)])
    # G2 awaiting finalize ----------------------------------------------------------------------
    acct, sid = account("g2awaiting"), "0f" * 16
    parts = split(file_bytes("g2awaiting", 60), 20)
    c.add(Upload(f"{acct}:{sid}", "awaiting_finalize"), [c.g2_chunk(acct, sid, i, parts[i]) for i in range(3)])
    # G2 account reused with a new session id: two uploads -------------------------------------
    acct = account("g2reused")
    for n, sid in enumerate(("01" * 16, "02" * 16)):
        parts = split(file_bytes(f"g2reused{n}", 50), 25)
        c.add(Upload(f"{acct}:{sid}", "complete", joined=b"".join(parts)),
              [c.g2_chunk(acct, sid, 0, parts[0]), c.g2_chunk(acct, sid, 1, parts[1]), c.g2_finalize(acct, sid, 2)])
    # G2-legacy finalize_bundle (no session id): attached to the account's preceding session ---
    acct, sid = account("legacybundle"), "03" * 16
    parts = split(file_bytes("legacybundle", 60), 30)
    c.add(Upload(f"{acct}:{sid}", "complete", joined=b"".join(parts)), [
        c.g2_chunk(acct, sid, 0, parts[0], generation="g2_legacy"),
        c.g2_chunk(acct, sid, 1, parts[1], generation="g2_legacy"),
        c.g2_finalize(acct, sid, 2, generation="g2_legacy", bundle=True)])
    # G2 hostile total (4 billion): missing, but nothing explodes --------------------------------
    acct, sid = account("g2huge"), "04" * 16
    c.add(Upload(f"{acct}:{sid}", "missing_chunks"), [
        c.g2_chunk(acct, sid, 0, b"x"), c.g2_chunk(acct, sid, 1, b"y"), c.g2_finalize(acct, sid, 4_000_000_000)])
    # G3 session of base64 text (the gateway decodes it) --------------------------------------
    pda = account("g3session")
    original = file_bytes("g3session", 300)
    text = base64.b64encode(original)
    parts = split(text, 150)
    c.add(Upload(pda, "complete", joined=text, file_bytes=original, decode_rule="base64"), [
        c.g3_create(pda), c.g3_chunk(pda, 2, parts[2]), c.g3_chunk(pda, 0, parts[0]), c.g3_chunk(pda, 1, parts[1]),
        c.g3_code_in(on_chain_path=pda, session=pda, total=3, metadata=metadata("photo.png", 3))])
    # G3 data: URL -------------------------------------------------------------------------------
    pda = account("g3dataurl")
    original = file_bytes("g3dataurl", 120)
    text = b"data:image/png;base64," + base64.b64encode(original)
    parts = split(text, 100)
    c.add(Upload(pda, "complete", joined=text, file_bytes=original, decode_rule="data_url"), [
        c.g3_create(pda), *[c.g3_chunk(pda, i, p) for i, p in enumerate(parts)],
        c.g3_code_in(on_chain_path=pda, session=pda, total=len(parts), metadata=metadata("d.png", len(parts)))])
    # G3 plain text (short: the gateway keeps it) ------------------------------------------------
    pda = account("g3text")
    text = "plain UTF-8 text, naïve über\n".encode()
    c.add(Upload(pda, "complete", joined=text, file_bytes=text, decode_rule="text"), [
        c.g3_chunk(pda, 0, text[:10]), c.g3_chunk(pda, 1, text[10:]),
        c.g3_code_in(on_chain_path=pda, session=pda, total=2, metadata=metadata("notes.txt", 2, "text/plain"))])
    # G3 SessionFinalize and metadata disagree ---------------------------------------------------
    pda = account("g3mismatch")
    c.add(Upload(pda, "total_mismatch"), [
        c.g3_chunk(pda, 0, b"aaa"), c.g3_chunk(pda, 1, b"bbb"),
        c.g3_code_in(on_chain_path=pda, session=pda, total=2, metadata=metadata("m.png", 9))])
    # G3 awaiting (chunks, no code-in) -----------------------------------------------------------
    pda = account("g3awaiting")
    c.add(Upload(pda, "awaiting_finalize"), [c.g3_create(pda), c.g3_chunk(pda, 0, b"abc"), c.g3_chunk(pda, 1, b"def")])
    # G1 linked list (pieces land out of order) --------------------------------------------------
    pieces = split(file_bytes("g1linked", 90), 30)
    sigs = [sig(f"g1linked{i}") for i in range(3)]
    befores = ["Genesis", sigs[0], sigs[1]]
    rows = [c.linked_piece("g1", sigs[i], befores[i], pieces[i]) for i in (1, 0, 2)]
    c.add(Upload(sigs[2], "complete", joined=b"".join(pieces)), rows + [c.g1_index(sigs[2])])
    # G3 linked list with a piece that never landed ----------------------------------------------
    pieces = split(b"A" * 90, 30)
    sigs = [sig(f"g3broken{i}") for i in range(3)]
    c.add(Upload(sigs[2], "missing_chunks"), [
        c.linked_piece("g3", sigs[0], "Genesis", pieces[0]), c.linked_piece("g3", sigs[2], sigs[1], pieces[2]),
        c.g3_code_in(on_chain_path=sigs[2], metadata=metadata("broken.png", 3))])
    # G3 inline upload ---------------------------------------------------------------------------
    original = b'{"hello": "world"}'
    data = base64.b64encode(original).decode()
    code_in = sig("g3inline")
    c.add(Upload(code_in, "complete", joined=data.encode(), file_bytes=data.encode(), decode_rule="text"), [
        c.g3_code_in(on_chain_path="", metadata=metadata("inline.json", 1, "application/json", data=data),
                     payload=data.encode(), signature=code_in)])
    return c


def scan_range_rows() -> list[list[Any]]:
    import datetime as dt

    now = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    spans = [("car", 400_000_000, 400_000_049, "done"), ("rpc-blocks", 400_000_040, 400_000_080, "done"),
             ("car", 400_000_100, 400_000_150, "done"), ("car", 400_000_200, 400_000_260, "partial")]
    programs = ["P1", "P2"]   # one scan scope: every row scanned for the same programs, every account
    return [[source, first, last, "scan-run", status, 10, 1, 0, [], None, "", now, programs, [], ""]
            for source, first, last, status in spans]


def query_dicts(client, sql: str, parameters: dict | None = None, **formats) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters, column_formats=formats or None)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]
