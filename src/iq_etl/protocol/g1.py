"""G1 "IQ6900" (FG5n…), Anchor (BE `idl.json`; docs/protocol.md §6).

  send_code(code String, before_tx String, method u8, decode_break u8)   → linked_piece
  db_code_in(handle String, tail_tx String, type_field String, offset String) → linked_index
  db_code_in_for_free(same args)                                         → linked_index

db_code_in_for_free is not in docs/protocol.md but is in the G1 IDL with the same arguments and indexes
a list the same way, so it is decoded too. Neither instruction names a session account.
G1's db_code_in shares its tag with G3's db_code_in: only the program id tells them apart.
"""
from __future__ import annotations

from iq_etl.protocol import borsh as w
from iq_etl.protocol.anchor import anchor_tag
from iq_etl.protocol.borsh import DecodeError, Reader
from iq_etl.protocol.linked import SEND_CODE_TAG, decode_send_code, encode_send_code
from iq_etl.protocol.records import IQRecord

GENERATION = "g1"
INDEX_INSTRUCTIONS = ("db_code_in", "db_code_in_for_free")
_INDEX_TAGS = {anchor_tag(name): name for name in INDEX_INSTRUCTIONS}
# Known G1 instructions that carry no file data, so the "not decodable" reason can name them.
_OTHER = {anchor_tag(name): name for name in ("server_initialize", "user_initialize")}


def _decode_index(name: str, data: bytes) -> IQRecord:
    r = Reader(data, 8)
    handle = r.string(f"{name} handle")
    tail_tx = r.string(f"{name} tail_tx")
    type_field = r.string(f"{name} type_field")
    offset = r.string(f"{name} offset")
    return IQRecord(generation=GENERATION, kind="linked_index", instruction=name,
                    handle=handle, tail_tx=tail_tx, type_field=type_field, offset=offset)


def decode(data: bytes) -> IQRecord:
    tag = data[:8]
    if tag == SEND_CODE_TAG:
        return decode_send_code(GENERATION, data)
    name = _INDEX_TAGS.get(tag)
    if name is not None:
        return _decode_index(name, data)
    if tag in _OTHER:
        raise DecodeError(f"g1: {_OTHER[tag]} carries no file data")
    raise DecodeError(f"g1: unknown tag {tag.hex() or '(empty)'}")


def encode(rec: IQRecord) -> bytes:
    if rec.instruction == "send_code":
        return encode_send_code(rec)
    if rec.instruction in INDEX_INSTRUCTIONS:
        return (anchor_tag(rec.instruction) + w.string(rec.handle, "handle") + w.string(rec.tail_tx, "tail_tx")
                + w.string(rec.type_field, "type_field") + w.string(rec.offset, "offset"))
    raise ValueError(f"g1 has no instruction {rec.instruction!r}")
