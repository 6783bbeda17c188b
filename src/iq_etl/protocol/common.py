"""Rules shared by several generations: where the session account is, the seed's base64 rule,
the method/decode_break trailer, and the `variant` tokens that let encode() reproduce the bytes."""
from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from typing import Collection, Sequence

from iq_etl.protocol import borsh as w
from iq_etl.protocol.borsh import Reader

# `IQRecord.variant` is a '+'-joined set of these tokens (None when the writer used the default layout).
V_STRING = "string"  # G2 Pinocchio chunk with a Borsh String payload (older TS SDK)
V_RAW = "raw"        # base64 rule applied but the text was not canonical base64: raw bytes kept
V_U32 = "u32"        # method and decode_break written as u32 (Python SDK)


def variant_of(*tokens: str | None) -> str | None:
    present = sorted(t for t in tokens if t)
    return "+".join(present) if present else None


def has_token(variant: str | None, token: str) -> bool:
    return variant is not None and variant != "" and token in variant.split("+")


def pick_session(accounts: Sequence[str], position: int, session_pdas: Collection[str]) -> str | None:
    """Seed rule: the first instruction account found in the configured session PDA list wins;
    otherwise the account at `position` (None when the instruction has fewer accounts)."""
    if session_pdas:
        for key in accounts:
            if key in session_pdas:
                return key
    return accounts[position] if position < len(accounts) else None


def seed_base64(text: bytes) -> tuple[bytes, bool]:
    """The seed's payload rule: standard base64 with canonical padding (Rust `BASE64_STANDARD`),
    falling back to the raw bytes. Returns (payload, decoded?)."""
    try:
        decoded = b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text, False
    # Rust's strict engine also rejects non-zero trailing bits; re-encoding checks both at once and
    # makes the rule exactly invertible for encode().
    if b64encode(decoded) != text:
        return text, False
    return decoded, True


def seed_base64_encode(payload: bytes, raw: bool, what: str) -> bytes:
    """Inverse of seed_base64 for encode(): raw payloads must not themselves look like base64."""
    if not raw:
        return b64encode(payload)
    if seed_base64(payload)[1]:
        raise ValueError(f"{what}: a raw (variant 'raw') payload that is valid base64 would decode differently")
    return payload


def read_method_trailer(r: Reader, what: str) -> tuple[int, int, bool]:
    """`method u8, decode_break u8`, tolerating the Python SDK's u32 pair (docs/protocol.md §2).

    Exactly 8 bytes left whose upper three bytes of each half are zero → the u32 layout (first byte
    of each); otherwise two u8 and any further bytes are ignored, as the Anchor deserializer does.
    """
    left = r.data[r.pos:]
    if len(left) == 8 and left[1:4] == b"\0\0\0" and left[5:8] == b"\0\0\0":
        r.pos = len(r.data)
        return left[0], left[4], True
    method = r.u8(f"{what} method")
    decode_break = r.u8(f"{what} decode_break")
    return method, decode_break, False


def write_method_trailer(method, decode_break, variant: str | None) -> bytes:
    if has_token(variant, V_U32):
        return w.u32(w.check_u8(method, "method"), "method") + w.u32(w.check_u8(decode_break, "decode_break"))
    return w.u8(method, "method") + w.u8(decode_break, "decode_break")
