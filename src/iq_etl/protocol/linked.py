"""`send_code(code String, before_tx String, method u8, decode_break u8)`: one piece of a linked-list
upload, identical in G1 (BE `idl.json`) and G3 (TS `idl/code_in.json`). The piece is the code
string's UTF-8 bytes; `before_tx` is the previous piece's signature ("Genesis" for the first).
A linked list has no session account (the list is named by its tail signature instead)."""
from __future__ import annotations

from iq_etl.protocol import borsh as w
from iq_etl.protocol.anchor import anchor_tag
from iq_etl.protocol.borsh import Reader
from iq_etl.protocol.common import V_U32, read_method_trailer, variant_of, write_method_trailer
from iq_etl.protocol.records import IQRecord

SEND_CODE_TAG = anchor_tag("send_code")


def decode_send_code(generation: str, data: bytes) -> IQRecord:
    r = Reader(data, 8)
    code = r.string("send_code code")
    before_tx = r.string("send_code before_tx")
    method, decode_break, u32_form = read_method_trailer(r, "send_code")
    return IQRecord(
        generation=generation, kind="linked_piece", instruction="send_code",
        payload=code.encode("utf-8"), before_tx=before_tx, method=method, decode_break=decode_break,
        variant=variant_of(V_U32 if u32_form else None),
    )


def encode_send_code(rec: IQRecord) -> bytes:
    if not isinstance(rec.payload, (bytes, bytearray)):
        raise ValueError("send_code: payload (the piece) is required")
    try:
        code = bytes(rec.payload).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("send_code: the piece must be UTF-8 text (it is a Borsh String)") from None
    return (SEND_CODE_TAG + w.string(code, "code") + w.string(rec.before_tx, "before_tx")
            + write_method_trailer(rec.method, rec.decode_break, rec.variant))
