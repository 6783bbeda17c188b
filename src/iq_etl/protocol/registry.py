"""Decode/encode dispatch: the program id picks the generation; the reader mode picks among the
G2 layouts when the program id does not decide (docs/protocol.md §1).

  G1 id (FG5n…)  → g1          G3 id (9KLL…) → g3          (the mode is ignored: the id decides)
  G2 id (4jB7…)  → auto/pinocchio: Pinocchio · legacy: legacy · passthrough: Pinocchio, then legacy
  pre-release ids (7dL1…, 6pWL…, 7Vk5…) in auto: G3 layouts, then Pinocchio, then legacy.
      7dL1… is the pre-release code_in program (the Python SDK's old default for both its Anchor and
      Pinocchio ids), so either family may appear; 7Vk5… is the old iqdb program and 6pWL… is
      unidentified: their records say which layout matched in `generation`.
  any other id   → auto = passthrough (every G2 layout, as the seed did with no program filter),
      except well-known non-IQ programs (System, Token, Compute Budget, Memo, ...), which auto
      refuses so that e.g. a 0x04-tagged token instruction is never read as a Pinocchio chunk.
      An explicit mode applies the G2 layouts to any program id (the operator asked for it).

decode() never raises; encode() raises ValueError for a record no bytes can represent.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Callable, Collection, Sequence

from iq_etl.protocol import g1, g2_legacy, g2_pinocchio, g3
from iq_etl.protocol.borsh import DecodeError
from iq_etl.protocol.records import IQRecord, NotDecodable

G1_PROGRAM_ID = "FG5nDUjz4S1FBs2rZrXsKsa7J34e21WF17F8nFL9uwWi"
G2_PROGRAM_ID = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3_PROGRAM_ID = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
PRERELEASE_PROGRAM_IDS = frozenset({
    "7dL1jKd4CaFHQRV2SU23XJtSCrPXaLpEbq9FteRXup8v",
    "6pWLeUDKEJ8SiC4EJPPcaugWGES3wZbSQr1u2LMj23gt",
    "7Vk5JJDxUBAaaAkpYQpWYCZNz4SVPm3mJFSxrBzTQuAX",
})
NON_IQ_PROGRAM_IDS = frozenset({
    "11111111111111111111111111111111",               # System
    "ComputeBudget111111111111111111111111111111",    # Compute Budget
    "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",    # SPL Token
    "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb",    # Token-2022
    "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL",   # Associated Token Account
    "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",    # Memo v2
    "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo",    # Memo v1
    "Vote111111111111111111111111111111111111111",    # Vote
    "Stake11111111111111111111111111111111111111",    # Stake
    "AddressLookupTab1e1111111111111111111111111",    # Address Lookup Table
    "BPFLoaderUpgradeab1e11111111111111111111111",    # BPF upgradeable loader
    "Ed25519SigVerify111111111111111111111111111",
    "KeccakSecp256k11111111111111111111111111111",
})
MODES = ("auto", "pinocchio", "legacy", "passthrough")


def _pinocchio(program_id, accounts, data, session_pdas):
    return g2_pinocchio.decode(data, accounts, session_pdas)


def _legacy(program_id, accounts, data, session_pdas):
    return g2_legacy.decode(data, accounts, session_pdas)


def _g3(program_id, accounts, data, session_pdas):
    return g3.decode(data, program_id, accounts, session_pdas)


def _g1(program_id, accounts, data, session_pdas):
    return g1.decode(data)


Layout = Callable[[str, Sequence[str], bytes, Collection[str]], IQRecord]
_G2_BY_MODE: dict[str, tuple[Layout, ...]] = {
    "pinocchio": (_pinocchio,),
    "legacy": (_legacy,),
    "passthrough": (_pinocchio, _legacy),
}
_BY_PROGRAM: dict[str, tuple[Layout, ...]] = {
    G1_PROGRAM_ID: (_g1,),
    G3_PROGRAM_ID: (_g3,),
    G2_PROGRAM_ID: (_pinocchio,),
}
for _pid in PRERELEASE_PROGRAM_IDS:
    _BY_PROGRAM[_pid] = (_g3, _pinocchio, _legacy)


def layouts_for(program_id: str, mode: str) -> tuple[Layout, ...] | str:
    """The layouts to try in order, or the reason none applies."""
    if program_id in (G1_PROGRAM_ID, G3_PROGRAM_ID):
        return _BY_PROGRAM[program_id]
    if mode == "auto":
        if program_id in NON_IQ_PROGRAM_IDS:
            return f"program {program_id} is not an IQ program"
        return _BY_PROGRAM.get(program_id, _G2_BY_MODE["passthrough"])
    layouts = _G2_BY_MODE.get(mode)
    if layouts is None:
        return f"unknown reader mode {mode!r} (expected one of {', '.join(MODES)})"
    return layouts


def decode(program_id: str, accounts: Sequence[str], data: bytes, *, mode: str = "auto",
           session_pdas: Collection[str] = ()) -> IQRecord | NotDecodable:
    """Decode one instruction of an IQ program. Never raises: a NotDecodable carries the reason."""
    try:
        data = bytes(data)
        layouts = layouts_for(program_id, mode)
        if isinstance(layouts, str):
            return NotDecodable(layouts)
        reasons = []
        for layout in layouts:
            try:
                return layout(program_id, accounts, data, session_pdas)
            except DecodeError as exc:
                reasons.append(str(exc))
        return NotDecodable("; ".join(reasons))
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop an ingest; keep it visible
        return NotDecodable(f"decoder error {type(exc).__name__}: {exc}")


_ENCODERS = {"g1": g1.encode, "g2_pinocchio": g2_pinocchio.encode, "g2_legacy": g2_legacy.encode, "g3": g3.encode}
_DATA_DECODERS = {
    "g1": lambda data: g1.decode(data),
    "g2_pinocchio": lambda data: g2_pinocchio.decode(data, (), ()),
    "g2_legacy": lambda data: g2_legacy.decode(data, (), ()),
    "g3": lambda data: g3.decode(data, "", (), ()),
}
# Not written from the record's meaning: the session comes from the accounts and `variant` is an
# encoding detail. metadata_raw/proof left None mean "derive" (json.dumps(metadata) / no proof).
_NOT_COMPARED = {"session_account", "variant"}
_NONE_MEANS_DEFAULT = {"metadata_raw", "proof"}


def encode(record: IQRecord) -> bytes:
    """Instruction data for `record` (the inverse of decode). Raises ValueError when the record is
    inconsistent or not representable, e.g. a chunk index beyond u32, a G3 finaliser whose
    payload/tail_tx/total_chunks disagree with its on_chain_path and metadata, or a raw G2 payload
    that is itself valid base64. Every result is checked by decoding it again."""
    encoder = _ENCODERS.get(record.generation)
    if encoder is None:
        raise ValueError(f"unknown generation {record.generation!r}")
    data = encoder(record)
    try:
        again = _DATA_DECODERS[record.generation](data)
    except DecodeError as exc:
        raise ValueError(f"{record.generation} {record.instruction}: encoded bytes do not decode: {exc}") from None
    diffs = []
    for f in fields(IQRecord):
        if f.name in _NOT_COMPARED:
            continue
        want = getattr(record, f.name)
        got = getattr(again, f.name)
        if want is None and f.name in _NONE_MEANS_DEFAULT:
            continue
        if want != got:
            diffs.append(f"{f.name}: record has {want!r:.80}, bytes decode to {got!r:.80}")
    if diffs:
        raise ValueError(f"{record.generation} {record.instruction}: not representable: " + "; ".join(diffs))
    return data


def session_account_position(record: IQRecord) -> int | None:
    """Index in the instruction's account list where the session account sits (None: no session)."""
    gen, name = record.generation, record.instruction
    if gen == "g2_pinocchio":
        return g2_pinocchio.SESSION_POSITION
    if gen == "g2_legacy":
        return g2_legacy.SESSION_POSITION
    if gen == "g3":
        if name == "create_session":
            return g3.CREATE_SESSION_POSITION
        if name == "post_chunk":
            return g3.POST_CHUNK_POSITION
        if name in g3.FINALISERS:
            return g3.FINALISER_SESSION_POSITION
    return None


