"""IQ Labs instruction decoders and encoders, one module per program generation.

Public API (stable; other layers import only these names):
    decode(program_id, accounts, data, *, mode="auto", session_pdas=()) -> IQRecord | NotDecodable
    encode(record) -> bytes            # instruction data, the inverse of decode
See records.py for the record types.
"""
from .records import IQRecord, NotDecodable  # noqa: F401
