"""Transaction status metadata as stored in Old Faithful CARs.

A Transaction node's metadata is zstd-compressed and holds either a protobuf
`TransactionStatusMeta` (solana storage proto, `confirmed_block.proto`) or, for epochs below 157,
the legacy bincode `StoredTransactionStatusMeta`. Empty metadata occurs in early slots and means
the status is unknown (TX_UNKNOWN), never "success".

The protobuf is read and written by hand: only a handful of fields matter here and a hand decoder
avoids a generated-code dependency. Transaction errors are bincode `TransactionError` values inside
either form; they are turned into the JSON text the RPC shows (`{"InstructionError":[0,{"Custom":1}]}`).
"""
from __future__ import annotations

import json
import struct
import threading

import zstandard
from solders.pubkey import Pubkey

from iq_etl.solana.model import TX_FAILED, TX_OK, TX_UNKNOWN, InnerInstruction, InnerInstructions, TxMeta

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Old Faithful stores legacy bincode metadata for epochs below this one (Jetstreamer tries bincode first there).
FIRST_PROTOBUF_EPOCH = 157
_MAX_META_BYTES = 64 << 20  # decompressed size cap: a bigger one is corrupt, not metadata

# zstandard's (de)compressor objects are not thread-safe: one per thread (ingest uses a thread pool).
_zstd_local = threading.local()


def _dctx() -> zstandard.ZstdDecompressor:
    dctx = getattr(_zstd_local, "dctx", None)
    if dctx is None:
        dctx = _zstd_local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _cctx() -> zstandard.ZstdCompressor:
    cctx = getattr(_zstd_local, "cctx", None)
    if cctx is None:
        cctx = _zstd_local.cctx = zstandard.ZstdCompressor(level=3)
    return cctx


class MetaError(ValueError):
    """Metadata bytes could not be decoded (the CAR reader adds file, offset and slot)."""


# --- TransactionError (bincode) <-> RPC JSON ------------------------------------------------------

# Variant order of solana's TransactionError and InstructionError enums (bincode writes the u32 index).
TRANSACTION_ERRORS = [
    "AccountInUse", "AccountLoadedTwice", "AccountNotFound", "ProgramAccountNotFound",
    "InsufficientFundsForFee", "InvalidAccountForFee", "AlreadyProcessed", "BlockhashNotFound",
    "InstructionError", "CallChainTooDeep", "MissingSignatureForFee", "InvalidAccountIndex",
    "SignatureFailure", "InvalidProgramForExecution", "SanitizeFailure", "ClusterMaintenance",
    "AccountBorrowOutstanding", "WouldExceedMaxBlockCostLimit", "UnsupportedVersion",
    "InvalidWritableAccount", "WouldExceedMaxAccountCostLimit", "WouldExceedAccountDataBlockLimit",
    "TooManyAccountLocks", "AddressLookupTableNotFound", "InvalidAddressLookupTableOwner",
    "InvalidAddressLookupTableData", "InvalidAddressLookupTableIndex", "InvalidRentPayingAccount",
    "WouldExceedMaxVoteCostLimit", "WouldExceedAccountDataTotalLimit", "DuplicateInstruction",
    "InsufficientFundsForRent", "MaxLoadedAccountsDataSizeExceeded", "InvalidLoadedAccountsDataSizeLimit",
    "ResanitizationNeeded", "ProgramExecutionTemporarilyRestricted", "UnbalancedTransaction",
    "ProgramCacheHitMaxLimit", "CommitCancelled",
]
INSTRUCTION_ERRORS = [
    "GenericError", "InvalidArgument", "InvalidInstructionData", "InvalidAccountData",
    "AccountDataTooSmall", "InsufficientFunds", "IncorrectProgramId", "MissingRequiredSignature",
    "AccountAlreadyInitialized", "UninitializedAccount", "UnbalancedInstruction", "ModifiedProgramId",
    "ExternalAccountLamportSpend", "ReadonlyLamportChange", "ReadonlyDataModified", "DuplicateAccountIndex",
    "ExecutableModified", "RentEpochModified", "NotEnoughAccountKeys", "AccountDataSizeChanged",
    "AccountNotExecutable", "AccountBorrowFailed", "AccountBorrowOutstanding", "DuplicateAccountOutOfSync",
    "Custom", "InvalidError", "ExecutableDataModified", "ExecutableLamportChange",
    "ExecutableAccountNotRentExempt", "UnsupportedProgramId", "CallDepth", "MissingAccount",
    "ReentrancyNotAllowed", "MaxSeedLengthExceeded", "InvalidSeeds", "InvalidRealloc",
    "ComputationalBudgetExceeded", "PrivilegeEscalation", "ProgramEnvironmentSetupFailure",
    "ProgramFailedToComplete", "ProgramFailedToCompile", "Immutable", "IncorrectAuthority",
    "BorshIoError", "AccountNotRentExempt", "InvalidAccountOwner", "ArithmeticOverflow",
    "UnsupportedSysvar", "IllegalOwner", "MaxAccountsDataAllocationsExceeded", "MaxAccountsExceeded",
    "MaxInstructionTraceLengthExceeded", "BuiltinProgramsMustConsumeComputeUnits",
]
_TX_ERR_INDEX = {name: i for i, name in enumerate(TRANSACTION_ERRORS)}
_IX_ERR_INDEX = {name: i for i, name in enumerate(INSTRUCTION_ERRORS)}
_TX_ERR_WITH_U8 = {"DuplicateInstruction", "InsufficientFundsForRent", "ProgramExecutionTemporarilyRestricted"}
_TX_ERR_STRUCT_FIELD = {"InsufficientFundsForRent": "account_index",
                        "ProgramExecutionTemporarilyRestricted": "account_index"}


def _decode_transaction_error(b: bytes, pos: int = 0) -> tuple[object, int]:
    """bincode TransactionError at b[pos:] -> (RPC-style JSON value, position after it)."""
    (variant,) = struct.unpack_from("<I", b, pos)
    pos += 4
    if variant >= len(TRANSACTION_ERRORS):
        raise MetaError(f"unknown TransactionError variant {variant}")
    name = TRANSACTION_ERRORS[variant]
    if name == "InstructionError":
        ix_index = b[pos]
        (ix_variant,) = struct.unpack_from("<I", b, pos + 1)
        pos += 5
        if ix_variant >= len(INSTRUCTION_ERRORS):
            raise MetaError(f"unknown InstructionError variant {ix_variant}")
        ix_name = INSTRUCTION_ERRORS[ix_variant]
        if ix_name == "Custom":
            (code,) = struct.unpack_from("<I", b, pos)
            pos += 4
            return {"InstructionError": [ix_index, {"Custom": code}]}, pos
        if ix_name == "BorshIoError":
            (n,) = struct.unpack_from("<Q", b, pos)
            text = b[pos + 8:pos + 8 + n].decode("utf-8", "replace")
            pos += 8 + n
            return {"InstructionError": [ix_index, {"BorshIoError": text}]}, pos
        return {"InstructionError": [ix_index, ix_name]}, pos
    if name in _TX_ERR_WITH_U8:
        value = b[pos]
        pos += 1
        field = _TX_ERR_STRUCT_FIELD.get(name)
        return {name: {field: value} if field else value}, pos
    return name, pos


def transaction_error_text(err_bytes: bytes) -> str:
    """Bincode TransactionError -> compact JSON text as the RPC shows it; hex when unknown."""
    try:
        value, _ = _decode_transaction_error(err_bytes, 0)
    except (MetaError, struct.error, IndexError):
        return err_bytes.hex()
    return json.dumps(value, separators=(",", ":"))


def encode_transaction_error(err: str | None) -> bytes:
    """RPC-style JSON text (or hex of raw bincode) -> bincode TransactionError.

    None encodes InstructionError(0, GenericError): the writer needs some error for a failed status."""
    if err is None:
        return struct.pack("<IBI", _TX_ERR_INDEX["InstructionError"], 0, 0)
    try:
        value = json.loads(err)
    except json.JSONDecodeError:
        try:
            return bytes.fromhex(err)
        except ValueError:
            raise ValueError(f"transaction error {err!r}: neither RPC JSON nor hex bincode") from None
    if isinstance(value, str):
        if value not in _TX_ERR_INDEX or value in _TX_ERR_WITH_U8 or value == "InstructionError":
            raise ValueError(f"transaction error {err!r}: unknown fieldless TransactionError")
        return struct.pack("<I", _TX_ERR_INDEX[value])
    if isinstance(value, dict) and len(value) == 1:
        ((name, inner),) = value.items()
        if name == "InstructionError":
            ix_index, ix_err = inner
            if isinstance(ix_err, str):
                return struct.pack("<IBI", _TX_ERR_INDEX[name], ix_index, _IX_ERR_INDEX[ix_err])
            ((ix_name, ix_value),) = ix_err.items()
            head = struct.pack("<IBI", _TX_ERR_INDEX[name], ix_index, _IX_ERR_INDEX[ix_name])
            if ix_name == "Custom":
                return head + struct.pack("<I", ix_value)
            if ix_name == "BorshIoError":
                raw = str(ix_value).encode()
                return head + struct.pack("<Q", len(raw)) + raw
        elif name in _TX_ERR_WITH_U8:
            v = inner[_TX_ERR_STRUCT_FIELD[name]] if isinstance(inner, dict) else inner
            return struct.pack("<IB", _TX_ERR_INDEX[name], v)
    raise ValueError(f"transaction error {err!r}: unsupported shape")


# --- protobuf wire helpers --------------------------------------------------------------------------

def _read_varint(b: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise MetaError("protobuf varint runs past the end")
        byte = b[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MetaError("protobuf varint too long")


def _iter_fields(b: bytes, pos: int, end: int) -> list[tuple[int, int, object]]:
    """[(field number, wire type, value)] where value is an int (varint/fixed) or bytes
    (length-delimited). One-byte keys and lengths, the usual case, skip the general varint reader."""
    out = []
    append = out.append
    while pos < end:
        key = b[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _read_varint(b, pos, end)
        field = key >> 3
        wire = key & 7
        if field == 0:
            raise MetaError("protobuf field number 0")
        if wire == 2:
            if pos < end and b[pos] < 0x80:
                n = b[pos]
                pos += 1
            else:
                n, pos = _read_varint(b, pos, end)
            if pos + n > end:
                raise MetaError(f"protobuf field {field} length {n} runs past the end")
            append((field, 2, b[pos:pos + n]))
            pos += n
        elif wire == 0:
            if pos < end and b[pos] < 0x80:
                append((field, 0, b[pos]))
                pos += 1
            else:
                value, pos = _read_varint(b, pos, end)
                append((field, 0, value))
        elif wire == 1:
            if pos + 8 > end:
                raise MetaError("protobuf fixed64 runs past the end")
            append((field, 1, int.from_bytes(b[pos:pos + 8], "little")))
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise MetaError("protobuf fixed32 runs past the end")
            append((field, 5, int.from_bytes(b[pos:pos + 4], "little")))
            pos += 4
        else:
            raise MetaError(f"protobuf wire type {wire} (field {field}) not supported")
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _b58(key: bytes) -> str:
    if len(key) != 32:
        raise MetaError(f"loaded address of {len(key)} bytes, expected 32")
    return str(Pubkey.from_bytes(key))


# --- protobuf TransactionStatusMeta -----------------------------------------------------------------

def _decode_inner_instruction(b: bytes) -> InnerInstruction:
    ix = InnerInstruction(program_id_index=0, accounts=b"", data=b"")
    for field, wire, value in _iter_fields(b, 0, len(b)):
        if field == 1 and wire == 0:
            ix.program_id_index = value
        elif field == 2 and wire == 2:
            ix.accounts = bytes(value)
        elif field == 3 and wire == 2:
            ix.data = bytes(value)
        elif field == 4 and wire == 0:
            ix.stack_height = value
    return ix


def _decode_inner_instructions(b: bytes) -> InnerInstructions:
    group = InnerInstructions(index=0, instructions=[])
    for field, wire, value in _iter_fields(b, 0, len(b)):
        if field == 1 and wire == 0:
            group.index = value
        elif field == 2 and wire == 2:
            group.instructions.append(_decode_inner_instruction(value))
    return group


def decode_protobuf_meta(b: bytes) -> TxMeta:
    meta = TxMeta(status=TX_OK)
    logs: list[str] = []
    logs_none = False
    for field, wire, value in _iter_fields(b, 0, len(b)):
        if field == 1 and wire == 2:  # TransactionError { bytes err = 1 }
            err = b""
            for f2, w2, v2 in _iter_fields(value, 0, len(value)):
                if f2 == 1 and w2 == 2:
                    err = bytes(v2)
            meta.status = TX_FAILED
            meta.err = transaction_error_text(err)
        elif field == 2 and wire == 0:
            meta.fee = value
        elif field == 5 and wire == 2:
            meta.inner_instructions.append(_decode_inner_instructions(value))
        elif field == 6 and wire == 2:
            logs.append(bytes(value).decode("utf-8", "replace"))
        elif field == 11 and wire == 0:
            logs_none = bool(value)
        elif field == 12 and wire == 2:
            meta.loaded_writable.append(_b58(value))
        elif field == 13 and wire == 2:
            meta.loaded_readonly.append(_b58(value))
        elif field == 16 and wire == 0:
            meta.compute_units = value
    meta.log_messages = None if logs_none else logs
    return meta


def loaded_keys(plain: bytes) -> list[bytes]:
    """Raw 32-byte loaded addresses (writable then readonly) of decompressed metadata; protobuf
    only (legacy bincode predates lookup tables)."""
    return [bytes(v) for f, w, v in _iter_fields(plain, 0, len(plain)) if (f == 12 or f == 13) and w == 2]


def loaded_addresses(plain: bytes) -> tuple[list[bytes], list[bytes]]:
    """(writable, readonly) raw loaded addresses of decompressed protobuf metadata, in the order the
    runtime loaded them: writable = each lookup's writable indexes, lookup after lookup; readonly alike.
    Raises MetaError when the bytes are not a protobuf or an address is not 32 bytes."""
    writable: list[bytes] = []
    readonly: list[bytes] = []
    for f, w, v in _iter_fields(plain, 0, len(plain)):
        if w == 2 and (f == 12 or f == 13):
            if len(v) != 32:
                raise MetaError(f"loaded address of {len(v)} bytes, expected 32")
            (writable if f == 12 else readonly).append(bytes(v))
    return writable, readonly


def encode_protobuf_meta(meta: TxMeta) -> bytes:
    parts: list[bytes] = []
    if meta.status == TX_FAILED:
        parts.append(_field_bytes(1, _field_bytes(1, encode_transaction_error(meta.err))))
    parts.append(_field_varint(2, meta.fee or 0))
    for group in meta.inner_instructions:
        body = [_field_varint(1, group.index)]
        for ix in group.instructions:
            ix_body = _field_varint(1, ix.program_id_index) + _field_bytes(2, bytes(ix.accounts)) \
                + _field_bytes(3, bytes(ix.data))
            if ix.stack_height is not None:
                ix_body += _field_varint(4, ix.stack_height)
            body.append(_field_bytes(2, ix_body))
        parts.append(_field_bytes(5, b"".join(body)))
    for line in meta.log_messages or ():
        parts.append(_field_bytes(6, line.encode("utf-8")))
    if meta.log_messages is None:
        parts.append(_field_varint(11, 1))
    for key in meta.loaded_writable:
        parts.append(_field_bytes(12, bytes(Pubkey.from_string(key))))
    for key in meta.loaded_readonly:
        parts.append(_field_bytes(13, bytes(Pubkey.from_string(key))))
    if meta.compute_units is not None:
        parts.append(_field_varint(16, meta.compute_units))
    return b"".join(parts)


# --- legacy bincode StoredTransactionStatusMeta -----------------------------------------------------

class _Bincode:
    __slots__ = ("b", "pos")

    def __init__(self, b: bytes):
        self.b = b
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.b)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.b):
            raise MetaError("bincode metadata ends early")
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def short_vec_len(self) -> int:
        n = shift = 0
        for _ in range(3):
            byte = self.u8()
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return n
            shift += 7
        raise MetaError("bincode short_vec length too long")

    def vec_len(self, item_size: int = 1) -> int:
        n = self.u64()
        if n * item_size > len(self.b) - self.pos:
            raise MetaError(f"bincode vector of {n} items is longer than the metadata")
        return n


def decode_bincode_meta(b: bytes) -> TxMeta:
    """Legacy StoredTransactionStatusMeta: status, fee, balances, then optional trailing fields
    (inner instructions, log messages, ...) that older writers left out entirely."""
    r = _Bincode(b)
    tag = r.u32()
    if tag == 0:
        meta = TxMeta(status=TX_OK)
    elif tag == 1:
        value, r.pos = _decode_transaction_error(b, r.pos)
        meta = TxMeta(status=TX_FAILED, err=json.dumps(value, separators=(",", ":")))
    else:
        raise MetaError(f"bincode status tag {tag}")
    meta.fee = r.u64()
    for _ in range(2):  # pre_balances, post_balances
        r.take(8 * r.vec_len(8))
    if r.at_end():
        return meta
    if r.u8():  # Option<Vec<InnerInstructions>>
        for _ in range(r.vec_len(2)):
            group = InnerInstructions(index=r.u8(), instructions=[])
            for _ in range(r.vec_len(3)):
                program_id_index = r.u8()
                accounts = r.take(r.short_vec_len())
                data = r.take(r.short_vec_len())
                group.instructions.append(InnerInstruction(program_id_index, accounts, data))
            meta.inner_instructions.append(group)
    if r.at_end():
        return meta
    if r.u8():  # Option<Vec<String>>
        meta.log_messages = [r.take(r.vec_len()).decode("utf-8", "replace") for _ in range(r.vec_len(8))]
    # Token balances, rewards, return data and compute units follow; an indexer needs none of them.
    return meta


# --- entry points -----------------------------------------------------------------------------------

def decompress(raw: bytes) -> bytes:
    if not raw.startswith(ZSTD_MAGIC):
        raise MetaError("metadata is not zstd-compressed")
    try:
        return _dctx().decompress(raw, max_output_size=_MAX_META_BYTES)
    except zstandard.ZstdError:
        # Frames without a content size in the header need the streaming API.
        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        except zstandard.ZstdError as exc:
            raise MetaError(f"zstd: {exc}") from None


def decode_meta(raw: bytes, *, epoch: int | None = None) -> TxMeta:
    """Compressed metadata of a Transaction node -> TxMeta. Empty -> status TX_UNKNOWN."""
    if not raw:
        return TxMeta(status=TX_UNKNOWN)
    plain = decompress(raw)
    if not plain:
        return TxMeta(status=TX_UNKNOWN)
    # Bincode starts with the status as a u32 (00 or 01, then zeros); a protobuf TransactionStatusMeta
    # never starts with 00/01 (field number 0 is invalid). So the first byte picks the decoder to try
    # first, whatever the epoch (Old Faithful has bincode below epoch 157, protobuf after).
    if plain[0] <= 1:
        order = (decode_bincode_meta, decode_protobuf_meta)
    else:
        order = (decode_protobuf_meta, decode_bincode_meta)
    errors = []
    for decoder in order:
        try:
            return decoder(plain)
        except (MetaError, struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            errors.append(f"{decoder.__name__}: {exc}")
    where = f" (epoch {epoch})" if epoch is not None else ""
    raise MetaError(f"metadata{where} is neither protobuf nor legacy bincode (" + "; ".join(errors) + ")")


def encode_meta(meta: TxMeta) -> bytes:
    """TxMeta -> zstd-compressed protobuf TransactionStatusMeta, as Old Faithful stores it.
    TX_UNKNOWN encodes as empty metadata (what early epochs hold)."""
    if meta.status == TX_UNKNOWN:
        return b""
    if meta.status not in (TX_OK, TX_FAILED):
        raise ValueError(f"TxMeta status {meta.status!r} is not one of ok/failed/unknown")
    return _cctx().compress(encode_protobuf_meta(meta))
