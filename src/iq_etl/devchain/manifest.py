"""The development chain's ground truth: `DIR/manifest.json` (chain facts, every upload with its
expected status and content hashes, every deliberate hard case) and `DIR/instructions.jsonl` (every
IQ instruction the generator encoded, one JSON object a line, in chain order).

Everything here is written by the generator from what it *sent*, never from iq-etl's decoding, so
tests can check reconstruction against it. The file is plain JSON with a stable key order; no wall
clock, no host names, so two builds with the same seed are byte-identical.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from iq_etl.errors import SourceError

FORMAT = "iq-etl-devchain/1"
MANIFEST_NAME = "manifest.json"
INSTRUCTIONS_NAME = "instructions.jsonl"

# Expected statuses (the vocabulary of the SQL models' `session_completeness` mart).
COMPLETE = "complete"
MISSING_CHUNKS = "missing_chunks"
CONFLICTING_CHUNKS = "conflicting_chunks"
AWAITING_FINALIZE = "awaiting_finalize"
TOTAL_MISMATCH = "total_mismatch"
STATUSES = (COMPLETE, MISSING_CHUNKS, CONFLICTING_CHUNKS, AWAITING_FINALIZE, TOTAL_MISMATCH)

# The gateway's rule for turning joined upload text into file bytes (docs/protocol.md §5, its decodeAssetData).
RULE_DATA_URL = "data_url"
RULE_BASE64 = "base64"
RULE_TEXT = "text"
_B64_ALPHABET = re.compile(rb"^[A-Za-z0-9+/=]*$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gateway_file_bytes(joined: bytes) -> tuple[bytes, str]:
    """(file bytes, rule) for the joined upload bytes, following the gateway: a `data:` URL →
    base64 after the first comma; else the first 100 characters all in the base64 alphabet and
    more than 100 characters → base64-decode; else the text itself.

    The generator only produces inputs on which every reasonable reading of the rule agrees
    (canonical base64, padded), so this is ground truth, not a second implementation to trust.
    """
    if joined.startswith(b"data:"):
        comma = joined.find(b",")
        if comma >= 0:
            return base64.b64decode(joined[comma + 1:], validate=True), RULE_DATA_URL
    if len(joined) > 100 and _B64_ALPHABET.match(joined[:100]):
        try:
            return base64.b64decode(joined, validate=True), RULE_BASE64
        except (binascii.Error, ValueError):
            pass
    return joined, RULE_TEXT


@dataclass
class Upload:
    """One upload as the generator made it. Slots and signatures count only what the chain holds;
    `signatures` lists every transaction carrying an instruction of this upload (failed ones too,
    also listed in `failed_signatures`), in chain order."""

    upload_key: str
    scenario: str
    generation: str                       # g1 | g2_pinocchio | g2_legacy | g3
    shape: str                            # session | linked_list | inline
    program_id: str
    session_account: str                  # "" for linked lists and inline uploads
    session_id: str                       # hex, "" if none
    seq: int | None                       # G3 SessionFinalize.seq / create_session seq
    expected_total: int                   # chunks (or linked-list pieces) the upload was meant to have
    declared_totals: dict[str, int]       # what the chain states: finalize / session_finalize / metadata
    chunk_count: int                      # distinct indexes that landed in successful transactions
    method: int | None
    merkle_root: str                      # hex, "" if none
    first_slot: int | None                # over successful transactions of this upload
    last_slot: int | None
    finalize_slot: int | None
    finalize_signature: str               # "" if none
    signatures: list[str]
    failed_signatures: list[str]
    joined_sha256: str                    # "" unless every index 0..total-1 landed (chosen copy: earliest)
    joined_length: int | None
    file_sha256: str                      # sha256 of the gateway rule applied to the joined bytes
    decode_rule: str                      # data_url | base64 | text ("" when not reconstructible)
    original_file: str                    # path under DIR, e.g. files/7.bin: the bytes the uploader had
    original_sha256: str
    original_length: int
    filename: str                         # RAW from the chain metadata (may be hostile), "" if none
    filetype: str
    metadata: str                         # raw metadata JSON text as sent, "" if none
    expected_status: str
    missing_indexes: list[int]
    hard_cases: list[str]
    transport: list[str] = field(default_factory=list)   # legacy, v0, lookup_table, cpi, multi_ix...
    # Broken linked lists only: the piece just before each gap is referenced by no landed piece, so
    # a reader that treats unreferenced pieces as tails sees it as a separate, unindexed list keyed
    # by its signature (awaiting_finalize); these are those keys.
    fragment_keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HardCase:
    name: str
    description: str
    upload_keys: list[str] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    format: str
    seed: int
    parameters: dict[str, Any]
    first_slot: int
    last_slot: int
    epochs: list[int]
    car_files: dict[str, str]             # epoch (as text) -> path under DIR
    slot_range_files: dict[str, str]
    block_count: int
    skipped_slots: list[int]
    block_time_first: int
    tx_counts: dict[str, int]
    program_ids: dict[str, str]           # generation -> program id (g2_legacy is made up here)
    extra_program_ids: list[str]          # ids beyond iq-etl's defaults: add them to IQ_PROGRAM_ID
    other_program_ids: dict[str, str]     # programs that wrap IQ calls (CPI) and noise programs
    lookup_tables: dict[str, list[str]]   # table address -> entries
    hard_cases: list[HardCase]
    uploads: list[Upload]

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hard_cases"] = [h.to_json() for h in self.hard_cases]
        out["uploads"] = [u.to_json() for u in self.uploads]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        values = dict(data)
        values["hard_cases"] = [HardCase(**h) for h in data["hard_cases"]]
        values["uploads"] = [Upload(**u) for u in data["uploads"]]
        return cls(**values)

    def all_program_ids(self) -> list[str]:
        """Every IQ program id the chain uses (the value for IQ_PROGRAM_ID)."""
        return list(dict.fromkeys(self.program_ids.values()))

    def upload(self, key: str) -> Upload:
        for u in self.uploads:
            if u.upload_key == key:
                return u
        raise KeyError(key)

    def hard_case(self, name: str) -> HardCase:
        for h in self.hard_cases:
            if h.name == name:
                return h
        raise KeyError(name)


def dumps(manifest: Manifest) -> str:
    return json.dumps(manifest.to_json(), indent=1, ensure_ascii=True) + "\n"


def write_manifest(out_dir: Path, manifest: Manifest) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    path.write_text(dumps(manifest), encoding="utf-8")
    return path


def read_manifest(out_dir: Path) -> Manifest:
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: no development chain manifest here (run `iq-etl devchain build`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a valid manifest: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SourceError(f"{path}: format is {data.get('format') if isinstance(data, dict) else None!r}, "
                          f"expected {FORMAT!r}")
    try:
        return Manifest.from_json(data)
    except (TypeError, KeyError) as exc:
        raise SourceError(f"{path}: malformed manifest: {exc}") from None
