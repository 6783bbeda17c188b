"""Bounds-checked Borsh reading and writing for instruction data.

Every read checks the remaining length first, so a decoder never slices past the end or allocates
from an attacker-chosen length: an overlong length prefix is a `DecodeError` naming the field and
the byte offset, not a MemoryError or a silent short read.
"""
from __future__ import annotations

import struct

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF


class DecodeError(Exception):
    """Instruction data does not match the layout. The message names the field and offset."""


class Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def _need(self, n: int, what: str) -> None:
        if n > len(self.data) - self.pos:
            raise DecodeError(
                f"{what}: needs {n} bytes at offset {self.pos}, only {len(self.data) - self.pos} left")

    def u8(self, what: str) -> int:
        self._need(1, what)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u32(self, what: str) -> int:
        self._need(4, what)
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self._need(8, what)
        (value,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return value

    def fixed(self, n: int, what: str) -> bytes:
        self._need(n, what)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def bytes_(self, what: str) -> bytes:
        """Borsh `bytes`/`Vec<u8>`: u32 length + bytes."""
        start = self.pos
        length = self.u32(f"{what} length")
        if length > len(self.data) - self.pos:
            raise DecodeError(f"{what}: length {length} at offset {start} exceeds the "
                              f"{len(self.data) - self.pos} bytes left")
        out = self.data[self.pos:self.pos + length]
        self.pos += length
        return out

    def string(self, what: str) -> str:
        """Borsh `String`: u32 length + UTF-8. Invalid UTF-8 is an error, as in the on-chain
        deserializer (such an instruction cannot have executed)."""
        start = self.pos
        raw = self.bytes_(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{what}: invalid UTF-8 at offset {start + 4 + exc.start}") from None

    def option_tag(self, what: str) -> bool:
        start = self.pos
        tag = self.u8(f"{what} option tag")
        if tag > 1:
            raise DecodeError(f"{what}: option tag {tag} at offset {start} is neither 0 nor 1")
        return tag == 1

    def vec_fixed(self, item_size: int, what: str) -> tuple[bytes, ...]:
        """Borsh `Vec<[u8; item_size]>`."""
        start = self.pos
        count = self.u32(f"{what} count")
        if count * item_size > len(self.data) - self.pos:
            raise DecodeError(f"{what}: {count} items of {item_size} bytes at offset {start} exceed "
                              f"the {len(self.data) - self.pos} bytes left")
        return tuple(self.fixed(item_size, what) for _ in range(count))


# --- writing -------------------------------------------------------------------------------------

def check_u8(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise ValueError(f"{what} must be an integer in 0..255, got {value!r}")
    return value


def u8(value, what: str = "u8") -> bytes:
    return bytes((check_u8(value, what),))


def u32(value, what: str = "u32") -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U32_MAX:
        raise ValueError(f"{what} must be an integer in 0..2^32-1, got {value!r}")
    return _U32.pack(value)


def u64(value, what: str = "u64") -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise ValueError(f"{what} must be an integer in 0..2^64-1, got {value!r}")
    return _U64.pack(value)


def fixed(value, size: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {value!r}")
    return bytes(value)


def bytes_(value, what: str = "bytes") -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"{what} must be bytes, got {type(value).__name__}")
    return u32(len(value), f"{what} length") + bytes(value)


def string(value, what: str = "string") -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8 (lone surrogate)") from None
    return u32(len(encoded), f"{what} length") + encoded
