"""IQ uploads for the development chain: every generation the decoders support, and the hard cases.

A scenario plays one upload the way a client would: it picks a file, splits it, signs real
transactions (legacy or v0, sometimes through a lookup table or a CPI) carrying instructions encoded
with `iq_etl.protocol.encode`, and places them in slots. The `UploadState` remembers what was sent
(index → payload copies, which transactions failed, where the finalize landed), and `finish()`
turns that into the manifest entry: expected status, missing indexes and content hashes computed
from what the generator sent, never from iq-etl's decoding.

Each catalogue scenario is one deliberate hard case; `ordinary_upload` fills the rest of --sessions
with plain uploads of every generation.
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from iq_etl.protocol import IQRecord, encode, session_account_position

from iq_etl.devchain.manifest import (AWAITING_FINALIZE, COMPLETE, CONFLICTING_CHUNKS, MISSING_CHUNKS, TOTAL_MISMATCH, HardCase,
                       Upload, gateway_file_bytes, sha256_hex)
from iq_etl.devchain.txbuild import (COMPUTE_BUDGET_PROGRAM, SYSTEM_PROGRAM, BuiltTx, Cpi, KeyRing, LookupTable, blockhash_for,
                      build_tx, instruction_error)

PACKET_DATA_SIZE = 1232          # the largest transaction Solana accepts on the wire
G3_CHUNK_CHARS = 700             # text per post_chunk / send_code piece (fits one transaction)
G2_CHUNK_BYTES = 480             # raw bytes per Pinocchio / legacy chunk (base64 on the wire)
CUSTOM_ERROR_BASE = 6000         # Anchor's first custom error code

# Hard-case names recorded in the manifest (per upload and at the top level).
HARD_CASES: dict[str, str] = {
    "chunks_out_of_order": "chunks land in a different order than their indexes",
    "chunks_across_many_slots": "an upload's chunks are spread over a wide slot span",
    "duplicate_chunk_same_content": "one index sent twice with identical content (status unaffected)",
    "duplicate_index_different_content": "one index sent twice with different content (conflicting_chunks)",
    "failed_chunk_resent": "a chunk transaction failed (meta.err set) and was re-sent successfully later",
    "failed_chunk_never_resent": "a chunk's only transaction failed: the index is missing",
    "chunk_never_lands": "a chunk was never sent at all: the index is missing",
    "finalize_before_chunks": "the finalize lands in an earlier slot than some chunks",
    "far_slot_window": "an upload lives >= far_gap slots after every other upload's window",
    "chunk_far_from_siblings": "one chunk lands >= far_gap slots after the rest of its upload",
    "session_account_reused": "a G2 session account carries two uploads with different session ids",
    "never_finalized": "chunks without any finalize (awaiting_finalize)",
    "total_mismatch": "SessionFinalize.total_chunks and metadata.total_chunks disagree",
    "skipped_slot_inside_upload": "a skipped slot (no block) lies inside the upload's slot span",
    "meta_spans_dataframes": "transaction metadata large enough to span several CAR DataFrames",
    "cpi_inner_instruction": "the IQ instruction runs as an inner instruction (CPI) of another program",
    "iq_program_in_lookup_table": "the IQ program id is only in a lookup table: visible through meta only",
    "session_in_lookup_table": "the session account is loaded from an address lookup table",
    "two_iq_instructions_one_tx": "one transaction carries two IQ instructions",
    "multi_instruction_tx": "IQ instruction preceded by compute-budget instructions",
    "hostile_filename": "metadata filename with path traversal, separators or control characters",
    "data_url_payload": "joined text is a data: URL (gateway decodes base64 after the comma)",
    "plain_text_payload": "joined text is plain UTF-8, not base64 (gateway keeps the text)",
    "short_base64_not_decoded": "base64 text of 100 characters or fewer: the gateway keeps it as text",
    "linked_pieces_land_out_of_order": "linked-list pieces land in a different order than the chain",
    "linked_list_broken": "a linked-list piece never lands: the walk from the tail breaks",
    "finalize_bundle_without_session_id": "G2-legacy finalize_bundle (no session id; the account decides)",
    "g2_method_raw": "Pinocchio chunks with method 1: payload bytes taken raw, no base64 step",
    "pinocchio_string_variant": "Pinocchio chunks in the older Borsh-String form",
    "python_sdk_u32_trailer": "G3 post_chunk with method/decode_break written as u32 (Python SDK)",
    "free_finaliser": "user_inventory_code_in_for_free with a proof vector",
}


@dataclass(frozen=True)
class Programs:
    g1: Pubkey
    g2: Pubkey
    g2_legacy: Pubkey             # made up: the real id is not public
    g3: Pubkey
    router: Pubkey                # a made-up program that invokes IQ programs by CPI

    def by_generation(self) -> dict[str, str]:
        return {"g1": str(self.g1), "g2_pinocchio": str(self.g2), "g2_legacy": str(self.g2_legacy),
                "g3": str(self.g3)}


class Timeline:
    """Which slots produce blocks, and the windows uploads are placed in.

    Uploads live in [main_first, main_last]; the far window [far_first, last] sits `far_gap` slots
    after it (for the far_slot_window case)."""

    def __init__(self, first_slot: int, slots: int, skipped: set[int], far_len: int, far_gap: int):
        self.first = first_slot
        self.last = first_slot + slots - 1
        self.skipped = skipped
        self.live = [s for s in range(self.first, self.last + 1) if s not in skipped]
        self.far_gap = far_gap
        self.far_first = self.last - far_len + 1
        self.main_first = self.first + 1
        self.main_last = self.far_first - far_gap - 1

    def at(self, slot: int) -> int:
        """The first live slot at or after `slot` (the last live slot if none)."""
        i = bisect_left(self.live, slot)
        return self.live[min(i, len(self.live) - 1)]

    def clamp_main(self, slot: int) -> int:
        return self.at(min(max(slot, self.main_first), self.main_last))


@dataclass
class ChunkCopy:
    slot: int
    payload: bytes
    ok: bool
    signature: str


@dataclass
class UploadState:
    number: int
    scenario: str
    generation: str
    shape: str                      # session | linked_list | inline
    program: Pubkey
    user: Keypair
    original: bytes                 # the file as the uploader had it
    joined_intended: bytes          # what the chunks join to when everything lands once
    expected_total: int
    session_account: str = ""
    session_id: bytes | None = None
    seq: int | None = None
    method: int | None = None
    merkle_root: bytes | None = None
    filename: str = ""
    filetype: str = ""
    metadata_raw: str = ""
    declared_totals: dict[str, int] = field(default_factory=dict)
    copies: dict[int, list[ChunkCopy]] = field(default_factory=dict)
    txs: list[tuple[int, str, bool]] = field(default_factory=list)     # (slot, signature, ok)
    finalize: tuple[int, str] | None = None
    hard_cases: list[str] = field(default_factory=list)
    transport: set[str] = field(default_factory=set)
    rows: list[dict] = field(default_factory=list)
    upload_key: str = ""
    pieces: list[bytes] = field(default_factory=list)   # the intended chunks / pieces, by index
    case_signatures: dict[str, list[str]] = field(default_factory=dict)  # hard case -> the very transactions

    def tag(self, *names: str) -> None:
        for name in names:
            if name not in HARD_CASES:
                raise ValueError(f"unknown hard case {name!r}")
            if name not in self.hard_cases:
                self.hard_cases.append(name)

    def mark(self, name: str, signature: str) -> None:
        """Tag the upload and name the transaction that carries the case."""
        self.tag(name)
        sigs = self.case_signatures.setdefault(name, [])
        if signature not in sigs:
            sigs.append(signature)


@dataclass
class IxPart:
    """One IQ instruction to send: the record, its program and its accounts."""

    record: IQRecord
    program: Pubkey
    accounts: list[AccountMeta]
    chunk_payload: bytes | None = None    # the bytes this chunk contributes (ground truth, not decoded)
    index: int | None = None              # its position in the upload (chunk index or linked-list piece)


class UploadPlanner:
    """Holds everything the scenarios produce: transactions by slot, expected instruction rows,
    lookup tables and manifest uploads."""

    def __init__(self, seed: int, keys: KeyRing, programs: Programs, timeline: Timeline, files_dir: Path,
                 out_dir: Path):
        self.seed = seed
        self.keys = keys
        self.programs = programs
        self.timeline = timeline
        self.files_dir = files_dir
        self.out_dir = out_dir
        self.rng = random.Random(int.from_bytes(keys.bytes_for("uploads-rng")[:8], "little"))
        self.txs_by_slot: dict[int, list[BuiltTx]] = {}
        self.lookup_tables: dict[str, list[str]] = {}
        self.uploads: list[Upload] = []
        self.rows: list[dict] = []
        self._signatures: set[str] = set()
        self._g3_seq: dict[str, int] = {}
        self._number = 0
        self._tx_slot_of: dict[str, list[tuple[int, str]]] = {}
        self._case_sigs: dict[str, dict[str, list[str]]] = {}
        self._users = [keys.keypair(f"uploader/{i}") for i in range(12)]

    # -- helpers ---------------------------------------------------------------------------------
    def user(self) -> Keypair:
        return self.rng.choice(self._users)

    def next_number(self) -> int:
        n = self._number
        self._number += 1
        return n

    def next_g3_seq(self, user: Keypair) -> int:
        key = str(user.pubkey())
        seq = self._g3_seq.get(key, 0)
        self._g3_seq[key] = seq + 1
        return seq

    def blockhash(self, slot: int, salt: int = 0):
        # A recent blockhash: a block a few slots back (deterministic per slot and salt).
        return blockhash_for(self.seed, slot - 1 - (salt % 8))

    def send(self, up: UploadState, slot: int, parts: list[IxPart], *, fail: bool = False, v0: bool = False,
             cpi: bool = False, budget: bool = False, big_logs: int = 0, salt: int = 0,
             expect_signature: str | None = None) -> BuiltTx:
        """Sign one transaction carrying `parts` for upload `up` and place it in `slot`.

        fail: the first IQ instruction fails (custom program error), so the transaction is failed
        and every instruction in it is recorded with tx_ok false. v0: a v0 message whose non-signer
        accounts come from the upload's lookup table. cpi: each IQ instruction runs as an inner
        instruction of the router program. budget: compute-budget instructions first.
        """
        if slot in self.timeline.skipped:
            raise ValueError(f"slot {slot} is skipped: no block to place a transaction in")
        ixs: list[Instruction] = []
        cpis: list[Cpi] = []
        positions: list[tuple[int, int | None]] = []      # (top-level index, inner index) per part
        if budget:
            ixs.append(set_compute_unit_limit(200_000 + 1000 * (slot % 50)))
            ixs.append(set_compute_unit_price(1000 + slot % 997))
            up.transport.add("multi_ix")
        encoded = [encode(part.record) for part in parts]
        for part, data in zip(parts, encoded):
            iq_ix = Instruction(part.program, data, part.accounts)
            top = len(ixs)
            if cpi:
                wrapper_accounts = [AccountMeta(part.program, False, False)] + list(part.accounts)
                ixs.append(Instruction(self.programs.router, b"route\0\0\0" + len(data).to_bytes(4, "little"),
                                       wrapper_accounts))
                cpis.append(Cpi(parent=top, instruction=iq_ix))
                positions.append((top, 0))
            else:
                ixs.append(iq_ix)
                positions.append((top, None))
        fail_index = positions[0][0] if fail else None
        code = CUSTOM_ERROR_BASE + (slot % 13)
        logs = self._logs(parts, encoded, positions, budget, cpi, fail_index, code)
        if big_logs:
            # Event lines carry hashes and so barely compress: metadata spanning several DataFrames.
            rnd = random.Random(slot * 7919 + salt)
            logs += ["Program data: " + base64.b64encode(rnd.randbytes(180)).decode() for _ in range(big_logs)]
        tables: list[LookupTable] = []
        if v0:
            tables.append(self._table(up, parts, cpi))
            up.transport.add("lookup_table")
        built = build_tx([up.user], ixs, self.blockhash(slot, salt), lookup_tables=tables, cpis=cpis,
                         failed_at=fail_index, err=instruction_error(fail_index, code) if fail else None,
                         logs=logs, compute_units=sum(4000 + len(d) * 7 for d in encoded),
                         kind=f"iq/{up.generation}")
        if len(built.wire) > PACKET_DATA_SIZE:
            raise ValueError(f"{up.scenario}: transaction of {len(built.wire)} bytes exceeds {PACKET_DATA_SIZE}")
        if built.signature in self._signatures:
            raise ValueError(f"{up.scenario}: duplicate signature {built.signature} (same message twice)")
        if expect_signature is not None and built.signature != expect_signature:
            raise AssertionError(f"{up.scenario}: presigned {expect_signature} but sent {built.signature}")
        self._signatures.add(built.signature)
        ok = not fail
        up.txs.append((slot, built.signature, ok))
        up.transport.add(built.version)
        if cpi:
            up.transport.add("cpi")
        n_static = len(built.keys) - len(built.meta.loaded_writable) - len(built.meta.loaded_readonly)
        static = set(built.keys[:n_static])
        if big_logs:
            up.mark("meta_spans_dataframes", built.signature)
        if len(parts) > 1:
            up.mark("two_iq_instructions_one_tx", built.signature)
        if cpi:
            up.mark("cpi_inner_instruction", built.signature)
        if budget:
            up.mark("multi_instruction_tx", built.signature)
        for part, (top, inner) in zip(parts, positions):
            if cpi and str(part.program) not in static:
                up.mark("iq_program_in_lookup_table", built.signature)
            if v0 and up.session_account and up.session_account not in static and any(
                    str(a.pubkey) == up.session_account for a in part.accounts):
                up.mark("session_in_lookup_table", built.signature)
            row = {
                "signature": built.signature, "slot": slot, "tx_ok": ok, "ix_index": top, "inner_index": inner,
                "program_id": str(part.program), "accounts": [str(a.pubkey) for a in part.accounts],
                "upload_key": None, "record": part.record.to_json(),
            }
            up.rows.append(row)
            self.rows.append(row)
            if part.chunk_payload is not None:
                up.copies.setdefault(part.index, []).append(ChunkCopy(slot, part.chunk_payload, ok, built.signature))
        self.txs_by_slot.setdefault(slot, []).append(built)
        return built

    def _logs(self, parts, encoded, positions, budget, cpi, fail_index, code) -> list[str]:
        """Log lines shaped like the runtime's: invoke/consumed/success, failure stops the log."""
        logs: list[str] = []
        if budget:
            for _ in range(2):
                logs += [f"Program {COMPUTE_BUDGET_PROGRAM} invoke [1]", f"Program {COMPUTE_BUDGET_PROGRAM} success"]
        for part, data, (top, _) in zip(parts, encoded, positions):
            pid = str(part.program)
            depth = 2 if cpi else 1
            if cpi:
                logs.append(f"Program {self.programs.router} invoke [1]")
            logs.append(f"Program {pid} invoke [{depth}]")
            logs.append(f"Program log: Instruction: {_camel(part.record.instruction)}")
            logs.extend(_event_logs(part))
            units = 4000 + len(data) * 7
            logs.append(f"Program {pid} consumed {units} of 200000 compute units")
            if top == fail_index:
                logs.append(f"Program {pid} failed: custom program error: 0x{code:x}")
                if cpi:
                    logs.append(f"Program {self.programs.router} failed: custom program error: 0x{code:x}")
                break
            logs.append(f"Program {pid} success")
            if cpi:
                logs.append(f"Program {self.programs.router} success")
        return logs

    def _table(self, up: UploadState, parts: list[IxPart], cpi: bool) -> LookupTable:
        """The upload's lookup table (one per upload, extended as new accounts appear, as a client would)."""
        address = self.keys.address(f"alt/upload/{up.number}")
        entries = [Pubkey.from_string(k) for k in self.lookup_tables.get(str(address), [])]
        for part in parts:
            wanted = ([part.program] if cpi else []) + [a.pubkey for a in part.accounts if not a.is_signer]
            entries.extend(k for k in wanted if k not in entries)
        self.lookup_tables[str(address)] = [str(e) for e in entries]
        return LookupTable(address, tuple(entries))

    # -- finishing -------------------------------------------------------------------------------
    def finish(self, up: UploadState, expected_status: str, missing: list[int] | None = None) -> Upload:
        ok_slots = sorted(s for s, _, ok in up.txs if ok)
        landed = {i for i, cs in up.copies.items() if any(c.ok for c in cs)}
        conflicts = sorted(i for i, cs in up.copies.items() if len({c.payload for c in cs if c.ok}) > 1)
        for i, cs in up.copies.items():
            slots = [c.slot for c in cs if c.ok]
            if len(slots) != len(set(slots)):
                raise ValueError(f"{up.scenario}: two copies of index {i} in one slot (ambiguous choice)")
        missing_now = sorted(set(range(up.expected_total)) - landed)
        derived = _derive_status(up, missing_now, conflicts)
        if derived != expected_status:
            raise AssertionError(f"{up.scenario}: generator intended {expected_status}, sent {derived} "
                                 f"(missing {missing_now}, conflicts {conflicts})")
        if missing is not None and missing != missing_now:
            raise AssertionError(f"{up.scenario}: intended missing {missing}, sent {missing_now}")
        joined_sha = file_sha = rule = ""
        joined_len = None
        if expected_status == COMPLETE:
            chosen = []
            for i in range(up.expected_total):
                first = min((c for c in up.copies[i] if c.ok), key=lambda c: c.slot)
                chosen.append(first.payload)
            joined = b"".join(chosen)
            if joined != up.joined_intended:
                raise AssertionError(f"{up.scenario}: chosen chunks do not join to the intended bytes")
            file_bytes, rule = gateway_file_bytes(joined)
            joined_sha, file_sha, joined_len = sha256_hex(joined), sha256_hex(file_bytes), len(joined)
        fragments = []
        if up.shape == "linked_list":
            for i in missing_now:
                if i > 0 and i - 1 in landed:
                    fragments.append(min((c for c in up.copies[i - 1] if c.ok), key=lambda c: c.slot).signature)
        rel = f"files/{up.number}.bin"
        (self.files_dir / f"{up.number}.bin").write_bytes(up.original)
        for row in up.rows:
            row["upload_key"] = up.upload_key
        if ok_slots and any(s in self.timeline.skipped for s in range(ok_slots[0], ok_slots[-1] + 1)):
            up.tag("skipped_slot_inside_upload")
        upload = Upload(
            upload_key=up.upload_key, scenario=up.scenario, generation=up.generation, shape=up.shape,
            program_id=str(up.program), session_account=up.session_account,
            session_id=up.session_id.hex() if up.session_id is not None else "", seq=up.seq,
            expected_total=up.expected_total, declared_totals=dict(up.declared_totals), chunk_count=len(landed),
            method=up.method, merkle_root=up.merkle_root.hex() if up.merkle_root else "",
            first_slot=ok_slots[0] if ok_slots else None, last_slot=ok_slots[-1] if ok_slots else None,
            finalize_slot=up.finalize[0] if up.finalize else None,
            finalize_signature=up.finalize[1] if up.finalize else "",
            signatures=[sig for _, sig, _ in sorted(up.txs)],
            failed_signatures=[sig for _, sig, ok in sorted(up.txs) if not ok],
            joined_sha256=joined_sha, joined_length=joined_len, file_sha256=file_sha, decode_rule=rule,
            original_file=rel, original_sha256=sha256_hex(up.original), original_length=len(up.original),
            filename=up.filename, filetype=up.filetype, metadata=up.metadata_raw,
            expected_status=expected_status, missing_indexes=missing_now, hard_cases=list(up.hard_cases),
            transport=sorted(up.transport), fragment_keys=fragments,
        )
        self.uploads.append(upload)
        self._tx_slot_of[up.upload_key] = [(s, sig) for s, sig, _ in up.txs]
        self._case_sigs[up.upload_key] = up.case_signatures
        return upload

    def hard_case_index(self) -> list[HardCase]:
        """Top-level list: every hard case with the uploads, slots and signatures that carry it."""
        out = []
        for name, description in HARD_CASES.items():
            ups = [u for u in self.uploads if name in u.hard_cases]
            if not ups:
                continue
            # The very transactions when the case is one transaction's property, else the uploads' all.
            sigs = [s for u in ups for s in self._case_sigs[u.upload_key].get(name, u.signatures)]
            slot_of = {sig: slot for u in ups for slot, sig in self._tx_slot_of[u.upload_key]}
            out.append(HardCase(name=name, description=description, upload_keys=[u.upload_key for u in ups],
                                slots=sorted({slot_of[s] for s in sigs}), signatures=sigs))
        return out


def _derive_status(up: UploadState, missing: list[int], conflicts: list[int]) -> str:
    totals = set(up.declared_totals.values())
    if len(totals) > 1:
        return TOTAL_MISMATCH
    if conflicts:
        return CONFLICTING_CHUNKS
    if missing:
        return MISSING_CHUNKS
    if up.finalize is None and up.shape == "session":
        return AWAITING_FINALIZE
    return COMPLETE


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


_CHUNK_POSTED = bytes.fromhex("a0011d72f745e42b")


def _event_logs(part: IxPart) -> list[str]:
    """A ChunkPosted event line for G3 chunks, as Anchor's emit! writes it (`Program data: base64`)."""
    rec = part.record
    if rec.generation != "g3" or rec.kind != "chunk" or rec.session_account is None:
        return []
    digest = hashlib.sha256(rec.payload or b"").digest()
    body = (_CHUNK_POSTED + bytes(Pubkey.from_string(rec.session_account)) + rec.chunk_index.to_bytes(4, "little")
            + digest + len(rec.payload or b"").to_bytes(4, "little") + bytes((rec.method or 0, rec.decode_break or 0)))
    return ["Program data: " + base64.b64encode(body).decode()]


# --- files ---------------------------------------------------------------------------------------

def make_file(rng: random.Random, kind: str, size: int) -> tuple[bytes, str]:
    """Deterministic file bytes of `kind` and roughly `size` bytes, with the metadata filetype."""
    if kind == "png":
        head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
        return head + rng.randbytes(max(0, size - len(head))), "image/png"
    if kind == "json":
        items = []
        while sum(len(i) for i in items) < size:
            items.append(json.dumps({"id": len(items), "value": rng.randrange(10**9), "tag": rng.choice(WORDS)}))
        return ("[" + ",".join(items) + "]").encode(), "application/json"
    if kind == "text":
        words = []
        while sum(len(w) + 1 for w in words) < size:
            words.append(rng.choice(WORDS))
        return (" ".join(words) + "\n").encode(), "text/plain"
    return rng.randbytes(size), "application/octet-stream"


WORDS = ("solana", "chunk", "session", "upload", "archive", "ledger", "slot", "epoch", "file", "merkle",
         "inscription", "gateway", "reader", "frog", "lorem", "ipsum", "dolor", "amet", "über", "naïve")


def split_text(text: bytes, size: int) -> list[bytes]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [b""]


def merkle_root(pieces: list[bytes]) -> bytes:
    """A binary sha256 Merkle root over the chunk payloads (odd node paired with itself)."""
    level = [hashlib.sha256(p).digest() for p in pieces]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


def g1_offset(pieces: list[bytes]) -> str:
    """G1's `offset`: leaves base58(sha256(piece)), parent base58(sha256(left_b58 + right_b58)),
    an odd node paired with itself (BE main.provider.ts)."""
    level = [str(Pubkey(hashlib.sha256(p).digest())) for p in pieces]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [str(Pubkey(hashlib.sha256((level[i] + level[i + 1]).encode()).digest()))
                 for i in range(0, len(level), 2)]
    return level[0]


def metadata_json(filetype: str, filename: str, total: int, data: str | None = None, method: int = 0) -> str:
    """Metadata as the TS SDK writes it (JSON.stringify: compact, non-ASCII kept, controls escaped)."""
    meta: dict = {"filetype": filetype, "method": method, "filename": filename, "total_chunks": total}
    if data is not None:
        meta["data"] = data
    return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)


# --- account layouts ---------------------------------------------------------------------------

def _accounts(n: int, session_at: int | None, session: Pubkey | None, user: Pubkey,
              roles: dict[int, tuple[Pubkey, bool]]) -> list[AccountMeta]:
    """n accounts: the user signs at 0, the session (writable) at its position, others by role."""
    out = []
    for i in range(n):
        if i == 0:
            out.append(AccountMeta(user, True, True))
        elif session_at is not None and i == session_at:
            out.append(AccountMeta(session, False, True))
        else:
            key, writable = roles[i]
            out.append(AccountMeta(key, False, writable))
    return out


def check_position(rec: IQRecord, accounts: list[AccountMeta], session: Pubkey | None) -> None:
    """The decoders' session rule must find the session where this generator put it."""
    pos = session_account_position(rec)
    if session is not None and (pos is None or accounts[pos].pubkey != session):
        raise AssertionError(f"{rec.instruction}: session not at the decoder's position {pos}")


class Scenarios:
    """Upload builders per generation; the catalogue below combines them into the hard cases."""

    def __init__(self, plan: UploadPlanner):
        self.plan = plan
        self.keys = plan.keys
        self.p = plan.programs
        self.t = plan.timeline

    def slots_from(self, start: int, count: int, gap: tuple[int, int] = (1, 3)) -> list[int]:
        """`count` increasing live slots from `start`, each `gap` (1-3) slots after the previous."""
        out = []
        s = start
        for _ in range(count):
            s = self.t.at(s)
            if out and s <= out[-1]:
                raise ValueError(f"no live slot left after {out[-1]} (chain too short for this upload)")
            out.append(s)
            s += self.plan.rng.randint(*gap)
        return out

    # -- G2 Pinocchio / legacy sessions -----------------------------------------------------------
    def g2_state(self, scenario: str, legacy: bool, original: bytes, *, session: Pubkey | None = None,
                 method: int = 0, chunk_bytes: int = G2_CHUNK_BYTES) -> UploadState:
        plan = self.plan
        number = plan.next_number()
        session = session or self.keys.address(f"g2-session/{number}")
        session_id = self.keys.bytes_for("session-id", number)[:16]
        pieces = split_text(original, chunk_bytes)
        up = UploadState(number=number, scenario=scenario, generation="g2_legacy" if legacy else "g2_pinocchio",
                         shape="session", program=self.p.g2_legacy if legacy else self.p.g2, user=plan.user(),
                         original=original, joined_intended=original, expected_total=len(pieces),
                         session_account=str(session), session_id=session_id, method=method, pieces=pieces)
        up.upload_key = f"{session}:{session_id.hex()}"
        return up

    def g2_chunk(self, up: UploadState, index: int, payload: bytes | None = None, variant: str | None = None) -> IxPart:
        payload = up.pieces[index] if payload is None else payload
        legacy = up.generation == "g2_legacy"
        session = Pubkey.from_string(up.session_account)
        rec = IQRecord(generation=up.generation, kind="chunk", instruction="post_hybrid_chunk" if legacy else "chunk",
                       session_account=up.session_account, session_id=up.session_id, chunk_index=index,
                       method=up.method, payload=payload, variant=variant)
        accounts = _accounts(3, 1, session, up.user.pubkey(), {2: (SYSTEM_PROGRAM, False)})
        check_position(rec, accounts, session)
        return IxPart(rec, up.program, accounts, chunk_payload=payload, index=index)

    def g2_finalize(self, up: UploadState, with_root: bool, bundle: bool = False) -> IxPart:
        legacy = up.generation == "g2_legacy"
        if with_root:
            up.merkle_root = merkle_root(up.pieces)
        name = "finalize_bundle" if bundle else ("finalize_hybrid_session" if legacy else "finalize")
        rec = IQRecord(generation=up.generation, kind="finalize", instruction=name,
                       session_account=up.session_account, session_id=None if bundle else up.session_id,
                       total_chunks=up.expected_total, merkle_root=up.merkle_root)
        up.declared_totals["finalize"] = up.expected_total
        session = Pubkey.from_string(up.session_account)
        accounts = _accounts(2, 1, session, up.user.pubkey(), {})
        check_position(rec, accounts, session)
        return IxPart(rec, up.program, accounts)

    def send_finalize(self, up: UploadState, slot: int, part: IxPart, **kw) -> BuiltTx:
        built = self.plan.send(up, slot, [part], **kw)
        up.finalize = (slot, built.signature)
        return built

    # -- G3 sessions ------------------------------------------------------------------------------
    def g3_state(self, scenario: str, joined: bytes, original: bytes, filetype: str, filename: str) -> UploadState:
        plan = self.plan
        number = plan.next_number()
        user = plan.user()
        seq = plan.next_g3_seq(user)
        pda, _ = Pubkey.find_program_address(
            [b"bundlemY}AGBJiqLabs", bytes(self.p.g3), bytes(user.pubkey()), seq.to_bytes(8, "little")], self.p.g3)
        pieces = split_text(joined, G3_CHUNK_CHARS)
        up = UploadState(number=number, scenario=scenario, generation="g3", shape="session", program=self.p.g3,
                         user=user, original=original, joined_intended=joined, expected_total=len(pieces),
                         session_account=str(pda), seq=seq, method=0, filetype=filetype, filename=filename,
                         pieces=pieces)
        up.upload_key = str(pda)
        return up

    def g3_pdas(self, user: Pubkey) -> tuple[Pubkey, Pubkey]:
        g3 = self.p.g3
        user_state, _ = Pubkey.find_program_address([b"usermY}AGBJiqLabs", bytes(g3), bytes(user)], g3)
        inventory, _ = Pubkey.find_program_address([b"inventorymY}AGBJiqLabs", bytes(user)], g3)
        return user_state, inventory

    def g3_create(self, up: UploadState) -> IxPart:
        rec = IQRecord(generation="g3", kind="create_session", instruction="create_session",
                       session_account=up.session_account, seq=up.seq)
        session = Pubkey.from_string(up.session_account)
        user_state, _ = self.g3_pdas(up.user.pubkey())
        accounts = _accounts(4, 2, session, up.user.pubkey(), {1: (user_state, True), 3: (SYSTEM_PROGRAM, False)})
        check_position(rec, accounts, session)
        return IxPart(rec, self.p.g3, accounts)

    def g3_chunk(self, up: UploadState, index: int, text: bytes | None = None, variant: str | None = None) -> IxPart:
        text = up.pieces[index] if text is None else text
        session = Pubkey.from_string(up.session_account)
        rec = IQRecord(generation="g3", kind="chunk", instruction="post_chunk", session_account=up.session_account,
                       chunk_index=index, payload=text, method=0, decode_break=0, variant=variant)
        accounts = _accounts(2, 1, session, up.user.pubkey(), {})
        check_position(rec, accounts, session)
        return IxPart(rec, self.p.g3, accounts, chunk_payload=text, index=index)

    def g3_code_in(self, up: UploadState, finaliser: str, *, on_chain_path: str, session_total: int | None,
                   tail_tx: str | None = None, payload: bytes | None = None) -> IxPart:
        """A code-in finaliser with up.metadata_raw. Session uploads pass SessionFinalize{seq, total};
        linked lists and inline uploads pass None and leave the optional session account absent
        (filled with the program id, as the TS SDK's toAccountMeta does)."""
        user = up.user.pubkey()
        _, inventory = self.g3_pdas(user)
        has_session = session_total is not None
        session = Pubkey.from_string(up.session_account) if has_session else None
        metadata = json.loads(up.metadata_raw)
        n = up.number

        def made_up(name: str) -> tuple[Pubkey, bool]:
            return self.keys.address(f"g3/{name}/{n}"), True

        db_root_id = table_seed = proof = None
        if finaliser == "user_inventory_code_in":
            count, roles = 6, {1: (inventory, True), 2: (SYSTEM_PROGRAM, False), 3: made_up("receiver"),
                               5: made_up("iq_ata")}
        elif finaliser == "user_inventory_code_in_for_free":
            count, roles = 5, {1: (inventory, True), 2: (self.keys.address("g3/config"), False),
                               3: (SYSTEM_PROGRAM, False)}
            proof = tuple(self.keys.bytes_for("proof", n, i) for i in range(3))
        else:
            db_root_id = f"dbroot-{n % 3}".encode()
            table_seed = f"table-{n}".encode()
            roles = {1: (inventory, True), 2: (SYSTEM_PROGRAM, False), 3: made_up("receiver"), 5: made_up("iq_ata"),
                     6: made_up("db_root"), 7: made_up("table")}
            if finaliser == "db_code_in":
                count = 10
                roles.update({8: made_up("signer_ata"), 9: made_up("metadata_account")})
            elif finaliser == "db_instruction_code_in":
                count = 11
                roles.update({8: made_up("instruction_table"), 9: made_up("signer_ata"),
                              10: made_up("metadata_account")})
            else:  # wallet_connection_code_in: 7 is the connection table
                count = 8
        if not has_session:
            roles[4] = (self.p.g3, False)
        accounts = _accounts(count, 4 if has_session else None, session, user, roles)
        total = session_total if has_session else metadata.get("total_chunks")
        rec = IQRecord(generation="g3", kind="finalize", instruction=finaliser,
                       session_account=up.session_account if has_session else None,
                       total_chunks=total, seq=up.seq if has_session else None, payload=payload,
                       on_chain_path=on_chain_path, metadata=metadata, metadata_raw=up.metadata_raw, tail_tx=tail_tx,
                       db_root_id=db_root_id, table_seed=table_seed, proof=proof)
        if has_session:
            check_position(rec, accounts, session)
        return IxPart(rec, self.p.g3, accounts)

    def g3_session(self, scenario: str, start: int, *, joined: bytes, original: bytes, filetype: str,
                   filename: str, finaliser: str = "user_inventory_code_in", order: list[int] | None = None,
                   gap: tuple[int, int] = (1, 3), v0: bool = False, cpi: bool = False, meta_total: int | None = None,
                   finalize: bool = True, fail_only: frozenset[int] = frozenset(), variant: str | None = None,
                   big_logs_at: int | None = None, slots: list[int] | None = None) -> UploadState:
        """A whole G3 session upload: create_session, post_chunk in `order`, then the code-in."""
        up = self.g3_state(scenario, joined, original, filetype, filename)
        n = len(up.pieces)
        order = list(range(n)) if order is None else order
        slots = slots or self.slots_from(start, n + 2, gap)
        self.plan.send(up, slots[0], [self.g3_create(up)], v0=v0)
        for k, i in enumerate(order):
            self.plan.send(up, slots[1 + k], [self.g3_chunk(up, i, variant=variant)], fail=i in fail_only,
                           v0=v0, cpi=cpi, big_logs=150 if big_logs_at == i else 0,
                           budget=self.plan.rng.random() < 0.4)
        if finalize:
            total_meta = n if meta_total is None else meta_total
            up.metadata_raw = metadata_json(filetype, filename, total_meta)
            up.declared_totals = {"session_finalize": n, "metadata": total_meta}
            part = self.g3_code_in(up, finaliser, on_chain_path=up.session_account, session_total=n)
            self.send_finalize(up, slots[-1], part, v0=v0)
        return up

    # -- linked lists (G1 and G3 send_code) -------------------------------------------------------
    def linked(self, scenario: str, generation: str, start: int, *, joined: bytes, original: bytes,
               filetype: str, filename: str, land_order: list[int] | None = None,
               never_lands: frozenset[int] = frozenset()) -> UploadState:
        """send_code pieces from "Genesis", each naming the previous piece's signature, then the
        index: G3 code-in with on_chain_path = tail signature, or G1 db_code_in(handle, tail_tx, ...)."""
        plan = self.plan
        number = plan.next_number()
        user = plan.user()
        program = self.p.g1 if generation == "g1" else self.p.g3
        pieces = split_text(joined, G3_CHUNK_CHARS - 100)     # room for the 88-character before_tx
        n = len(pieces)
        up = UploadState(number=number, scenario=scenario, generation=generation, shape="linked_list",
                         program=program, user=user, original=original, joined_intended=joined, expected_total=n,
                         method=0, filetype=filetype, filename=filename if generation == "g3" else "", pieces=pieces)
        land_order = list(range(n)) if land_order is None else land_order
        slots = self.slots_from(start, n + 1)
        piece_slot = {i: slots[k] for k, i in enumerate(land_order)}
        if generation == "g1":
            store, _ = Pubkey.find_program_address([b"dbmY}9OV5jAGBJiq6900", bytes(user.pubkey())], program)
        else:
            store, _ = Pubkey.find_program_address([b"codemY}AGBJiqLabs", bytes(user.pubkey())], program)
        piece_accounts = _accounts(3, None, None, user.pubkey(), {1: (store, True), 2: (SYSTEM_PROGRAM, False)})
        # Each piece names the previous piece's signature. Signing is deterministic, so a piece's
        # signature is known before it is sent and pieces can land in any order (or never).
        before = "Genesis"
        parts: list[tuple[IxPart, str]] = []
        for i, piece in enumerate(pieces):
            rec = IQRecord(generation=generation, kind="linked_piece", instruction="send_code", payload=piece,
                           before_tx=before, method=0, decode_break=0)
            part = IxPart(rec, program, piece_accounts, chunk_payload=piece, index=i)
            before = _presign(plan, up.user, piece_slot[i], part)
            parts.append((part, before))
        tail = before
        for i in land_order:
            if i not in never_lands:
                plan.send(up, piece_slot[i], [parts[i][0]], expect_signature=parts[i][1])
        up.upload_key = tail
        if generation == "g1":
            rec = IQRecord(generation="g1", kind="linked_index", instruction="db_code_in",
                           handle=f"user{number}", tail_tx=tail, type_field=filetype, offset=g1_offset(pieces))
            part = IxPart(rec, program, piece_accounts)
        else:
            up.metadata_raw = metadata_json(filetype, filename, n)
            up.declared_totals = {"metadata": n}
            part = self.g3_code_in(up, "user_inventory_code_in", on_chain_path=tail, session_total=None, tail_tx=tail)
        self.send_finalize(up, slots[-1], part)
        return up

    # -- inline G3 upload -------------------------------------------------------------------------
    def inline(self, scenario: str, start: int, original: bytes, filetype: str, filename: str) -> UploadState:
        """A code-in with an empty on_chain_path: the whole file is metadata.data (base64 text)."""
        plan = self.plan
        text = b64(original)
        up = UploadState(number=plan.next_number(), scenario=scenario, generation="g3", shape="inline",
                         program=self.p.g3, user=plan.user(), original=original, joined_intended=text,
                         expected_total=1, method=0, filetype=filetype, filename=filename, pieces=[text])
        up.metadata_raw = metadata_json(filetype, filename, 1, data=text.decode())
        up.declared_totals = {"metadata": 1}
        part = self.g3_code_in(up, "user_inventory_code_in", on_chain_path="", session_total=None, payload=text)
        part.chunk_payload, part.index = text, 0
        built = self.send_finalize(up, self.t.at(start), part)
        up.upload_key = built.signature
        return up


def _presign(plan: UploadPlanner, user: Keypair, slot: int, part: IxPart) -> str:
    """The signature `plan.send` will produce for this one-instruction legacy transaction in `slot`."""
    from solders.message import Message
    from solders.transaction import VersionedTransaction

    ix = Instruction(part.program, encode(part.record), part.accounts)
    msg = Message.new_with_blockhash([ix], user.pubkey(), plan.blockhash(slot))
    return str(VersionedTransaction(msg, [user]).signatures[0])


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --- the catalogue -------------------------------------------------------------------------------

class Catalogue:
    """The deliberate hard cases: one method per scenario, each making one upload (two for
    g2_reused_account) that starts at `start` in the upload window unless it needs a special place."""

    def __init__(self, sc: Scenarios):
        self.sc = sc
        self.plan = sc.plan
        self.rng = sc.plan.rng
        self.t = sc.t

    def file(self, kind: str, size: int) -> tuple[bytes, str]:
        return make_file(self.rng, kind, size)

    # G2 Pinocchio and legacy ----------------------------------------------------------------------
    def _g2(self, scenario: str, start: int, *, order=None, gap=(1, 3), legacy=False, method=0, session=None,
            with_root=True, finalize_at: int | None = None, finalize=True, bundle=False, size=2400, variant=None,
            v0=False, cpi=False, budget=False, status=COMPLETE, missing=(), extra: Callable | None = None,
            tags=()) -> UploadState:
        sc, plan = self.sc, self.plan
        original, _ = self.file("png" if method == 0 else "bin", size)
        up = sc.g2_state(scenario, legacy, original, session=session, method=method)
        up.tag(*tags)
        n = len(up.pieces)
        order = list(range(n)) if order is None else order
        slots = sc.slots_from(start, n + 1, gap)
        if finalize_at is None:
            fin_slot, chunk_slots = slots[-1], slots[:-1]
        else:
            fin_slot, chunk_slots = slots[finalize_at], slots[:finalize_at] + slots[finalize_at + 1:]
        for k, i in enumerate(order):
            if i not in missing:
                plan.send(up, chunk_slots[k], [sc.g2_chunk(up, i, variant=variant)], v0=v0, cpi=cpi, budget=budget)
        if extra:
            extra(up, slots)
        if finalize:
            sc.send_finalize(up, fin_slot, sc.g2_finalize(up, with_root, bundle), v0=v0, cpi=cpi)
        plan.finish(up, status, list(missing))
        return up

    def g2_basic(self, start):
        self._g2("g2_basic", start, budget=True, tags=("multi_instruction_tx",))

    def g2_out_of_order(self, start):
        # Spread over a third of the upload window, starting at its beginning.
        span = max(16, (self.t.main_last - self.t.main_first) // 3)
        n = 8
        order = [5, 2, 7, 0, 3, 6, 1, 4]
        self._g2("g2_out_of_order", self.t.main_first + 1, order=order, gap=(span // n, span // n + 2),
                 size=G2_CHUNK_BYTES * n, with_root=False, tags=("chunks_out_of_order", "chunks_across_many_slots"))

    def g2_duplicate_same(self, start):
        def extra(up, slots):
            self.plan.send(up, self.t.at(slots[-2] + 1), [self.sc.g2_chunk(up, 1)], salt=3)
        self._g2("g2_duplicate_same", start, extra=extra, gap=(2, 3), tags=("duplicate_chunk_same_content",))

    def g2_conflict(self, start):
        def extra(up, slots):
            other = bytes(b ^ 0x5A for b in up.pieces[2])
            self.plan.send(up, self.t.at(slots[-2] + 1), [self.sc.g2_chunk(up, 2, other)], salt=3)
        self._g2("g2_conflict", start, extra=extra, gap=(2, 3), status=CONFLICTING_CHUNKS,
                 tags=("duplicate_index_different_content",))

    def g2_failed_resent(self, start):
        sc, plan = self.sc, self.plan
        original, _ = self.file("png", 2000)
        up = sc.g2_state("g2_failed_resent", False, original)
        up.tag("failed_chunk_resent")
        n = len(up.pieces)
        slots = sc.slots_from(start, n + 2, (2, 3))
        failed = plan.send(up, slots[0], [sc.g2_chunk(up, 1)], fail=True)
        up.mark("failed_chunk_resent", failed.signature)
        for k, i in enumerate(i for i in range(n) if i != 1):
            plan.send(up, slots[1 + k], [sc.g2_chunk(up, i)])
        plan.send(up, slots[-2], [sc.g2_chunk(up, 1)], salt=5)
        sc.send_finalize(up, slots[-1], sc.g2_finalize(up, True))
        plan.finish(up, COMPLETE)

    def g2_missing(self, start):
        self._g2("g2_missing", start, size=G2_CHUNK_BYTES * 6 - 10, missing=(3,), status=MISSING_CHUNKS,
                 tags=("chunk_never_lands",))

    def g2_finalize_first(self, start):
        self._g2("g2_finalize_first", start, finalize_at=2, gap=(2, 4), tags=("finalize_before_chunks",))

    def g2_reused_account(self, start):
        session = self.sc.keys.address("g2-session/reused")
        first = self._g2("g2_reused_account_first", start, session=session, tags=("session_account_reused",))
        after = max(s for s, _, _ in first.txs) + 2
        self._g2("g2_reused_account_second", after, session=session, tags=("session_account_reused",))

    def g2_never_finalized(self, start):
        self._g2("g2_never_finalized", start, finalize=False, status=AWAITING_FINALIZE, tags=("never_finalized",))

    def g2_method_raw(self, start):
        self._g2("g2_method_raw", start, method=1, tags=("g2_method_raw",))

    def g2_string_variant(self, start):
        self._g2("g2_string_variant", start, variant="string", tags=("pinocchio_string_variant",))

    def g2_cpi_lookup(self, start):
        self._g2("g2_cpi_lookup", start, v0=True, cpi=True, tags=("cpi_inner_instruction",))

    def g2_two_per_tx(self, start):
        sc, plan = self.sc, self.plan
        original, _ = self.file("png", 1400)
        up = sc.g2_state("g2_two_per_tx", False, original, chunk_bytes=G2_CHUNK_BYTES // 2)
        up.tag("two_iq_instructions_one_tx")
        n = len(up.pieces)
        slots = sc.slots_from(start, (n + 1) // 2 + 1)
        for k in range(0, n, 2):
            plan.send(up, slots[k // 2], [sc.g2_chunk(up, i) for i in range(k, min(k + 2, n))])
        sc.send_finalize(up, slots[-1], sc.g2_finalize(up, True))
        plan.finish(up, COMPLETE)

    def legacy_basic(self, start):
        self._g2("legacy_basic", start, legacy=True)

    def legacy_bundle(self, start):
        self._g2("legacy_bundle", start, legacy=True, bundle=True, with_root=False,
                 tags=("finalize_bundle_without_session_id",))

    # G3 sessions ----------------------------------------------------------------------------------
    def _g3(self, scenario, start, *, kind="png", size=2600, text=None, original=None, filetype=None,
            filename=None, status=COMPLETE, missing=None, tags=(), **kw) -> UploadState:
        if text is None:
            original, filetype = self.file(kind, size)
            text = b64(original)
        if filename is None:
            filename = f"{scenario}.{filetype.split('/')[-1]}"
        up = self.sc.g3_session(scenario, start, joined=text, original=original, filetype=filetype,
                                filename=filename, **kw)
        up.tag(*tags)
        self.plan.finish(up, status, missing)
        return up

    def g3_basic_lookup(self, start):
        self._g3("g3_basic_lookup", start, v0=True)

    def g3_traversal_name(self, start):
        self._g3("g3_traversal_name", start, filename="../../etc/passwd", finaliser="db_code_in",
                 tags=("hostile_filename",))

    def g3_control_name(self, start):
        self._g3("g3_control_name", start, filename="sub/dir/\x00evil\x1b[31m\n\tname\\..\\x.txt",
                 finaliser="db_instruction_code_in", tags=("hostile_filename",))

    def g3_out_of_order(self, start):
        self._g3("g3_out_of_order", start, size=2500, order=[3, 0, 4, 2, 1], gap=(1, 6),
                 tags=("chunks_out_of_order",))

    def g3_total_mismatch(self, start):
        self._g3("g3_total_mismatch", start, size=1800, meta_total=9, status=TOTAL_MISMATCH, tags=("total_mismatch",))

    def g3_far_window(self, start):
        self._g3("g3_far_window", self.t.far_first, size=2000, gap=(2, 5), tags=("far_slot_window",))

    def g3_chunk_far(self, start):
        # Siblings at the start of the upload window; the last chunk far_gap slots later.
        near = self.sc.slots_from(self.t.main_first + 3, 5, (1, 2))
        far = self.t.at(near[-2] + self.t.far_gap)
        self._g3("g3_chunk_far", start, size=1500, slots=near[:-2] + [far, self.t.at(far + 2)],
                 tags=("chunk_far_from_siblings", "chunks_across_many_slots"))

    def g3_failed_never_resent(self, start):
        self._g3("g3_failed_never_resent", start, size=2000, fail_only=frozenset({1}), status=MISSING_CHUNKS,
                 missing=[1], tags=("failed_chunk_never_resent",))

    def g3_awaiting(self, start):
        self._g3("g3_awaiting", start, size=1600, finalize=False, status=AWAITING_FINALIZE, tags=("never_finalized",))

    def g3_conflict(self, start):
        sc, plan = self.sc, self.plan
        original, filetype = self.file("png", 2000)
        up = sc.g3_state("g3_conflict", b64(original), original, filetype, "conflict.png")
        up.tag("duplicate_index_different_content", "duplicate_chunk_same_content")
        n = len(up.pieces)
        slots = sc.slots_from(start, n + 4, (2, 3))
        plan.send(up, slots[0], [sc.g3_create(up)])
        for i in range(n):
            plan.send(up, slots[1 + i], [sc.g3_chunk(up, i)])
        plan.send(up, slots[-3], [sc.g3_chunk(up, 0, up.pieces[0][::-1])], salt=2)
        plan.send(up, slots[-2], [sc.g3_chunk(up, 1)], salt=2)
        up.metadata_raw = metadata_json(filetype, "conflict.png", n)
        up.declared_totals = {"session_finalize": n, "metadata": n}
        sc.send_finalize(up, slots[-1], sc.g3_code_in(up, "user_inventory_code_in", on_chain_path=up.session_account,
                                                       session_total=n))
        plan.finish(up, CONFLICTING_CHUNKS)

    def g3_data_url(self, start):
        original, _ = self.file("png", 1400)
        self._g3("g3_data_url", start, text=b"data:image/png;base64," + b64(original), original=original,
                 filetype="image/png", tags=("data_url_payload",))

    def g3_plain_text(self, start):
        original, _ = self.file("text", 1500)
        self._g3("g3_plain_text", start, text=original, original=original, filetype="text/plain",
                 filename="notes.txt", tags=("plain_text_payload",))

    def g3_short(self, start):
        original, _ = self.file("bin", 60)   # base64 of 80 characters: the gateway keeps the text
        self._g3("g3_short", start, text=b64(original), original=original, filetype="application/octet-stream",
                 tags=("short_base64_not_decoded",))

    def g3_u32_trailer(self, start):
        self._g3("g3_u32_trailer", start, size=1500, variant="u32", finaliser="wallet_connection_code_in",
                 tags=("python_sdk_u32_trailer",))

    def g3_free(self, start):
        self._g3("g3_free", start, size=1200, finaliser="user_inventory_code_in_for_free", filename="résumé 📄.pdf",
                 tags=("free_finaliser",))

    def g3_big_meta(self, start):
        self._g3("g3_big_meta", start, size=1500, big_logs_at=1, tags=("meta_spans_dataframes",))

    def g3_cpi(self, start):
        self._g3("g3_cpi", start, size=1500, cpi=True, tags=("cpi_inner_instruction",))

    def g3_cpi_lookup(self, start):
        self._g3("g3_cpi_lookup", start, size=1500, cpi=True, v0=True, tags=("cpi_inner_instruction",))

    # linked lists and inline ----------------------------------------------------------------------
    def _linked(self, scenario, generation, start, *, size=2200, filename=None, status=COMPLETE, missing=None,
                tags=(), swaps=(), **kw):
        original, filetype = self.file("png", size)
        n = -(-len(b64(original)) // (G3_CHUNK_CHARS - 100))
        if swaps:
            order = list(range(n))
            for a, b in swaps:
                order[a], order[b] = order[b], order[a]
            kw["land_order"] = order
        up = self.sc.linked(scenario, generation, start, joined=b64(original), original=original, filetype=filetype,
                            filename=filename or f"{scenario}.png", **kw)
        up.tag(*tags)
        self.plan.finish(up, status, missing)

    def g3_linked(self, start):
        self._linked("g3_linked", "g3", start, filename="x" * 180 + "/" + "y" * 120 + ".png",
                     tags=("hostile_filename",))

    def g3_linked_out_of_order(self, start):
        self._linked("g3_linked_out_of_order", "g3", start, size=2600, swaps=((0, 2), (1, 3)),
                     tags=("linked_pieces_land_out_of_order",))

    def g1_linked(self, start):
        self._linked("g1_linked", "g1", start, size=2000, swaps=((1, 2),),
                     tags=("linked_pieces_land_out_of_order",))

    def g1_broken(self, start):
        self._linked("g1_broken", "g1", start, size=2000, never_lands=frozenset({1}), status=MISSING_CHUNKS,
                     missing=[1], tags=("linked_list_broken",))

    def g3_inline(self, start):
        original, filetype = self.file("json", 300)
        up = self.sc.inline("g3_inline", start, original, filetype, "inline.json")
        self.plan.finish(up, COMPLETE)


CATALOGUE = [
    "g2_out_of_order", "g3_chunk_far",          # these two pick their own start (window beginning)
    "g2_basic", "g2_duplicate_same", "g2_conflict", "g2_failed_resent", "g2_missing", "g2_finalize_first",
    "g2_reused_account", "g2_never_finalized", "g2_method_raw", "g2_string_variant", "g2_cpi_lookup",
    "g2_two_per_tx", "legacy_basic", "legacy_bundle",
    "g3_basic_lookup", "g3_traversal_name", "g3_control_name", "g3_out_of_order", "g3_total_mismatch",
    "g3_failed_never_resent", "g3_awaiting", "g3_conflict", "g3_data_url", "g3_plain_text", "g3_short",
    "g3_u32_trailer", "g3_free", "g3_big_meta", "g3_cpi", "g3_cpi_lookup",
    "g3_linked", "g3_linked_out_of_order", "g1_linked", "g1_broken", "g3_inline",
    "g3_far_window",                            # the far window, after everything else
]
CATALOGUE_UPLOADS = len(CATALOGUE) + 1          # g2_reused_account makes two uploads
ORDINARY_NAMES = ("photo.png", "data.json", "readme.txt", "résumé 📄.pdf", "a b c.bin", "CON", "..", "")


def ordinary_upload(sc: Scenarios, start: int, i: int) -> None:
    """A plain complete upload of some generation (mostly G3 sessions, as on mainnet since 2026-02)."""
    plan, rng = sc.plan, sc.plan.rng
    roll = rng.random()
    if roll < 0.6:
        original, filetype = make_file(rng, rng.choice(("png", "json", "text", "bin")), rng.randint(300, 6000))
        filename = rng.choice(ORDINARY_NAMES + (f"upload-{i}.{filetype.split('/')[-1]}",) * 6)
        text = b64(original)
        n = (len(text) + G3_CHUNK_CHARS - 1) // G3_CHUNK_CHARS
        order = None
        if n > 2 and rng.random() < 0.3:
            order = list(range(n))
            rng.shuffle(order)
        up = sc.g3_session(f"ordinary_g3_{i}", start, joined=text, original=original, filetype=filetype,
                           filename=filename, finaliser=rng.choice(("user_inventory_code_in", "db_code_in")),
                           order=order, v0=rng.random() < 0.3)
        if order is not None and order != sorted(order):
            up.tag("chunks_out_of_order")
        if filename in ("..", "CON"):
            up.tag("hostile_filename")
    elif roll < 0.85:
        legacy = roll >= 0.8
        original, _ = make_file(rng, rng.choice(("png", "bin")), rng.randint(200, 4000))
        up = sc.g2_state(f"ordinary_{'legacy' if legacy else 'g2'}_{i}", legacy, original)
        slots = sc.slots_from(start, len(up.pieces) + 1)
        v0 = rng.random() < 0.3 and not legacy
        for k in range(len(up.pieces)):
            plan.send(up, slots[k], [sc.g2_chunk(up, k)], v0=v0, budget=rng.random() < 0.5)
        sc.send_finalize(up, slots[-1], sc.g2_finalize(up, rng.random() < 0.5), v0=v0)
    elif roll < 0.95:
        original, filetype = make_file(rng, "png", rng.randint(300, 3000))
        generation = rng.choice(("g1", "g3"))
        up = sc.linked(f"ordinary_linked_{generation}_{i}", generation, start, joined=b64(original),
                       original=original, filetype=filetype, filename=f"linked-{i}.png")
    else:
        original, filetype = make_file(rng, "json", rng.randint(100, 400))
        up = sc.inline(f"ordinary_inline_{i}", start, original, filetype, f"inline-{i}.json")
    plan.finish(up, COMPLETE)
