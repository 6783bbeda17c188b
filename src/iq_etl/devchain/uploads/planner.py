"""`UploadPlanner`: signs the scenarios' transactions, places them in slots, records the expected
instruction rows, and turns each `UploadState` into its manifest entry."""
from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from iq_etl.devchain.manifest import (
    AWAITING_FINALIZE,
    COMPLETE,
    CONFLICTING_CHUNKS,
    MISSING_CHUNKS,
    TOTAL_MISMATCH,
    HardCase,
    Upload,
    gateway_file_bytes,
    sha256_hex,
)
from iq_etl.devchain.txbuild import (
    COMPUTE_BUDGET_PROGRAM,
    BuiltTx,
    Cpi,
    KeyRing,
    LookupTable,
    blockhash_for,
    build_tx,
    instruction_error,
)
from iq_etl.devchain.uploads.state import HARD_CASES, ChunkCopy, IxPart, Programs, Timeline, UploadState
from iq_etl.protocol import encode

PACKET_DATA_SIZE = 1232          # the largest transaction Solana accepts on the wire
CUSTOM_ERROR_BASE = 6000         # Anchor's first custom error code


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
