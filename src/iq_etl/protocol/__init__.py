"""IQ Labs instruction decoders and encoders, one module per program generation.

Public API (stable; other layers import only these names):
    decode(program_id, accounts, data, *, mode="auto", session_pdas=()) -> IQRecord | NotDecodable
        never raises; see registry.py for how the program id and mode pick the layouts
    encode(record) -> bytes            instruction data, the inverse of decode (ValueError if impossible)
    session_account_position(record) -> int | None   where the session sits in the account list
    anchor_tag(name) -> bytes          sha256("global:" + name)[:8]
See records.py for the record types and g1/g2_pinocchio/g2_legacy/g3 for the layouts.
"""
from iq_etl.protocol.anchor import anchor_tag  # noqa: F401
from iq_etl.protocol.records import GENERATIONS, KINDS, IQRecord, NotDecodable  # noqa: F401
from iq_etl.protocol.registry import (  # noqa: F401
    G1_PROGRAM_ID,
    G2_PROGRAM_ID,
    G3_PROGRAM_ID,
    MODES,
    PRERELEASE_PROGRAM_IDS,
    decode,
    encode,
    session_account_position,
)

__all__ = ["decode", "encode", "session_account_position", "anchor_tag", "IQRecord", "NotDecodable",
           "GENERATIONS", "KINDS", "MODES", "G1_PROGRAM_ID", "G2_PROGRAM_ID", "G3_PROGRAM_ID",
           "PRERELEASE_PROGRAM_IDS"]
