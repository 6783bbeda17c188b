"""What the upload generator works with: the IQ programs, the slot timeline, the hard-case names and
the state of one upload (what was sent, where, and whether it landed)."""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from solders.instruction import AccountMeta
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from iq_etl.protocol import IQRecord

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
